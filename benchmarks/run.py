"""flaxcnn against PyTorch, side by side, in one run.

For each model: the torchvision (or timm) model and its flaxcnn conversion hold the
same weights; both get the same batch, resolution, precision and device. Inference
and training steps (forward, backward, SGD-momentum update, BN statistics update)
alternate between the two frameworks after warm-up; the median of the repeats is
reported as images/second, with the ratio flaxcnn / PyTorch. Also: time to the first
training step (JAX compilation vs torch's first step) and, on GPU, peak memory.

    python benchmarks/run.py --models resnet50 --batch 32 --out benchmarks/results/cpu
    python benchmarks/run.py --models resnet50 --batch 256 --precision bf16 --compile   # GPU

Writes ``results.csv``, ``results.md`` (with hardware, versions, precision) and
``results.png`` into ``--out``. Timing never happens in the test suite; a smoke test
runs this script for one iteration so it does not rot.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import flaxcnn
from flaxcnn.convert import from_torch
from flaxcnn.convert.verify import build_torch_model, randomize_bn

DEFAULT_MODELS = [
    "resnet18",
    "resnet50",
    "vgg16",
    "densenet121",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
]


@dataclasses.dataclass
class Row:
    model: str
    source: str
    task: str  # inference | train
    torch_variant: str  # eager | compile
    batch: int
    size: int
    precision: str
    torch_ips: float
    flax_ips: float
    torch_first_s: float
    flax_first_s: float
    torch_peak_mib: float | None = None
    flax_peak_mib: float | None = None

    @property
    def ratio(self) -> float:
        return self.flax_ips / self.torch_ips


def _source_of(name: str) -> tuple[str, str]:
    spec = flaxcnn.get_model_spec(name)
    for src in ("torchvision", "timm"):
        if src in spec.sources:
            return src, spec.sources[src]
    raise SystemExit(f"{name} has no torch source to compare with")


def _sync_torch(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, sync, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def bench_model(name: str, args, device) -> list[Row]:
    import torch

    source, src_name = _source_of(name)
    torch.manual_seed(0)
    tmodel = build_torch_model(src_name, source)
    randomize_bn(tmodel)
    module, variables = from_torch(src_name, tmodel, source=source)
    bf16 = args.precision == "bf16"
    if bf16:
        module = module.clone(dtype=jnp.bfloat16)
    size, n = args.size or flaxcnn.get_model_spec(name).input_size[0], args.batch
    tmodel = tmodel.to(device).to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((n, size, size, 3), dtype=np.float32)
    y_np = rng.integers(0, 1000, n)
    xt = (
        torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy())
        .to(device)
        .to(memory_format=torch.channels_last)
    )
    yt = torch.from_numpy(y_np).to(device)
    jdev = jax.devices()[0]
    xj, yj = jax.device_put(x_np, jdev), jax.device_put(y_np, jdev)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    # ---- flax steps
    @jax.jit
    def flax_infer(v, x):
        return module.apply(v, x)

    tx = optax.sgd(0.01, momentum=0.9)

    def loss_fn(params, batch_stats, x, y):
        logits, state = module.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean()
        return loss, state["batch_stats"]

    def flax_train(state, x, y):
        params, batch_stats, opt_state = state
        (_, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, x, y
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state

    flax_train = jax.jit(flax_train, donate_argnums=0)
    fstate = [jax.device_put(variables["params"]), jax.device_put(variables.get("batch_stats", {}))]
    fstate.append(tx.init(fstate[0]))
    fstate = tuple(fstate)

    # ---- torch steps
    variants = [("eager", tmodel)]
    if args.compile:
        variants.append(("compile", torch.compile(tmodel)))
    opt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)

    def jsync():
        jax.block_until_ready(fstate)

    rows = []
    for variant, tm in variants:
        # inference
        def t_infer(tm=tm):
            with torch.inference_mode(), autocast:
                tm.eval()(xt)

        def f_infer():
            flax_infer(variables, xj).block_until_ready()

        t0 = time.perf_counter()
        t_infer()
        _sync_torch(device)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        f_infer()
        f_first = time.perf_counter() - t0
        ti, fi = _alternate(t_infer, f_infer, lambda: _sync_torch(device), args)
        rows.append(
            Row(
                name,
                source,
                "inference",
                variant,
                n,
                size,
                args.precision,
                n / ti,
                n / fi,
                t_first,
                f_first,
            )
        )

        # training
        def t_train(tm=tm):
            tm.train()
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(tm(xt).float(), yt)
            loss.backward()
            opt.step()

        def f_train():
            nonlocal fstate
            fstate = flax_train(fstate, xj, yj)
            jsync()

        t0 = time.perf_counter()
        t_train()
        _sync_torch(device)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        f_train()
        f_first = time.perf_counter() - t0
        tt, ft = _alternate(t_train, f_train, lambda: _sync_torch(device), args)
        row = Row(
            name,
            source,
            "train",
            variant,
            n,
            size,
            args.precision,
            n / tt,
            n / ft,
            t_first,
            f_first,
        )
        if device.type == "cuda":
            row.torch_peak_mib = torch.cuda.max_memory_allocated() / 2**20
            stats = jdev.memory_stats() or {}
            row.flax_peak_mib = stats.get("peak_bytes_in_use", float("nan")) / 2**20
        rows.append(row)
    return rows


def _alternate(torch_fn, flax_fn, sync, args) -> tuple[float, float]:
    """Median seconds per call, the two frameworks alternating after warm-up."""
    for _ in range(args.warmup):
        torch_fn()
        sync()
        flax_fn()
    tt, ft = [], []
    for _ in range(args.repeats):
        tt += _time(torch_fn, sync, 1)
        ft += _time(flax_fn, lambda: None, 1)
    return statistics.median(tt), statistics.median(ft)


def _environment(device) -> dict[str, str]:
    import torch

    hw = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            hw = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        hw = torch.cuda.get_device_name()
    return {
        "hardware": f"{hw}; {os.cpu_count()} CPU cores; jax devices: {jax.devices()[0].device_kind}",
        "versions": f"jax {jax.__version__}, flax {__import__('flax').__version__}, torch {torch.__version__}, "
        f"python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }


def write_outputs(rows: list[Row], env: dict[str, str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fields = [f.name for f in dataclasses.fields(Row)] + ["ratio"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in rows:
            w.writerow([getattr(r, k) for k in fields])
    lines = [
        f"Date: {env['date']}  ",
        f"Hardware: {env['hardware']}  ",
        f"Versions: {env['versions']}",
        "",
        "| model | task | torch | batch | size | precision | torch img/s | flaxcnn img/s | ratio | first step torch / flax (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.task} | {r.torch_variant} | {r.batch} | {r.size} | {r.precision} | "
            f"{r.torch_ips:.1f} | {r.flax_ips:.1f} | **{r.ratio:.2f}x** | {r.torch_first_s:.1f} / {r.flax_first_s:.1f} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.model}\n{r.task} ({r.torch_variant})" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4))
    ax.bar(
        range(len(rows)),
        [r.ratio for r in rows],
        color=["#4c72b0" if r.ratio >= 1 else "#dd8452" for r in rows],
    )
    ax.axhline(1.0, color="k", lw=1, ls="--")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("throughput ratio flaxcnn / PyTorch")
    ax.set_title(
        f"flaxcnn vs PyTorch ({rows[0].precision if rows else ''}), {env['hardware'].split(';')[0]}"
    )
    for i, r in enumerate(rows):
        ax.text(i, r.ratio, f"{r.ratio:.2f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=None, help="input side (default: the model's)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: all cores)"
    )
    p.add_argument("--out", default="benchmarks/results/latest")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
    )
    missing = [m for m in args.models if m not in flaxcnn.list_models()]
    if missing:
        print(f"skipping models not (yet) in the registry: {missing}", file=sys.stderr)
    rows = []
    for name in (m for m in args.models if m not in missing):
        for r in bench_model(name, args, device):
            print(
                f"{r.model:20s} {r.task:9s} {r.torch_variant:7s} torch {r.torch_ips:9.1f} img/s  flax {r.flax_ips:9.1f} img/s  ratio {r.ratio:.2f}",
                flush=True,
            )
            rows.append(r)
    write_outputs(rows, _environment(device), Path(args.out))
    print(f"wrote {args.out}/results.csv, results.md, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
