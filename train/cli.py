"""Command line: ``flaxcnn-train [train|evaluate] --config FILE [--config.a.b=VALUE ...]``.

Configs are Python files defining ``get_config()`` (``train/configs/*.py``), or the bare
name of one shipped with the package (``digits_lenet``). Every field can be overridden with
``--config.<dotted.path>=<value>``; values are parsed as Python literals and must keep the
field's type.

On a CPU-only machine JAX would see one device; unless ``XLA_FLAGS`` already sets it, the
command simulates ``--cpu-devices`` (default 8) host devices so the data-parallel path is
the one that runs (each simulated device runs on the host's cores).

Multi-host: ``--coordinator HOST:PORT --num-processes N --process-id I`` (or the
environment that ``jax.distributed.initialize()`` detects on a cluster) starts JAX's
multi-controller runtime; on CPU the collectives go through gloo.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from .checks import ConfigError, MissingDependencyError, check_dependencies, validate_config

__all__ = ["load_config", "main"]


def load_config(path_or_name: str, overrides: list[str] = ()) -> Any:
    """``get_config()`` of a config file (or shipped config name), with overrides applied."""
    p = Path(path_or_name)
    if p.suffix == ".py":
        if not p.is_file():
            raise SystemExit(f"config file not found: {p}")
        spec = importlib.util.spec_from_file_location(f"_flaxcnn_config_{p.stem}", p)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        name = f"flaxcnn.train.configs.{path_or_name}"
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the config exists; something it imports does not
                raise
            raise SystemExit(
                f"no config {path_or_name!r}: give a .py file or a name in train/configs/"
            ) from None
    cfg = mod.get_config()
    for o in overrides:
        apply_override(cfg, o)
    return cfg


def _parse(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(cfg: Any, item: str) -> None:
    """Apply one ``a.b=value`` (a leading ``--config.`` is accepted)."""
    item = item.removeprefix("--").removeprefix("config.")
    if "=" not in item:
        raise SystemExit(f"override {item!r} must look like --config.field=value")
    key, text = item.split("=", 1)
    *parents, leaf = key.split(".")
    node = cfg
    for k in parents:
        if k not in node:
            raise SystemExit(f"unknown config field {key!r}")
        node = node[k]
    value = _parse(text)
    if leaf not in node:
        if parents[-1:] in (["model_kwargs"], ["teacher_kwargs"]):
            node[leaf] = value
            return
        raise SystemExit(
            f"unknown config field {key!r}; known here: {', '.join(sorted(node.keys()))}"
        )
    old = node[leaf]
    if isinstance(old, bool):
        if not isinstance(value, bool):
            value = str(value).lower() in ("1", "true", "yes")
    elif isinstance(old, float) and isinstance(value, int):
        value = float(value)
    elif isinstance(old, str) and not isinstance(value, str):
        value = text
    elif old is not None and not isinstance(old, type(value)) and not isinstance(value, type(old)):
        raise SystemExit(f"--config.{key}: expected {type(old).__name__}, got {text!r}")
    node[leaf] = value


def _prepare_runtime(args: argparse.Namespace) -> None:
    """Simulated CPU devices and the distributed runtime, before any backend starts."""
    flags = os.environ.get("XLA_FLAGS", "")
    if args.cpu_devices and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={args.cpu_devices}".strip()
        )
    import jax

    if args.coordinator or args.num_processes:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "train"
    if argv and argv[0] in ("train", "evaluate"):
        command = argv.pop(0)
    ap = argparse.ArgumentParser(prog="flaxcnn-train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="config .py file or shipped config name")
    ap.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint (error if none)"
    )
    ap.add_argument("--workdir", help="shorthand for --config.workdir")
    ap.add_argument("--checkpoint", help="evaluate: checkpoint directory (workdir/checkpoints)")
    ap.add_argument("--step", type=int, help="evaluate: checkpoint step (default latest)")
    ap.add_argument(
        "--cpu-devices", type=int, default=8, help="simulated CPU devices (0: leave XLA's default)"
    )
    ap.add_argument("--coordinator", help="multi-host: coordinator HOST:PORT")
    ap.add_argument("--num-processes", type=int)
    ap.add_argument("--process-id", type=int)
    args, rest = ap.parse_known_args(argv)
    bad = [r for r in rest if not r.startswith("--config.")]
    if bad:
        ap.error(f"unrecognised arguments: {' '.join(bad)}")
    # Before JAX starts: a missing dependency or a bad setting is one line, not a traceback.
    try:
        check_dependencies()
        cfg = load_config(args.config, rest)
        if args.workdir:
            cfg.workdir = args.workdir
        validate_config(cfg)
    except (MissingDependencyError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _prepare_runtime(args)
    from .checkpoint import CheckpointError
    from .loop import NonFiniteError, evaluate_checkpoint, train

    try:
        if command == "evaluate":
            res = evaluate_checkpoint(cfg, args.checkpoint, step=args.step)
            print(json.dumps(res))
        else:
            train(cfg, resume=args.resume)
    except (ConfigError, CheckpointError, NonFiniteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
