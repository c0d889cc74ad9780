"""The one-call accelerator check: correctness, bfloat16 error, speed and scaling.

On a lent GPU machine (jax[cuda], flax, optax, torch, torchvision and timm installed, no
internet), from the repository root, one command:

    python benchmarks/device_check.py --out "$OUT"    # about 8 minutes: give it 10

runs, on the device JAX and torch see, within the time budget (what does not fit is
skipped and said so):

(a) float32 equivalence: :func:`flaxcnn.convert.verify` for one (source, model) pair per
    registry family, JAX on the accelerator at ``'highest'`` matmul precision, torch (no
    TF32) on the CPU as the reference, at the model's default size;
(b) bfloat16 error: :func:`flaxcnn.convert.precision.compare_bf16` for the same pairs
    (torch autocast on the GPU); passes when flaxcnn's error is at most twice torch's;
(c) throughput: ``benchmarks/run.py``'s side-by-side in bfloat16, batch 256, for ResNet-50
    (against torch eager AMP channels_last and ``torch.compile``), EfficientNet-B0,
    MobileNetV3-Large and ConvNeXt-T, against the targets of #9 (met / not met);
(d) data parallelism: images/s of the trainer's step (``train/steps.py``) on 1, 2, 4, ...
    all devices (weak scaling, a fixed batch per device), and the scaling efficiency;
    skipped on one device (give a multi-GPU run a larger ``--budget-s``).

It writes ``device_check.csv``, ``device_check.md`` (hardware, versions, every check) and
``device_check.png`` into ``<out>/<device>/`` (``<device>`` from JAX's device kind, e.g.
``benchmarks/results/nvidia-h100-80gb-hbm3/``), with run.py's ``results.*`` for part (c)
beside them, and prints a summary with the result of each check. Exit status: 1 if a
correctness check (a, b) failed or crashed, 2 if another part crashed, else 0; a target
not met is reported, not an error. ``--parts b,c`` runs a subset; ``--smoke`` runs each part
once on a tiny model (the test suite does, on CPU, so this script does not rot).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gc
import importlib.metadata
import importlib.util
import os
import re
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

_T0 = time.monotonic()  # the budget counts the imports too
# Before JAX starts: take GPU memory as needed instead of 75% of it up front, so that torch,
# which shares the GPU, can allocate too.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import flaxcnn  # noqa: E402
from flaxcnn.convert import verify  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).with_name("run.py"))
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = bench  # its dataclasses look their module up there
_spec.loader.exec_module(bench)

PARTS = {
    "a": "float32 equivalence (flaxcnn.convert.verify)",
    "b": "bfloat16 error against float32, flaxcnn and torch autocast",
    "c": "throughput, flaxcnn / torch (benchmarks/run.py)",
    "d": "data-parallel training step, 1 to all devices",
}
# What the markdown says under each part's title.
ABOUT = {
    "a": "JAX on its default device at 'highest' matmul precision, the torch reference on "
    "the CPU (TF32 off); eval, train (outputs and running statistics) and export, at the "
    "model's default size (the odd size is the CPU suite's), batch 2, random weights and "
    "BatchNorm statistics. First, which tied maximum gets a max pool's gradient on this "
    "device: finite ties must get torch's; windows of -inf or NaN only are recorded.",
    "b": "max|bf16 - f32| / max|f32| of the output, each framework against its own float32 "
    "(torch autocast on the torch device); passes when flaxcnn's is at most twice torch's.",
    "c": "Median of alternating timed steps after warm-up; flaxcnn inference with BatchNorm "
    "folded, torch channels_last under autocast. Targets are reported, never failures; "
    "first-step times and peak memory are in results.md beside this file.",
    "d": "The trainer's step (train/steps.py: jit over a 1-D 'data' mesh, NamedSharding) "
    "with a fixed batch per device; efficiency = img/s on n / (n x img/s on 1).",
}
# Share of the time left that each part gets when it starts (a part that does not run
# leaves its share to the others).
WEIGHTS = {"a": 0.25, "b": 0.2, "c": 0.4, "d": 0.15}
CORRECTNESS = ("a", "b")

# The family's representative in (a) and (b): its most used member. A family missing here
# is checked with its first registered model, so a new family is never skipped.
PREFERRED = {
    "resnet": "resnet50",
    "efficientnet": "efficientnet_b0",
    "mobilenet_v3": "mobilenet_v3_large",
    "convnext": "convnext_tiny",
    "densenet": "densenet121",
    "vgg": "vgg11_bn",
    "inception": "inception_v3",
    "googlenet": "googlenet",
    "alexnet": "alexnet",
    "fcn": "fcn_resnet50",
    "xception": "xception41",  # three of the family's four are timm's aligned Xceptions
    "mobilenet_v1": "mobilenetv1_100",
    "mobilenet_v2": "mobilenetv2_100",
    "senet": "legacy_seresnext26_32x4d",
    "resnetv2": "resnetv2_50",
    "efficientnet_v2": "tf_efficientnetv2_b0",
}

PASS, FAIL, MET, NOT_MET = "pass", "FAIL", "met", "not met"
RATIO = "flaxcnn / torch img/s"
MEASURED, SKIPPED, ERROR = "measured", "skipped", "error"


@dataclasses.dataclass(frozen=True)
class Rep:
    """One (source, model) pair standing for its family."""

    family: str
    model: str  # flaxcnn's name
    source: str
    source_name: str
    preferred: bool = True

    def __str__(self) -> str:
        return f"{self.family}: {self.source_name} ({self.source})"


def representatives() -> list[Rep]:
    """One pair per family of the registry's convertible models, PREFERRED's first, torchvision
    over timm where a model has both."""
    families: dict[str, list[str]] = {}
    for name in flaxcnn.list_models():
        spec = flaxcnn.get_model_spec(name)
        if spec.sources:
            families.setdefault(spec.family, []).append(name)
    order = [f for f in PREFERRED if f in families] + sorted(set(families) - set(PREFERRED))
    reps = []
    for family in order:
        preferred = PREFERRED.get(family) in families[family]
        name = PREFERRED[family] if preferred else families[family][0]
        sources = flaxcnn.get_model_spec(name).sources
        source = "torchvision" if "torchvision" in sources else next(iter(sources))
        reps.append(Rep(family, name, source, sources[source], preferred))
    return reps


@dataclasses.dataclass(frozen=True)
class Bench:
    """One model of part (c) and its targets (#9)."""

    model: str
    compile: bool = False  # also against torch.compile
    # (task, torch variant) -> the least flaxcnn / torch throughput ratio
    targets: Mapping[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    min_train_ips: float | None = None  # flaxcnn training images/s on an H100 SXM


_AT_PAR = {("train", "eager"): 1.0, ("inference", "eager"): 1.0}
BENCHES = (
    Bench(
        "resnet50",
        compile=True,
        targets={("train", "eager"): 1.2, ("train", "compile"): 1.0, ("inference", "eager"): 1.2},
        min_train_ips=3500,
    ),
    Bench("efficientnet_b0", targets=_AT_PAR),
    Bench("mobilenet_v3_large", targets=_AT_PAR),
    Bench("convnext_tiny"),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    reps: Callable[[], list[Rep]]
    verify_size: tuple[int, int] | None  # None: the model's default
    bf16_size: tuple[int, int] | None
    bf16_batch: int
    precision: str  # of (c) and (d): run.py's --precision
    benches: tuple[Bench, ...]
    bench_argv: tuple[str, ...]  # run.py's options for part (c), besides --precision
    scale_model: str
    scale_size: int
    scale_batch: int  # per device
    scale_steps: tuple[int, int]  # warm-up, timed
    first_item_s: Mapping[str, float]  # a guess at each part's first item, for the budget


FULL = Settings(
    reps=representatives,
    verify_size=None,
    bf16_size=None,
    bf16_batch=8,
    precision="bf16",
    benches=BENCHES,
    bench_argv=("--batch", "256", "--warmup", "3", "--repeats", "10"),
    scale_model="resnet50",
    scale_size=224,
    scale_batch=256,
    scale_steps=(3, 10),
    first_item_s={"a": 10, "b": 10, "c": 90, "d": 40},
)
# Tiny models through every part (LeNet-5 for (d), ResNet-18 elsewhere): the targets are
# evaluated (on meaningless figures) so that their code runs too.
SMOKE = Settings(
    reps=lambda: [Rep("resnet", "resnet18", "torchvision", "resnet18")],
    verify_size=(64, 64),
    bf16_size=(64, 64),
    bf16_batch=2,
    precision="bf16",
    benches=(dataclasses.replace(BENCHES[0], model="resnet18", compile=False),),
    bench_argv=("--batch", "2", "--size", "32", "--warmup", "0", "--repeats", "1"),
    scale_model="lenet5",  # compiles in a second, where a resnet18 step over 8 devices takes 18
    scale_size=32,
    scale_batch=2,
    scale_steps=(0, 1),
    first_item_s={},
)


@dataclasses.dataclass
class Check:
    """One row of the report: a check, a measurement, or what was skipped or crashed."""

    part: str
    item: str
    status: str  # pass, FAIL, met, not met, measured, skipped, error
    metric: str = ""
    value: float | None = None
    target: str = ""
    flax: float | None = None
    torch: float | None = None
    seconds: float | None = None
    note: str = ""
    detail: str = dataclasses.field(default="", repr=False)  # the markdown's, not the CSV's


CSV_FIELDS = [f.name for f in dataclasses.fields(Check) if f.name != "detail"]


class Budget:
    """Wall-clock seconds for the whole run, shared out as the parts start: a part gets the
    time left times its weight over the weights of the parts still to run. An item starts
    only if its part has time left for it: as long as the part's items so far took on
    average, or ``first_guess`` for the first."""

    def __init__(self, seconds: float, *, start: float, clock=time.monotonic):
        self.clock, self.end = clock, start + seconds
        self.part_end, self._guess, self._took = self.end, 0.0, []

    def left(self) -> float:
        return self.end - self.clock()

    def start_part(self, share: float, first_guess: float = 0.0) -> None:
        self.part_end = self.clock() + max(0.0, self.left()) * share
        self._guess, self._took = first_guess, []

    def fits(self) -> bool:
        guess = statistics.mean(self._took) if self._took else self._guess
        return self.clock() + guess < self.part_end

    def took(self, seconds: float) -> None:
        self._took.append(seconds)


class Report:
    def __init__(self, out: Path, header: dict[str, str]):
        self.out, self.header = out, header
        self.checks: list[Check] = []
        self.bench_rows: list = []  # run.py's Rows, for its own results.* files
        self.bench_env: dict[str, str] | None = None

    def add(self, check: Check) -> None:
        self.checks.append(check)
        said = []
        if check.value is not None:
            said.append(f"{check.metric} {check.value:.3g}")
        if check.target:
            said.append(f"target {check.target}")
        if check.note:
            said.append(check.note)
        print(f"({check.part}) {check.status:8s} {check.item}: {'; '.join(said)}", flush=True)

    def items(
        self, part: str, budget: Budget, items: Iterable, run: Callable, label: Callable = str
    ) -> None:
        """``run(item) -> [Check]`` for each item while the budget allows; a crash is
        recorded and the next item runs. ``label(item)`` names it where it has no checks."""
        for item in items:
            if not budget.fits():
                self.add(Check(part, label(item), SKIPPED, note="time budget spent"))
                continue
            t = time.monotonic()
            try:
                checks = run(item)
            except Exception as e:
                traceback.print_exc()
                checks = [_error(part, label(item), e)]
            took = time.monotonic() - t
            budget.took(took)
            for c in checks:
                c.seconds = round(took, 1)
                self.add(c)
            _release()

    def failed_correctness(self) -> bool:
        return any(c.part in CORRECTNESS and c.status in (FAIL, ERROR) for c in self.checks)

    def crashed(self) -> bool:
        return any(c.status == ERROR for c in self.checks)

    def totals(self) -> str:
        def n(status, parts="abcd"):
            return sum(c.status == status and c.part in parts for c in self.checks)

        verdict = "FAIL" if self.failed_correctness() else "PASS" if n(PASS) else "NOT CHECKED"
        return (
            f"correctness {verdict}: {n(PASS)} passed, {n(FAIL)} failed, "
            f"{n(ERROR, CORRECTNESS)} crashed; targets: {n(MET)} met, {n(NOT_MET)} not met; "
            f"skipped: {n(SKIPPED)}; crashed in (c), (d): {n(ERROR, 'cd')}"
        )

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "device_check.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_FIELDS)
            w.writerows([_cell(getattr(c, k)) for k in CSV_FIELDS] for c in self.checks)
        (self.out / "device_check.md").write_text(self.markdown())
        _plot(self.checks, self.out / "device_check.png", self.header["Device"])
        if self.bench_rows:
            bench.write_outputs(self.bench_rows, self.bench_env, self.out)

    def markdown(self) -> str:
        lines = ["# Device check", ""]
        lines += [f"{k}: {v}  " for k, v in self.header.items()]
        lines += ["", f"**{self.totals()}**", ""]
        for part, title in PARTS.items():
            checks = [c for c in self.checks if c.part == part]
            lines += [f"## ({part}) {title}", "", ABOUT[part], ""]
            lines += ["| item | result | metric | value | target | flaxcnn | torch | s | note |"]
            lines += ["|---|---|---|---|---|---|---|---|---|"]
            for c in checks:
                cells = [c.item, f"**{c.status}**", c.metric, _fmt(c.value), c.target]
                cells += [_fmt(c.flax), _fmt(c.torch), _fmt(c.seconds), c.note]
                lines.append("| " + " | ".join(s.replace("|", "\\|") for s in cells) + " |")
            details = [c.detail for c in checks if c.detail]
            if details:
                lines += ["", "```", *details, "```"]
            lines.append("")
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.3g}"


def _cell(x):
    return "" if x is None else x


def _error(part: str, item: str, e: BaseException) -> Check:
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return Check(
        part, item, ERROR, note=f"{type(e).__name__}: {first}", detail=traceback.format_exc()
    )


def _release() -> None:
    """Between items: free what the last one held, on both frameworks' devices."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def exact_float32():
    """JAX matmuls and convolutions in full float32, torch's TF32 off; restored after."""
    import torch

    saved = (
        jax.config.jax_default_matmul_precision,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        jax.config.update("jax_default_matmul_precision", saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1:]


# ---- the parts


def part_a(s: Settings, budget: Budget, report: Report, device) -> None:
    def check(rep: Rep) -> list[Check]:
        # One size (compiles are most of the time here); the odd size is the CPU suite's.
        size = s.verify_size or flaxcnn.get_model_spec(rep.model).input_size[:2]
        r = verify(rep.source_name, source=rep.source, sizes=[size])
        worst = max(r.checks, key=_over_bound)
        note = f"worst: {worst}" + ("" if rep.preferred else "; first of a family not in PREFERRED")
        if r.torch_params != r.flax_params:
            note = f"parameters torch {r.torch_params:,} flax {r.flax_params:,}; " + note
        return [
            Check(
                "a",
                str(rep),
                PASS if r.ok else FAIL,
                metric="max|Δ| / bound",
                value=_over_bound(worst),
                target="<= 1, parameters equal",
                note=note,
                detail=str(r),
            )
        ]

    with exact_float32():
        report.items("a", budget, ["max-pool ties"], lambda _: max_pool_ties())
        report.items("a", budget, s.reps(), check)


def max_pool_ties() -> list[Check]:
    """Which tied maximum gets a max pool's gradient here (docs/conversion.md). On an
    accelerator this is JAX's ``reduce_window`` rule, whose choice among ties XLA leaves
    unspecified: finite ties (ReLU zeros, equal values) must get torch's element (its first
    maximum); windows of -inf or NaN only are recorded, torch's choice is not required."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 29, 31)).astype(np.float32)  # NCHW, odd sizes
    non_finite = np.round(x)
    non_finite[non_finite < 1] = -np.inf
    non_finite[non_finite > 1] = np.nan
    cases = {"finite": [np.maximum(x, 0), np.round(x)], "non-finite": [non_finite]}
    configs = ((3, 2, 1, False), (3, 2, 0, True), (2, 2, 0, False), (3, 1, 1, False))
    checks = []
    for label, inputs in cases.items():
        differ = []
        for xc in inputs:
            for k, st, p, ceil in configs:
                xt = torch.from_numpy(xc).requires_grad_(True)
                out = F.max_pool2d(xt, k, st, p, ceil_mode=ceil)
                w = torch.from_numpy(rng.standard_normal(tuple(out.shape)).astype(np.float32))
                (out * w).sum().backward()
                wj = jnp.asarray(w.numpy().transpose(0, 2, 3, 1))

                def loss(a, k=k, st=st, p=p, ceil=ceil, wj=wj):
                    return jnp.sum(flaxcnn.layers.max_pool2d(a, k, st, p, ceil_mode=ceil) * wj)

                g = jax.jit(jax.grad(loss))(jnp.asarray(xc.transpose(0, 2, 3, 1)))
                if not np.array_equal(np.asarray(g), xt.grad.numpy().transpose(0, 2, 3, 1)):
                    differ.append(f"k{k} s{st} p{p}" + (" ceil" if ceil else ""))
        status = (PASS if not differ else FAIL) if label == "finite" else MEASURED
        note = "gradient equal to torch's" if not differ else f"differs from torch's: {differ}"
        checks.append(Check("a", f"max-pool ties, {label}", status, target="torch's argmax",
                            note=note))  # fmt: skip
    return checks


def _over_bound(c) -> float:
    """How far a verify check is into its bounds (above 1: outside)."""
    ratio = c.max_abs_diff / c.bound
    if c.stats_max_rel_diff is not None:
        ratio = max(ratio, c.stats_max_rel_diff / c.stats_bound)
    return ratio


def part_b(s: Settings, budget: Budget, report: Report, device) -> None:
    from flaxcnn.convert.precision import compare_bf16

    def check(rep: Rep) -> list[Check]:
        r = compare_bf16(
            rep.source_name,
            source=rep.source,
            size=s.bf16_size,
            batch=s.bf16_batch,
            seed=0,
            torch_device=device.type,
        )
        ok = r.flax_rel_err <= 2 * r.torch_rel_err
        note = f"top-1 agreement flaxcnn {r.flax_top1_agree:.0%}, torch {r.torch_top1_agree:.0%}"
        return [
            Check(
                "b",
                str(rep),
                PASS if ok else FAIL,
                metric="flaxcnn err / torch err",
                value=r.ratio,
                target="<= 2",
                flax=r.flax_rel_err,
                torch=r.torch_rel_err,
                note=note,
                detail=str(r),
            )
        ]

    with exact_float32():
        report.items("b", budget, s.reps(), check)


def part_c(s: Settings, budget: Budget, report: Report, device) -> None:
    import torch

    args = bench.parser().parse_args([*s.bench_argv, "--precision", s.precision])
    report.bench_env = bench._environment(device, args)
    # The absolute target is an H100 SXM's: device kind "NVIDIA H100 80GB HBM3" (the PCIe
    # and NVL cards, slower, say so in theirs).
    h100 = bool(re.search(r"H100.*HBM3", jax.devices()[0].device_kind))
    held = {}  # the eager item's pair (torch model and flaxcnn conversion), for torch.compile

    def run(item: tuple[Bench, str]) -> list[Check]:
        b, variant = item
        if b.model not in held:
            held.clear()
            held[b.model] = bench.Pair(b.model, args, device)
        pair = held[b.model]
        tm = pair.tmodel if variant == "eager" else torch.compile(pair.tmodel)
        rows = bench.bench_variant(pair, variant, tm, args)
        report.bench_rows += rows
        return [c for r in rows for c in _bench_checks(b, r, h100)]

    items = [(b, v) for b in s.benches for v in ("eager", "compile")[: 1 + b.compile]]
    report.items("c", budget, items, run, label=lambda i: f"{i[0].model} vs torch {i[1]}")
    held.clear()


def _bench_checks(b: Bench, r, h100: bool) -> list[Check]:
    item = f"{r.model} {r.task} vs torch {r.torch_variant}"
    setting = f"{r.precision}, batch {r.batch}, {r.size}x{r.size}"
    least = b.targets.get((r.task, r.torch_variant))
    status = MEASURED if least is None else MET if r.ratio >= least else NOT_MET
    target = "" if least is None else f">= {least:g}"
    checks = [
        Check(
            "c",
            item,
            status,
            metric=RATIO,
            value=r.ratio,
            target=target,
            flax=r.flax_ips,
            torch=r.torch_ips,
            note=setting,
        )
    ]
    if b.min_train_ips and r.task == "train" and r.torch_variant == "eager":
        status = (MET if r.flax_ips >= b.min_train_ips else NOT_MET) if h100 else MEASURED
        note = setting + ("" if h100 else "; the target is an H100 SXM's")
        checks.append(
            Check(
                "c",
                f"{r.model} train",
                status,
                metric="flaxcnn img/s",
                value=r.flax_ips,
                target=f">= {b.min_train_ips:g} (H100 SXM)",
                flax=r.flax_ips,
                note=note,
            )
        )
    return checks


def part_d(s: Settings, budget: Budget, report: Report, device) -> None:
    from flaxcnn.train import steps

    devices = jax.devices()  # two or more (main skips this part on one)
    counts = [n for n in (2**k for k in range(len(devices).bit_length())) if n < len(devices)]
    counts.append(len(devices))
    dtype = jnp.bfloat16 if s.precision == "bf16" else jnp.float32
    model = flaxcnn.create_model(s.scale_model, dtype=dtype)
    tx = optax.sgd(0.1, momentum=0.9)
    cfg = steps.StepConfig(num_classes=model.num_classes)
    chans = flaxcnn.get_model_spec(s.scale_model).input_size[2]
    shape = (s.scale_batch, s.scale_size, s.scale_size, chans)
    variables = jax.device_get(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, *shape[1:]))))
    rng = np.random.default_rng(0)
    images = rng.random((s.scale_batch * len(devices), *shape[1:]), dtype=np.float32)
    labels = rng.integers(0, model.num_classes, len(images)).astype(np.int32)
    single: list[float] = []  # images/s on one device

    def label(n: int) -> str:
        return f"{s.scale_model} train step on {n} device{'s' if n > 1 else ''}"

    def run(n: int) -> list[Check]:
        mesh = steps.make_mesh(devices[:n])
        state = steps.create_train_state(model, tx, None, shape, mesh, variables=variables)
        step = steps.make_train_step(model, tx, cfg, mesh)
        m = n * s.scale_batch
        batch = steps.shard_batch({"image": images[:m], "label": labels[:m]}, mesh)
        key = jax.device_put(jax.random.key(0), steps.replicated(mesh))
        warmup, timed = s.scale_steps
        state = jax.block_until_ready(step(state, batch, key))[0]  # compiles
        times = []
        for i in range(warmup + timed):
            t = time.perf_counter()
            state = jax.block_until_ready(step(state, batch, key))[0]
            if i >= warmup:
                times.append(time.perf_counter() - t)
        ips = m / statistics.median(times)
        if n == 1:
            single.append(ips)
        eff = ips / (n * single[0]) if single else None
        return [
            Check(
                "d",
                label(n),
                MEASURED,
                metric="scaling efficiency",
                value=eff,
                flax=ips,
                note=f"{s.precision}, {s.scale_batch} images per device, global batch {m}",
            )
        ]

    report.items("d", budget, counts, run, label=label)


RUNNERS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d}


# ---- output


def device_dir(kind: str) -> str:
    """``'NVIDIA H100 80GB HBM3'`` -> ``'nvidia-h100-80gb-hbm3'``."""
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "unknown"


def _header(device, args) -> dict[str, str]:
    import timm
    import torch
    import torchvision

    d = jax.devices()
    platform = getattr(d[0].client, "platform_version", d[0].platform).strip()
    env = bench._environment(device, bench.parser().parse_args([]))
    torch_on = "CPU"
    if device.type == "cuda":
        mem = torch.cuda.get_device_properties(0).total_memory / 2**30
        torch_on = f"{torch.cuda.get_device_name()} ({mem:.0f} GiB), CUDA {torch.version.cuda}, "
        torch_on += f"cuDNN {torch.backends.cudnn.version()}"
    plugins = sorted(
        f"{dist.metadata['Name']} {dist.version}"
        for dist in importlib.metadata.distributions()
        if (dist.metadata["Name"] or "").startswith("jax-cuda")
    )
    return {
        "Date": env["date"],
        "Device": f"{len(d)} x {d[0].device_kind} ({platform})",
        "Hardware": env["hardware"],
        "Versions": ", ".join(
            [
                env["versions"],
                f"jaxlib {importlib.metadata.version('jaxlib')}",
                *plugins,
                f"torchvision {torchvision.__version__}, timm {timm.__version__}",
                f"optax {optax.__version__}",
            ]
        ),
        "torch runs on": torch_on,
        "Run": f"{'smoke (tiny model, one iteration: figures mean nothing)' if args.smoke else 'full'}"
        f"; parts {','.join(args.parts)}; budget {args.budget_s:g} s",
        "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", ""),
    }


# What each part's panel shows: the line a value must stay under (a, b) or reach (c).
_PANELS = {
    "a": ("max|Δ| / bound of the worst output (log)", 1.0),
    "b": ("flaxcnn bf16 error / torch bf16 error", 2.0),
    "c": ("throughput ratio flaxcnn / torch", 1.0),
}


def _plot(checks: list[Check], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, part in zip(axes.flat, PARTS, strict=True):
        ax.set_title(f"({part}) {PARTS[part]}", fontsize=9)
        mine = [c for c in checks if c.part == part]
        shown = [c for c in mine if c.value is not None and (part != "c" or c.metric == RATIO)]
        not_run = [
            f"{c.status}: {c.item}: {c.note}"[:100] for c in mine if c.status in (SKIPPED, ERROR)
        ]
        if not_run:
            ax.text(0.01, 0.01, "\n".join(not_run[:10]), transform=ax.transAxes, fontsize=7,
                    va="bottom", color="#c44e52")  # fmt: skip
        if not shown:
            ax.set_axis_off()
        elif part == "d":
            _plot_scaling(ax, shown)
        else:
            _plot_bars(ax, shown, *_PANELS[part], log=part == "a")
    fig.suptitle(f"flaxcnn device check, {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_bars(ax, checks: list[Check], xlabel: str, line: float, *, log: bool) -> None:
    colors = {PASS: "#4c72b0", MET: "#4c72b0", FAIL: "#c44e52", NOT_MET: "#dd8452"}
    y = range(len(checks))
    ax.barh(y, [c.value for c in checks], color=[colors.get(c.status, "#999") for c in checks])
    ax.axvline(line, color="k", lw=1, ls="--")
    for i, c in enumerate(checks):
        target = f" (target {c.target})" if c.target and c.part == "c" else ""
        ax.text(c.value, i, f" {c.value:.2g} {c.status}{target}", va="center", fontsize=7)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_yticks(list(y), [c.item for c in checks], fontsize=7)
    ax.invert_yaxis()


def _plot_scaling(ax, checks: list[Check]) -> None:
    n = [int(re.search(r"on (\d+) device", c.item).group(1)) for c in checks]
    ax.plot(n, [c.flax for c in checks], "o-", label="measured")
    ax.plot(n, [k * checks[0].flax / n[0] for k in n], "k--", lw=1, label="linear from the first")
    for k, c in zip(n, checks, strict=True):
        ax.annotate(f" {c.value:.0%}", (k, c.flax), fontsize=8)
    ax.set_xticks(n)
    ax.set_xlabel("devices (label: scaling efficiency)")
    ax.set_ylabel("images/s")
    ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    p.add_argument(
        "--budget-s",
        type=float,
        default=450,
        help="seconds for the whole run, imports included; what does not fit is skipped "
        "(the default leaves 30 s of an 8-minute limit for an item that runs over)",
    )
    p.add_argument("--out", default="benchmarks/results", help="results go to OUT/<device>/")
    p.add_argument("--smoke", action="store_true", help="one tiny iteration of each part")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if unknown := set(args.parts) - set(PARTS):
        p.error(f"unknown parts {sorted(unknown)}; choose from a,b,c,d")

    s = SMOKE if args.smoke else FULL
    device = bench.torch_device()
    out = Path(args.out) / device_dir(jax.devices()[0].device_kind)
    report = Report(out, _header(device, args))
    print(f"device check on {report.header['Device']}, torch on {device.type}", flush=True)
    budget = Budget(args.budget_s, start=_T0)
    todo = [x for x in PARTS if x in args.parts]
    if len(jax.devices()) == 1 and "d" in todo:  # skipped at once: no share of the budget
        todo.remove("d")
        report.add(Check("d", "scaling", SKIPPED, note="1 device"))
    for part in PARTS:
        if part not in args.parts:
            report.add(Check(part, PARTS[part], SKIPPED, note="not in --parts"))
    for i, part in enumerate(todo):
        share = WEIGHTS[part] / sum(WEIGHTS[x] for x in todo[i:])
        budget.start_part(share, s.first_item_s.get(part, 0.0))
        try:
            RUNNERS[part](s, budget, report, device)
        except Exception as e:
            traceback.print_exc()
            report.add(_error(part, PARTS[part], e))
        report.write()  # after each part: a run cut short keeps what it measured
    report.header["Took"] = f"{time.monotonic() - _T0:.0f} s"
    report.write()
    print(report.totals())
    print(f"wrote {out}/device_check.csv, .md, .png")
    if report.failed_correctness():
        return 1
    return 2 if report.crashed() else 0


if __name__ == "__main__":
    sys.exit(main())
