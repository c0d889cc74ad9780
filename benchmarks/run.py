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


class Pair:
    """A torch model and its flaxcnn conversion holding the same weights, with the
    inference and training steps of both (forward, backward, SGD-momentum update, BN
    statistics update), on ``device`` at ``args.precision``."""

    def __init__(self, name: str, args, device):
        import torch

        self.name, self.device = name, device
        self.source, src_name = _source_of(name)
        torch.manual_seed(0)
        tmodel = build_torch_model(src_name, self.source)
        randomize_bn(tmodel)
        module, self.variables = from_torch(src_name, tmodel, source=self.source)
        self.bf16 = args.precision == "bf16"
        self.module = module.clone(dtype=jnp.bfloat16) if self.bf16 else module
        self.size = args.size or flaxcnn.get_model_spec(name).input_size[0]
        self.tmodel = tmodel.to(device).to(memory_format=torch.channels_last)
        if device.type == "cuda":
            # cuDNN picks each convolution's algorithm by timing them, as torchvision's and
            # timm's training scripts have it do; XLA autotunes its convolutions too.
            torch.backends.cudnn.benchmark = True
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)
        self.opt = torch.optim.SGD(self.tmodel.parameters(), lr=0.01, momentum=0.9)
        self.jdev = jax.devices()[0]
        self.tx = optax.sgd(0.01, momentum=0.9)
        opts = flaxcnn.compiler_options(self.jdev.platform) if args.xla_options else None
        # Inference runs the BatchNorm-folded model (flaxcnn.fold_batchnorm) unless
        # --no-fold-bn; training always runs the model as it is.
        infer_module, self.infer_variables = self.module, self.variables
        if args.fold_bn:
            infer_module, self.infer_variables = flaxcnn.fold_batchnorm(
                self.module, self.variables, (1, self.size, self.size, 3)
            )
        self.flax_infer = jax.jit(infer_module.apply, compiler_options=opts)
        self.flax_train = jax.jit(self._flax_train, donate_argnums=0, compiler_options=opts)

    def inputs(self, n: int):
        """The same batch for both: (torch x, torch y, jax x, jax y)."""
        import torch

        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, self.size, self.size, 3), dtype=np.float32)
        y = rng.integers(0, 1000, n)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(self.device)
        xt = xt.to(memory_format=torch.channels_last)
        yt = torch.from_numpy(y).to(self.device)
        return xt, yt, jax.device_put(x, self.jdev), jax.device_put(y, self.jdev)

    def flax_state(self):
        """A fresh training state, in new buffers: the train step donates (consumes) it."""
        host = jax.tree.map(np.array, self.variables)
        params = jax.device_put(host["params"], self.jdev)
        stats = jax.device_put(host.get("batch_stats", {}), self.jdev)
        return params, stats, self.tx.init(params)

    def _flax_train(self, state, x, y):
        params, batch_stats, opt_state = state

        def loss_fn(params, batch_stats):
            logits, new = self.module.apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(0)},  # VGG, AlexNet: dropout is on, as in torch
            )
            logits = logits.astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

        (_, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new["batch_stats"], opt_state

    def torch_infer(self, tm, xt):
        import torch

        with torch.inference_mode(), self.autocast:
            tm.eval()(xt)

    def torch_train(self, tm, xt, yt):
        import torch

        tm.train()
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            loss = torch.nn.functional.cross_entropy(tm(xt).float(), yt)
        loss.backward()
        self.opt.step()

    def sync(self):
        _sync_torch(self.device)


def _first(fn, sync) -> float:
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def bench_model(name: str, args, device) -> list[Row]:
    """Both tasks against torch eager, and against ``torch.compile`` with ``--compile``."""
    import torch

    pair = Pair(name, args, device)
    rows = bench_variant(pair, "eager", pair.tmodel, args)
    if args.compile:
        rows += bench_variant(pair, "compile", torch.compile(pair.tmodel), args)
    return rows


def bench_variant(pair: Pair, variant: str, tm, args) -> list[Row]:
    """Inference and training of ``pair`` against one torch variant ``tm`` of its model
    (``pair.tmodel`` itself or a ``torch.compile`` of it), labelled ``variant``."""
    import torch

    device, n = pair.device, args.batch
    xt, yt, xj, yj = pair.inputs(n)
    fstate = pair.flax_state()

    def flax_infer():
        pair.flax_infer(pair.infer_variables, xj).block_until_ready()

    def flax_train():
        nonlocal fstate
        fstate = pair.flax_train(fstate, xj, yj)
        jax.block_until_ready(fstate)

    rows = []
    for task, t_fn, f_fn in (
        ("inference", lambda: pair.torch_infer(tm, xt), flax_infer),
        ("train", lambda: pair.torch_train(tm, xt, yt), flax_train),
    ):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t_first, f_first = _first(t_fn, pair.sync), _first(f_fn, lambda: None)
        tt, ft = _alternate(t_fn, f_fn, pair.sync, args)
        row = Row(pair.name, pair.source, task, variant, n, pair.size, args.precision,
                  n / tt, n / ft, t_first, f_first)  # fmt: skip
        if device.type == "cuda":
            row.torch_peak_mib = torch.cuda.max_memory_allocated() / 2**20
            stats = pair.jdev.memory_stats() or {}
            row.flax_peak_mib = stats.get("peak_bytes_in_use", float("nan")) / 2**20
        rows.append(row)
    return rows


# ---- memory against batch size (the seed lectures' VGG-19 experiment)


@dataclasses.dataclass
class MemRow:
    model: str
    batch: int
    size: int
    precision: str
    torch_mib: float  # training-step peak, all it holds included (see _memory_at)
    flax_mib: float


def _torch_held_bytes(pair: Pair, *tensors) -> int:
    """Bytes of what a training step keeps between steps: parameters, buffers, gradients,
    optimizer state, and the batch (each storage once)."""
    import torch

    m, opt = pair.tmodel, pair.opt
    held = [*m.parameters(), *m.buffers(), *tensors]
    held += [p.grad for p in m.parameters() if p.grad is not None]
    held += [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    return sum(
        {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}.values()
    )


def _torch_cpu_step_peak(step) -> int:
    """Peak bytes torch's allocator holds during ``step`` above what it held before, from
    the profiler's allocation events. Two steps are profiled and the second measured, so
    every block the measured step frees was allocated where the profiler saw it."""
    import torch

    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        step()
        with torch.profiler.record_function("measured_step"):
            step()
    events = list(prof.profiler.kineto_results.events())
    mark = next(e for e in events if e.name() == "measured_step")
    cur, base, peak = 0, None, 0
    for e in sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns()):
        if base is None and e.start_ns() >= mark.start_ns():
            base = cur
        cur += e.nbytes()
        if base is not None and e.start_ns() <= mark.end_ns():
            peak = max(peak, cur - base)
    return peak


def _memory_at(pair: Pair, n: int, precision: str) -> MemRow:
    """Peak memory of one training step at batch ``n``, everything the step holds included
    (parameters, statistics, gradients, optimizer state, batch, activations, workspace).
    flaxcnn: XLA's buffer assignment for the compiled step (arguments + outputs - donated +
    temporaries), which is what XLA allocates. PyTorch: the allocator's own peak on CUDA;
    on CPU, what the step holds plus the peak of the profiler's allocation events."""
    import torch

    xt, yt, xj, yj = pair.inputs(n)
    compiled = pair.flax_train.lower(pair.flax_state(), xj, yj).compile()
    m = compiled.memory_analysis()
    planned = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
    flax_mib = (planned - m.alias_size_in_bytes) / 2**20

    def torch_step():
        pair.torch_train(pair.tmodel, xt, yt)
        pair.sync()

    torch_step()  # warm-up: gradients and optimizer state exist, as in training
    if pair.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch_step()
        torch_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        torch_mib = (_torch_held_bytes(pair, xt, yt) + _torch_cpu_step_peak(torch_step)) / 2**20
    return MemRow(pair.name, n, pair.size, precision, torch_mib, flax_mib)


def memory_curve(name: str, args, device) -> list[MemRow]:
    """Training-step memory of both frameworks at each of ``args.memory_batches``."""
    pair = Pair(name, args, device)
    rows = []
    for n in args.memory_batches:
        r = _memory_at(pair, n, args.precision)
        print(
            f"{name:20s} batch {n:4d}  torch {r.torch_mib:9.0f} MiB  flax {r.flax_mib:9.0f} MiB",
            flush=True,
        )
        rows.append(r)
    return rows


def largest_batch(rows: list[MemRow], field: str, budget_mib: float) -> tuple[int, float]:
    """Largest batch whose step fits in ``budget_mib``, from a least-squares line
    memory = a + k * batch through the measured points (activation memory grows linearly
    with the batch); also the line's worst relative residual on those points."""
    b = np.array([r.batch for r in rows], float)
    m = np.array([getattr(r, field) for r in rows], float)
    k, a = np.polyfit(b, m, 1)
    resid = float(np.max(np.abs(a + k * b - m) / np.maximum(m, 1.0)))
    if k <= 0:
        return 0, resid
    # Rounded first: a fit through exact points can land a hair below a whole batch
    # (89.99999999999997 for 90 on one machine), which floor would turn into 89.
    return int(np.floor(round((budget_mib - a) / k, 6))), resid


def write_memory(rows: list[MemRow], env: dict[str, str], out: Path, budget_gib: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fields = [f.name for f in dataclasses.fields(MemRow)]
    with open(out / "memory.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        w.writerows([getattr(r, k) for k in fields] for r in rows)
    budget = budget_gib * 1024
    lines = [
        f"Date: {env['date']}  ",
        f"Hardware: {env['hardware']}  ",
        f"Versions: {env['versions']}  ",
        f"XLA compiler options: {env['xla options']}",
        "",
        "Training step (forward, backward, SGD-momentum update) peak memory, MiB: parameters, "
        "statistics, gradients, optimizer state, batch, activations and workspace. flaxcnn: "
        "XLA's buffer assignment for the compiled step; PyTorch: its allocator's peak "
        "(on CPU from the profiler's allocation events).",
        "",
        "| model | size | precision | batch | torch | flaxcnn | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.size} | {r.precision} | {r.batch} | {r.torch_mib:.0f} | "
            f"{r.flax_mib:.0f} | {r.flax_mib / r.torch_mib:.2f}x |"
        )
    lines += [
        "",
        f"Largest batch for a {budget_gib:g} GiB budget (linear fit through the points above):",
        "",
    ]
    lines += ["| model | torch | flaxcnn | fit residual torch / flax |", "|---|---|---|---|"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in rows))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, model in enumerate(models):
        rs = [r for r in rows if r.model == model]
        (bt, et), (bf, ef) = (largest_batch(rs, f, budget) for f in ("torch_mib", "flax_mib"))
        lines.append(f"| {model} | {bt} | {bf} | {et:.1%} / {ef:.1%} |")
        for field, label, ls, mk in (
            ("torch_mib", "PyTorch", "--", "s"),
            ("flax_mib", "flaxcnn", "-", "o"),
        ):
            ax.plot([r.batch for r in rs], [getattr(r, field) / 1024 for r in rs], ls,
                    marker=mk, color=f"C{i}", label=f"{model} {label}")  # fmt: skip
    top = max(max(r.torch_mib, r.flax_mib) for r in rows) / 1024
    if budget_gib <= 2 * top:  # the budget line, where it does not flatten the curves
        ax.axhline(budget_gib, color="k", lw=1, ls=":", label=f"budget {budget_gib:g} GiB")
    ax.set_xlabel("batch size")
    ax.set_ylabel("training-step peak memory (GiB)")
    ax.set_title(f"Memory against batch size, {env['hardware'].split(';')[0]}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=120)
    plt.close(fig)
    (out / "memory.md").write_text("\n".join(lines) + "\n")


def _alternate(torch_fn, flax_fn, sync, args) -> tuple[float, float]:
    """Median seconds per call, the two frameworks alternating after warm-up.

    Each timed call follows an untimed call of the same framework: the first step after
    the other framework ran is slower on a shared CPU (caches, allocator, thread pools;
    measured on 2 cores: flaxcnn's ResNet-50 training step took 11.1-13.4 s right after
    torch's, 9.3-10.7 s after its own), and that is no framework's own speed."""
    for _ in range(args.warmup):
        torch_fn()
        sync()
        flax_fn()
    tt, ft = [], []
    for _ in range(args.repeats):
        torch_fn()
        sync()
        tt += _time(torch_fn, sync, 1)
        flax_fn()
        ft += _time(flax_fn, lambda: None, 1)
    return statistics.median(tt), statistics.median(ft)


def _environment(device, args) -> dict[str, str]:
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
        "xla options": (
            str(flaxcnn.compiler_options(jax.devices()[0].platform))
            if args.xla_options
            else "none (--no-xla-options)"
        ),
        "flaxcnn inference": (
            "BatchNorm folded into the convs (flaxcnn.fold_batchnorm)"
            if args.fold_bn
            else "BatchNorm as trained (--no-fold-bn)"
        ),
        # glibc's allocator settings change both frameworks' CPU figures (docs/performance.md)
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", "unset (glibc's defaults)"),
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
        f"Versions: {env['versions']}  ",
        f"XLA compiler options: {env['xla options']}  ",
        f"flaxcnn inference: {env['flaxcnn inference']}  ",
        f"GLIBC_TUNABLES: {env['GLIBC_TUNABLES']}",
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


def parser() -> argparse.ArgumentParser:
    """The command line; also how other scripts get this one's defaults."""
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
    p.add_argument(
        "--memory",
        action="store_true",
        help="instead of throughput: training-step memory against batch size",
    )
    p.add_argument("--memory-batches", nargs="+", type=int, default=[1, 8, 16, 32, 64])
    p.add_argument("--memory-budget-gib", type=float, default=16.0)
    p.add_argument(
        "--no-xla-options",
        dest="xla_options",
        action="store_false",
        help="compile without flaxcnn.compiler_options() (the figures before they existed)",
    )
    p.add_argument(
        "--no-fold-bn",
        dest="fold_bn",
        action="store_false",
        help="flaxcnn inference without BatchNorm folding (the figures before it existed)",
    )
    p.add_argument("--out", default="benchmarks/results/latest")
    return p


def torch_device():
    """CUDA when both torch and JAX see a GPU, else the CPU: the two frameworks share one."""
    import torch

    return torch.device(
        "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch_device()
    missing = [m for m in args.models if m not in flaxcnn.list_models()]
    if missing:
        print(f"skipping models not (yet) in the registry: {missing}", file=sys.stderr)
    names = [m for m in args.models if m not in missing]
    if args.memory:
        mem = [r for name in names for r in memory_curve(name, args, device)]
        write_memory(mem, _environment(device, args), Path(args.out), args.memory_budget_gib)
        print(f"wrote {args.out}/memory.csv, memory.md, memory.png")
        return 0
    rows = []
    for name in names:
        for r in bench_model(name, args, device):
            print(
                f"{r.model:20s} {r.task:9s} {r.torch_variant:7s} torch {r.torch_ips:9.1f} img/s  flax {r.flax_ips:9.1f} img/s  ratio {r.ratio:.2f}",
                flush=True,
            )
            rows.append(r)
    write_outputs(rows, _environment(device, args), Path(args.out))
    print(f"wrote {args.out}/results.csv, results.md, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
