"""``python -m flaxcnn.convert verify resnet50 --source torchvision``: convert and prove equivalence."""

from __future__ import annotations

import argparse
import sys

from .verify import verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flaxcnn.convert", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="convert a random-init torch model and compare outputs")
    v.add_argument("names", nargs="+", help="source model names (resnet50, resnext50_32x4d, ...)")
    v.add_argument("--source", choices=("torchvision", "timm"), default="torchvision")
    v.add_argument("--modes", default="eval,train", help="comma-separated: eval,train")
    args = parser.parse_args(argv)

    ok = True
    for name in args.names:
        result = verify(name, source=args.source, modes=tuple(args.modes.split(",")))
        print(result, flush=True)
        ok &= result.ok
    print("all equivalent" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
