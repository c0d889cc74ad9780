"""``python -m flaxcnn.convert verify resnet50 --source torchvision [--kernels portable]``:
convert and prove equivalence; ``--grad`` proves the training step instead (float64 gradients
and an SGD step against torch's), ``all`` names every (source, model) pair.
``python -m flaxcnn.convert meta --write``: regenerate the pretrained-weights table
(``flaxcnn/_data/pretrained_cfgs.json``) from the installed torchvision and timm."""

from __future__ import annotations

import argparse
import sys
import time

from .._registry import SOURCES, find_by_source, get_model_spec, list_models
from .verify import verify

PROG = "python -m flaxcnn.convert"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="convert a random-init torch model and compare outputs")
    v.add_argument(
        "names",
        nargs="+",
        help="source model names (resnet50, resnext50_32x4d, ...), or 'all' for every pair",
    )
    v.add_argument(
        "--source",
        choices=SOURCES,
        default=None,
        help="library the names are from (default torchvision; with 'all', both)",
    )
    v.add_argument(
        "--modes",
        default=None,
        help="comma-separated forward checks: eval,train (default both; none with --grad)",
    )
    v.add_argument(
        "--grad",
        action="store_true",
        help="prove the training step: float64 gradients of every parameter and an SGD step "
        "against torch's, within 1e-9 relative (add --modes eval,train for the forward checks)",
    )
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
    try:
        pairs = _pairs(args.names, args.source, args.grad)
        modes = _modes(args.modes, args.grad)
    except ValueError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2

    ok = True
    for source, name in pairs:
        start = time.perf_counter()
        try:
            result = verify(
                name,
                source=source,
                modes=modes,
                kernels=args.kernels,
                grad=args.grad,
                export=not args.grad or bool(args.modes),
            )
        except Exception as e:  # one pair's failure must not end an `all` run unreported
            print(f"{source}:{name}: ERROR {type(e).__name__}: {_one_line(e)}", flush=True)
            ok = False
            continue
        print(f"{result}\n  ({time.perf_counter() - start:.1f} s)", flush=True)
        ok &= result.ok
    print("all equivalent" if ok else "MISMATCH")
    return 0 if ok else 1


def _pairs(names: list[str], source: str | None, grad: bool = False) -> list[tuple[str, str]]:
    """``(source, source name)`` to verify; unknown names fail before anything runs, with
    the close names the registry suggests. ``all`` with ``grad`` leaves out CLIP, which the
    gradient check does not cover."""
    if names == ["all"]:
        return [
            (s, n)
            for model in list_models()
            if not (grad and get_model_spec(model).task == "clip")
            for s, n in get_model_spec(model).sources.items()
            if source in (None, s)
        ]
    source = source or "torchvision"
    for name in names:
        find_by_source(source, name)  # raises the one-line error with suggestions
    return [(source, n) for n in names]


def _modes(modes: str | None, grad: bool) -> tuple[str, ...]:
    if modes is None:
        return () if grad else ("eval", "train")
    chosen = tuple(m for m in modes.split(",") if m)
    bad = sorted(set(chosen) - {"eval", "train"})
    if bad:
        raise ValueError(f"--modes: unknown mode(s) {bad}; use eval, train or both")
    return chosen


def _one_line(e: BaseException) -> str:
    """An error in one line: a conversion report's summary, else the message's first line."""
    report = getattr(e, "report", None)
    if report is not None and not report.ok:
        return f"{str(e).splitlines()[0].rstrip(':')}: {report.one_line()}"
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


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
