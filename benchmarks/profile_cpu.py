"""Where a CPU step's time goes, flaxcnn against PyTorch, by sampling both with ``perf``.

``benchmarks/run.py`` says how fast each framework is; this says why. It builds the same
pair as ``run.py`` (a torch model and its flaxcnn conversion, same weights and batch),
warms both up, then samples each framework's steps in turn with Linux ``perf`` (the
``cpu-clock`` software event, so it works in virtual machines without hardware counters)
and sorts every sample by the code it landed in:

* oneDNN's run-time generated kernels and XLA's compiled fusions are both anonymous
  executable memory to ``perf``. They are told apart by concentration: a matrix-multiply
  kernel is shared by every convolution of a step, so its few pages take most samples
  (``shared generated kernels``: 4 KiB pages holding at least ``--hot-page`` of the
  samples), while XLA emits one function per fusion, each run once per step
  (``other generated code``). On torch's side both rows are oneDNN's kernels, one per
  layer shape, so there the split means little.
* Eigen's packing of convolution inputs into blocks before each matrix multiply
  (``gemm_pack``, with ``TensorImagePatchOp`` for a convolution's patches), YNNPACK,
  glibc's ``malloc``, the kernel (page faults, scheduling), OpenMP, and aten's BatchNorm,
  ReLU and add kernels are named by their symbols.

    python benchmarks/profile_cpu.py --model resnet50 --batch 32 --steps 4 \\
        --out benchmarks/results/cpu_profile

Writes ``profile.csv`` and ``profile.md`` (CPU seconds per step in each category, wall and
CPU time per step, hardware, versions, ``GLIBC_TUNABLES``) into ``--out``. Needs ``perf``
and permission to sample this process (``kernel.perf_event_paranoid`` <= 2).
"""

from __future__ import annotations

import argparse
import collections
import csv
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax

_spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).with_name("run.py"))
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = bench  # its dataclasses look their module up there
_spec.loader.exec_module(bench)

# (category, test on (symbol, shared object)), first match wins. Generated code is
# classified separately (``_is_generated``).
_RULES: list[tuple[str, Callable[[str, str], bool]]] = [
    ("Eigen packing: convolution patches", lambda s, d: "gemm_pack" in s and "ImagePatch" in s),
    ("Eigen packing: matrices", lambda s, d: "gemm_pack" in s),
    ("YNNPACK", lambda s, d: s.startswith("ynn::") or "ynn" in s.split("(")[0]),
    (
        "malloc / free",
        lambda s, d: (
            "libc.so" in d
            and any(k in s for k in ("malloc", "free", "memalign", "unlink_chunk", "tcache"))
        ),
    ),
    ("kernel (page faults, scheduling)", lambda s, d: "kernel" in d),
    ("OpenMP runtime (libgomp)", lambda s, d: "gomp" in d),
    ("aten BatchNorm", lambda s, d: "batch_norm" in s),
    ("aten ReLU", lambda s, d: "threshold_kernel" in s or "clamp_min" in s),
    ("aten add", lambda s, d: "add_kernel" in s),
    ("oneDNN / MKL, compiled", lambda s, d: "dnnl" in s or "mkl" in s),
    ("XLA runtime, Eigen thread pool", lambda s, d: "jax" in d or "xla" in d.lower()),
    ("torch runtime, aten other", lambda s, d: "torch" in d or "c10" in d),
]
SHARED, OTHER_GEN = "shared generated kernels (matmul)", "other generated code"
CATEGORIES = [SHARED, OTHER_GEN] + [c for c, _ in _RULES] + ["other"]


def _is_generated(dso: str) -> bool:
    return "[JIT]" in dso or ("perf-" in dso and dso.endswith(".map")) or dso == "[unknown]"


