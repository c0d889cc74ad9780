"""``python -m flaxcnn.convert verify resnet50 --source torchvision [--kernels portable]``:
convert and prove equivalence. ``python -m flaxcnn.convert meta --write``: regenerate the pretrained-weights
table (``flaxcnn/_data/pretrained_cfgs.json``) from the installed torchvision and timm."""

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
    v.add_argument(
        "--kernels",
        choices=("auto", "portable"),
        default=None,
        help="kernel paths: auto (XLA:CPU's lowerings on CPU) or portable (what GPUs and TPUs "
        "run, on any backend); default: $FLAXCNN_KERNELS, else auto",
    )
    m = sub.add_parser("meta", help="regenerate the pretrained-weights table")
    m.add_argument("--write", action="store_true", help="write it (default: check it is current)")
    args = parser.parse_args(argv)

    if args.cmd == "meta":
        return _meta(args.write)

    ok = True
    for name in args.names:
        result = verify(
            name, source=args.source, modes=tuple(args.modes.split(",")), kernels=args.kernels
        )
        print(result, flush=True)
        ok &= result.ok
    print("all equivalent" if ok else "MISMATCH")
    return 0 if ok else 1


def _meta(write: bool) -> int:
    import json

    from .pretrained_meta import PRETRAINED_JSON, generate
    from .pretrained_meta import write as write_json

    if write:
        print(f"wrote {write_json()}")
        return 0
    current = json.loads(PRETRAINED_JSON.read_text()) == json.loads(json.dumps(generate()))
    print(f"{PRETRAINED_JSON} is " + ("current" if current else "stale: run with --write"))
    return 0 if current else 1


if __name__ == "__main__":
    sys.exit(main())