def perf_usable() -> str | None:
    """``None`` if ``perf`` can sample this process, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed (Debian/Ubuntu: apt install linux-perf)"
    res = subprocess.run(
        ["perf", "stat", "-e", "cpu-clock", "true"], capture_output=True, text=True
    )
    if res.returncode != 0:
        return f"perf cannot sample here: {res.stderr.strip()[-300:]}"
    return None


def classify(samples: list[tuple[int, str, str]], hot_page: float) -> collections.Counter:
    """Sample counts per category from ``(address, symbol, shared object)`` samples."""
    counts: collections.Counter = collections.Counter()
    pages: collections.Counter = collections.Counter()
    for ip, sym, dso in samples:
        if _is_generated(dso):
            pages[ip >> 12] += 1
            continue
        counts[next((c for c, test in _RULES if test(sym, dso)), "other")] += 1
    hot = {p for p, n in pages.items() if n >= hot_page * len(samples)}
    counts[SHARED] = sum(n for p, n in pages.items() if p in hot)
    counts[OTHER_GEN] = sum(n for p, n in pages.items() if p not in hot)
    return counts


def _parse_script(text: str) -> list[tuple[int, str, str]]:
    """``perf script -F ip,sym,dso`` lines: ``<hex ip> <symbol...> (<dso>)``."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or "(" not in line:
            continue
        head, _, dso = line.rpartition(" (")
        ip, _, sym = head.partition(" ")
        try:
            out.append((int(ip, 16), sym.strip(), dso.rstrip(")")))
        except ValueError:
            continue
    return out


def sample(step, steps: int, freq: int, workdir: Path, tag: str):
    """Run ``step`` ``steps`` times under ``perf record`` attached to this process.
    Returns (samples, wall s per step, CPU s per step)."""
    data = workdir / f"{tag}.data"
    perf = subprocess.Popen(
        ["perf", "record", "-e", "cpu-clock", "-F", str(freq), "-p", str(os.getpid()),
         "-o", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)  # perf attaches to every thread before the first timed step
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate(timeout=120)
    if perf.returncode not in (0, -signal.SIGINT) or not data.exists():
        raise RuntimeError(f"perf record failed ({perf.returncode}): {err[-500:]}")
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "ip,sym,dso"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return _parse_script(script.stdout), wall / steps, cpu / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=None, help="input side (default: the model's)")
    p.add_argument("--task", choices=("train", "inference"), default="train")
    p.add_argument("--steps", type=int, default=4, help="sampled steps per framework")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--freq", type=int, default=499, help="samples per second per thread")
    p.add_argument("--hot-page", type=float, default=0.01)
    p.add_argument("--out", default="benchmarks/results/cpu_profile")
    args = p.parse_args(argv)

    why = perf_usable()
    if why:
        print(f"profile_cpu: {why}", file=sys.stderr)
        return 2
    if jax.default_backend() != "cpu":
        print("profile_cpu: this profiles CPU steps; JAX's backend here is "
              f"{jax.default_backend()} (set JAX_PLATFORMS=cpu)", file=sys.stderr)  # fmt: skip
        return 2
    import torch

    bargs = argparse.Namespace(precision="fp32", size=args.size, xla_options=True, fold_bn=False)
    pair = bench.Pair(args.model, bargs, torch.device("cpu"))
    xt, yt, xj, yj = pair.inputs(args.batch)
    state = [pair.flax_state()]

    def flax_step():
        if args.task == "train":
            state[0] = pair.flax_train(state[0], xj, yj)
            jax.block_until_ready(state[0])
        else:
            pair.flax_infer(pair.infer_variables, xj).block_until_ready()

    def torch_step():
        if args.task == "train":
            pair.torch_train(pair.tmodel, xt, yt)
        else:
            pair.torch_infer(pair.tmodel, xt)

    for _ in range(args.warmup):
        torch_step()
        flax_step()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, step in (("torch", torch_step), ("flaxcnn", flax_step)):
            step()  # the step before a timed one is the same framework's (run.py's rule)
            samples, wall, cpu = sample(step, args.steps, args.freq, Path(tmp), name)
            results[name] = (classify(samples, args.hot_page), len(samples), wall, cpu)
            print(f"{name}: {wall:.2f} s per step, {cpu:.2f} s CPU, {len(samples)} samples")

    env = bench._environment(torch.device("cpu"), bargs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cat in CATEGORIES:
        row = {"category": cat}
        for name, (counts, n, _, cpu) in results.items():
            row[f"{name}_cpu_s"] = cpu * counts[cat] / max(n, 1)
        if any(row[f"{k}_cpu_s"] > 0 for k in results):
            rows.append(row)
    with open(out / "profile.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    size = pair.size
    lines = [
        f"{args.model}, {args.task} step, batch {args.batch}, {size}x{size}, float32, "
        f"{args.steps} steps sampled per framework at {args.freq} Hz  ",
        f"Date: {env['date']}  ",
        f"Hardware: {env['hardware']}  ",
        f"Versions: {env['versions']}  ",
        f"GLIBC_TUNABLES: {env['GLIBC_TUNABLES']}",
        "",
        "| | torch | flaxcnn |",
        "|---|---|---|",
        "| wall s per step | "
        + " | ".join(f"{results[k][2]:.2f}" for k in ("torch", "flaxcnn"))
        + " |",
        "| CPU s per step | "
        + " | ".join(f"{results[k][3]:.2f}" for k in ("torch", "flaxcnn"))
        + " |",
    ]
    for r in rows:
        lines.append(f"| {r['category']} | {r['torch_cpu_s']:.2f} | {r['flaxcnn_cpu_s']:.2f} |")
    (out / "profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[6:]))
    print(f"wrote {out}/profile.csv, profile.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
