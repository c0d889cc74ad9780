"""Numerical proof that a converted model computes what the torch model computes.

``verify('resnet50', source='torchvision')`` builds the torch model with random
weights, randomises every BatchNorm's affine parameters and running statistics
(so that a swapped mean/var, a wrong eps or a missed BN cannot hide behind
identity statistics), converts it, and compares in float32 on CPU:

* eval mode and train mode (BN on batch statistics; dropout and stochastic depth off),
* at the model's default size and at an odd, non-square size (the spec's ``verify_size``),
  two images per batch (one at default sizes above 320x320, see ``LARGE_IMAGE``),
* outputs within ``max|Δ| <= rtol * max(1, max|ref|)`` (rtol 1e-4),
* in train mode the updated running statistics within 1e-5 relative,
* parameter counts exactly equal;
* export back: the converted variables, perturbed as training would, go through
  :func:`flaxcnn.convert.to_torch` into the torch model (``strict=True``), whose eval
  output then matches the Flax output within the same bound;
* on the kernel paths ``kernels`` names (:func:`flaxcnn.kernels`): ``'auto'`` takes
  XLA:CPU's lowerings on CPU, ``'portable'`` exactly what GPUs and TPUs run, on any backend.

Deep residual networks at random initialisation are chaotic in train mode: BN on
batch statistics amplifies rounding error exponentially with depth (Yang et al.,
"A Mean Field Theory of Batch Normalization", ICLR 2019). Measured here, torch's
*own* float32 ResNet-152 differs from its float64 twin by 4.2e-4 relative in train
mode, so no float32 implementation could meet 1e-4 against it. Families register a
``prepare`` hook (:func:`register_verify_hook`) that makes residual branches
contractive, as trained networks and zero-init-residual schemes are (their last BN
scale drawn small but non-zero): every parameter still matters and the bound is kept.

The test suite runs it for every (source, model) pair the registry claims.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from .._registry import find_by_source
from ..xla import kernel_mode
from ..xla import kernels as kernel_paths
from .api import from_torch
from .core import ConversionError

__all__ = [
    "CheckResult",
    "compare_outputs",
    "default_grad_size",
    "VerifyResult",
    "build_torch_model",
    "no_drop",
    "random_torch_model",
    "randomize_bn",
    "register_verify_hook",
    "scale_last_bns",
    "verify",
]

ODD_SIZE = (97, 131)
# Above this many pixels (EfficientNet-B4 and up, V2-M/L) one image per check: the CPU
# cost of a 600x600 EfficientNet-B7 pass is seconds, and mixing between samples (flatten
# order, BN over the batch axis) is checked at the odd size, always with ``batch`` images.
LARGE_IMAGE = 320 * 320

# The gradient check (``verify(..., grad=True)``): float64 on both sides, so that a kink
# (ReLU, max pool) cannot turn rounding into a discrete difference, as it does in float32
# (torch's own float32 ResNet-50 gradients are 2e-2 of the largest away from its float64
# ones). What is left is summation order: 1e-9 of the largest gradient is far above it.
GRAD_RTOL = 1e-9
# The SGD step as flaxcnn.train builds it from its default config (train/configs/default.py):
# momentum, Nesterov, L2 weight decay masked off 1-D parameters.
GRAD_SGD = {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}

_HOOKS: dict[str, Callable[[Any, Any], None]] = {}


def register_verify_hook(family: str, prepare: Callable[[Any, Any], None]) -> None:
    """``prepare(torch_model, generator)`` runs after :func:`randomize_bn` for ``family``."""
    if family in _HOOKS:
        raise ValueError(f"a verify hook for {family!r} is already registered")
    _HOOKS[family] = prepare


@dataclasses.dataclass
class CheckResult:
    mode: str
    size: tuple[int, int]
    max_abs_diff: float
    max_abs_ref: float
    bound: float
    stats_max_rel_diff: float | None = None
    stats_bound: float | None = None
    worst: str | None = None  # the tensor with the largest difference (gradient checks)

    @property
    def ok(self) -> bool:
        stats_ok = self.stats_max_rel_diff is None or self.stats_max_rel_diff <= self.stats_bound
        # NaN compares false; an infinite reference would make the bound infinite.
        return bool(np.isfinite(self.bound) and self.max_abs_diff <= self.bound and stats_ok)

    def __str__(self) -> str:
        s = (
            f"{self.mode:5s} {self.size[0]}x{self.size[1]}: max|Δ|={self.max_abs_diff:.3g} "
            f"(bound {self.bound:.3g}, max|ref|={self.max_abs_ref:.3g})"
        )
        if self.stats_max_rel_diff is not None:
            s += f", running stats rel Δ={self.stats_max_rel_diff:.3g} (bound {self.stats_bound:.0e})"
        if self.worst is not None:
            s += f", worst {self.worst}"
        return s + ("" if self.ok else "  FAIL")


@dataclasses.dataclass
class VerifyResult:
    source: str
    name: str
    flax_name: str
    torch_params: int
    flax_params: int
    checks: list[CheckResult]
    kernels: str = "auto"

    @property
    def ok(self) -> bool:
        return self.torch_params == self.flax_params and all(c.ok for c in self.checks)

    def __str__(self) -> str:
        head = (
            f"{self.source}:{self.name} -> flaxcnn {self.flax_name} ({self.kernels} kernels, "
            f"{jax.default_backend()}): params torch {self.torch_params:,} "
            f"flax {self.flax_params:,}"
            + ("" if self.torch_params == self.flax_params else "  FAIL")
        )
        return "\n".join([head, *("  " + str(c) for c in self.checks)])


def build_torch_model(name: str, source: str, **kwargs: Any):
    """The source library's model with random weights (never downloads)."""
    if source == "torchvision":
        import inspect

        import torchvision

        builder = torchvision.models.get_model_builder(name)
        if "weights_backbone" in inspect.signature(builder).parameters:
            # Segmentation/detection builders default to a pretrained backbone: never download.
            kwargs = {"weights_backbone": None, **kwargs}
        return builder(weights=None, **kwargs)
    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)
    if source in ("openai", "open_clip"):
        from .clip import build_clip

        return build_clip(name, source, find_by_source(source, name), **kwargs)
    raise ValueError(f"unknown source {source!r}")


def random_torch_model(
    name: str, *, source: str, seed: int = 0, torch_kwargs: dict[str, Any] | None = None
):
    """``(spec, torch model)``: the model :func:`verify` compares against. Random init under
    ``seed``, every BatchNorm randomised (:func:`randomize_bn`) and the family's verify hook
    applied; ``torch_kwargs`` go to the builder over the spec's."""
    import torch

    spec = find_by_source(source, name)
    torch.manual_seed(seed)
    tmodel = build_torch_model(
        name, source, **{**spec.torch_kwargs, **(torch_kwargs or {})}
    ).float()
    g = randomize_bn(tmodel, seed)
    if spec.family in _HOOKS:
        _HOOKS[spec.family](tmodel, g)
    return spec, tmodel


def no_drop(spec) -> dict[str, float]:
    """The spec's dropout and drop-path rates set to 0 (module overrides)."""
    return {f: 0.0 for f in spec.fields if f.endswith(("drop_rate", "drop_path_rate"))}


def randomize_bn(model, seed: int = 0):
    """Give every BatchNorm random affine parameters and running statistics.

    Returns the ``torch.Generator`` used, for hooks that randomise further.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                if m.track_running_stats:
                    m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
    return g


def scale_last_bns(model, generator, last_bn: Callable[[Any], Any]) -> None:
    """Make residual branches contractive, as trained networks have them: for every module
    ``m`` of the torch model whose ``last_bn(m)`` is a BatchNorm (the last BN of a residual
    branch, ``None`` elsewhere), draw that BN's weight from U(0.1, 0.3) (small, never zero,
    so every parameter still matters). The families' verify hooks differ only in how they
    find that BN."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            bn = last_bn(m)
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                bn.weight.copy_(torch.rand(bn.num_features, generator=generator) * 0.2 + 0.1)


def _disable_dropout(model) -> None:
    import torch

    for m in model.modules():
        # timm's DropPath and torchvision's StochasticDepth drop residual branches per sample.
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) or type(m).__name__ in (
            "DropPath",
            "StochasticDepth",
        ):
            m.eval()


def _outputs(y) -> list[np.ndarray]:
    """Flatten a model output (tensor/array, tuple, list or dict) into numpy arrays, NHWC."""
    if isinstance(y, dict):
        return [a for k in sorted(y) for a in _outputs(y[k])]
    if isinstance(y, (tuple, list)):
        return [a for v in y for a in _outputs(v)]
    if hasattr(y, "detach"):
        a = y.detach().cpu().numpy()
        return [a.transpose(0, 2, 3, 1) if a.ndim == 4 else a]
    return [np.asarray(y)]


def verify(
    name: str,
    *,
    source: str,
    sizes: Sequence[tuple[int, int]] | None = None,
    modes: Sequence[str] = ("eval", "train"),
    batch: int = 2,
    seed: int = 0,
    rtol: float = 1e-4,
    stats_rtol: float = 1e-5,
    torch_kwargs: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    export: bool = True,
    kernels: str | None = None,
    grad: bool = False,
    grad_size: tuple[int, int] | None = None,
    grad_rtol: float = GRAD_RTOL,
) -> VerifyResult:
    """Compare the torch model ``name`` from ``source`` with its conversion (see module doc).

    ``torch_kwargs`` go to the torch constructor (over the spec's ``torch_kwargs``) and
    ``overrides`` to the flaxcnn module, for options both libraries have (e.g. dilated ResNets).
    ``kernels``: ``'auto'`` or ``'portable'`` (:func:`flaxcnn.kernels`); ``None``, the mode
    in force (``$FLAXCNN_KERNELS``, default ``'auto'``).

    ``grad``: also prove the training step, in float64 on both sides (``jax_enable_x64``
    for the check only): the torch model ``.double()`` and flaxcnn with
    ``dtype=param_dtype=float64``, train mode, dropout and drop-path off, the cross-entropy
    of every output (summed) on fixed random labels, at ``grad_size`` (default
    :func:`default_grad_size`), ``batch`` images. Checks ``loss``, ``grad`` (every parameter's
    gradient, by name through the converter's names) and ``sgd`` (the parameters after two
    SGD updates with those gradients, flaxcnn.train's optimizer against ``torch.optim.SGD``
    with the same momentum, Nesterov, weight decay and no-decay set), each within
    ``max|Δ| <= grad_rtol * max(1, max|ref|)``. ``modes=()`` and ``export=False`` leave
    only these.
    """
    if find_by_source(source, name).task == "clip":  # two inputs, two towers: its own check
        if grad or sizes is not None or overrides:
            raise ValueError(
                "verify: CLIP pairs are checked at their resolution, without overrides, and "
                "not yet by the float64 gradient check (grad=True)"
            )
        from .clip import verify_clip

        with kernel_paths(kernels or kernel_mode()):
            result = verify_clip(
                name,
                source=source,
                modes=modes,
                batch=batch,
                seed=seed,
                rtol=rtol,
                stats_rtol=stats_rtol,
                torch_kwargs=torch_kwargs,
                export=export,
            )
        result.kernels = kernels or kernel_mode()
        return result
    mode = kernels or kernel_mode()
    if not (modes or export or grad):
        raise ValueError("verify: nothing to check (no modes, export=False, grad=False)")
    with kernel_paths(mode):
        result = None
        if modes or export:
            result = _verify(
                name,
                source,
                sizes,
                modes,
                batch,
                seed,
                rtol,
                stats_rtol,
                torch_kwargs,
                overrides,
                export,
            )
        if grad:
            ref, checks = _grad_checks(
                name, source, grad_size, batch, seed, grad_rtol, torch_kwargs, overrides
            )
            if result is None:  # the float64 models' counts: the float32 ones are not built
                result = VerifyResult(
                    source, name, ref.flax_name, ref.torch_params, ref.flax_params, []
                )
            result.checks += checks
    result.kernels = mode
    return result


def _verify(
    name, source, sizes, modes, batch, seed, rtol, stats_rtol, torch_kwargs, overrides, export
) -> VerifyResult:
    import torch

    spec, tmodel = random_torch_model(name, source=source, seed=seed, torch_kwargs=torch_kwargs)
    h, w, c = spec.input_size
    sizes = list(sizes) if sizes is not None else [(h, w), spec.verify_size or ODD_SIZE]

    # Stochastic regularisers off, so train mode is deterministic on both sides.
    module, variables, report = from_torch(
        name, tmodel, source=source, strict=False, **{**no_drop(spec), **(overrides or {})}
    )
    if not report.ok:  # what strict conversion would raise, without converting twice
        raise ConversionError(str(report), report)

    torch_params = sum(p.numel() for p in tmodel.parameters())
    flax_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables.get("params", {})))

    apply_eval, apply_train = _apply_fns(module)
    rng = np.random.default_rng(seed)
    checks = []
    initial_state = {k: v.clone() for k, v in tmodel.state_dict().items()}
    for mode in modes:
        train = mode == "train"
        for size in sizes:
            tmodel.load_state_dict(initial_state)
            n = batch if size[0] * size[1] <= LARGE_IMAGE else 1
            x = rng.standard_normal((n, c, *size), dtype=np.float32)
            tmodel.train(train)
            if train:
                _disable_dropout(tmodel)
            with torch.no_grad():
                ref = _outputs(tmodel(torch.from_numpy(x)))
            xj = _to_device_nhwc(x)
            if train:
                out, new_state = apply_train(variables, xj)
            else:
                out, new_state = apply_eval(variables, xj), None
            got = _outputs(out)
            if len(got) != len(ref):
                raise AssertionError(f"{name}: torch returned {len(ref)} outputs, flax {len(got)}")
            diff, ref_max = compare_outputs(got, ref)
            check = CheckResult(mode, size, diff, ref_max, rtol * max(1.0, ref_max))
            if train and new_state is not None:
                check.stats_max_rel_diff = _stats_diff(tmodel, new_state, report)
                check.stats_bound = stats_rtol
            checks.append(check)
    if export:
        checks.append(
            _export_check(
                name, source, apply_eval, variables, tmodel, (batch, c, *sizes[-1]), rtol, rng
            )
        )
    tmodel.load_state_dict(initial_state)
    return VerifyResult(source, name, spec.name, torch_params, flax_params, checks)


@functools.lru_cache(maxsize=4)
def _apply_fns(module):
    """Jitted eval and train applies of ``module``, one compile per (mode, size).

    Op-by-op dispatch would compile every primitive separately (about twice the CPU for a
    deep net: EfficientNet-B4 at 380, 19 s vs 10 s). Cached per module (flax modules compare
    by their fields), so a model that converts from torchvision and from timm into the same
    flaxcnn module (ResNet-50, DenseNet-121, ...) compiles once for both comparisons.
    """
    return (
        jax.jit(functools.partial(module.apply, train=False)),
        jax.jit(functools.partial(module.apply, train=True, mutable=["batch_stats"])),
    )


def _to_device_nhwc(x: np.ndarray) -> jax.Array:
    """NCHW numpy -> NHWC device array, by a plain transfer: ``jnp.asarray`` of a numpy
    array compiles a ``jit(stage)`` kernel per distinct shape (JAX 0.10)."""
    return jax.device_put(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))


def _perturbed(variables, seed: int = 0):
    """Variables moved away from the torch values, as training in JAX would move them: each
    tensor scaled by its own random factor (about 5%), vectors also shifted.

    A factor per tensor, not per element: the values are already random per element, so a
    wrong transpose or swapped tensors show either way, and what this adds (export must
    send the new values, not the reference's) needs only each tensor to move. Per-element
    draws cost 8 s of a ConvNeXt-L verify. Drawn with numpy: one ``jax.random`` call per
    leaf shape would compile a kernel per distinct shape.
    """
    rng = np.random.default_rng(seed)

    def move(a, positive):
        a = np.asarray(a)
        factor = a.dtype.type(1 + 0.05 * rng.standard_normal())
        moved = a * factor + a.dtype.type(0.02 if a.ndim == 1 else 0.0)
        return jax.device_put(np.abs(moved) if positive else moved)

    # batch_stats stay non-negative, so variances stay valid.
    return {
        col: jax.tree.map(lambda a, p=col == "batch_stats": move(a, p), tree)
        for col, tree in variables.items()
    }


def _export_check(name, source, apply_eval, variables, tmodel, shape, rtol, rng) -> CheckResult:
    """Perturbed variables -> to_torch -> strict load -> same eval output as Flax.

    ``apply_eval`` is verify's jitted eval function and ``shape`` one it was compiled for,
    so the export check costs no extra compilation.
    """
    import torch

    from .export import to_torch

    trained = _perturbed(variables)
    sd = to_torch(name, trained, source=source, reference=tmodel.state_dict())
    tmodel.load_state_dict(sd, strict=True)
    tmodel.eval()
    x = rng.standard_normal(shape, dtype=np.float32)
    with torch.no_grad():
        ref = _outputs(tmodel(torch.from_numpy(x)))
    got = _outputs(apply_eval(trained, _to_device_nhwc(x)))
    diff, ref_max = compare_outputs(got, ref)
    return CheckResult("export", tuple(shape[2:]), diff, ref_max, rtol * max(1.0, ref_max))


def _stats_diff(tmodel, new_state, report) -> float:
    """Max relative difference of torch's updated running stats and Flax's batch_stats."""
    flat = traverse_util.flatten_dict(dict(new_state))
    diffs = []
    for key, tensor in tmodel.state_dict().items():
        target = report.mapping.get(key)
        if target is None or target[0] != "batch_stats":
            continue
        diff, ref_max = compare_outputs([np.asarray(flat[target])], [tensor.detach().cpu().numpy()])
        diffs.append(diff / max(1.0, ref_max))
    return _nan_max(diffs)


def _nan_max(values) -> float:
    """The largest value, NaN if any is NaN (Python's ``max`` keeps a NaN only when it
    comes first, so a NaN after the first output would read as agreement)."""
    values = np.asarray(list(values), np.float64)
    return float(np.max(values)) if values.size else 0.0


def compare_outputs(got: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> tuple[float, float]:
    """``(max|got - ref|, max|ref|)`` over paired outputs, such that no mismatch can read as
    agreement: a different number of outputs or a different shape (broadcasting would hide
    it) gives an infinite difference, and a NaN anywhere (``got`` or ``ref``) a NaN one, which
    no bound accepts. An infinity equal on both sides is no difference; any other is."""
    if len(got) != len(ref):
        return float("inf"), _nan_max(float(np.max(np.abs(r), initial=0.0)) for r in ref)
    diffs, maxes = [], []
    for g, r in zip(got, ref, strict=True):
        g, r = np.asarray(g), np.asarray(r)
        maxes.append(float(np.max(np.abs(r), initial=0.0)))
        if g.shape != r.shape:
            diffs.append(float("inf"))
            continue
        g64, r64 = np.asarray(g, np.float64), np.asarray(r, np.float64)  # no copy if float64
        with np.errstate(invalid="ignore"):  # inf - inf is NaN: a difference, unless equal
            d = np.abs(g64 - r64)
        d[np.isinf(g64) & (g64 == r64)] = 0.0  # the same infinity
        diffs.append(float(np.max(d, initial=0.0)))
    return _nan_max(diffs), _nan_max(maxes)


def default_grad_size(spec) -> tuple[int, int]:
    """The input size of the gradient check: small, odd and non-square (windows and strides
    meet the edges unevenly), at least the model's ``min_size``: 65x97 for most models,
    299x331 for Inception-V3 with its aux head (at 224x224 a float64 ResNet-50 backward
    pass is minutes of CPU; at 65x97 seconds). A ViT runs at its own size: at any other
    grid timm resamples the position embedding in float32 ("interpolate needs float32"),
    which caps the float64 reference at float32 precision (measured on ViT-Ti/16 at 80x112:
    3.7e-9 of the largest gradient, in ``head.weight``; at 224x224 5.5e-15)."""
    if dict(spec.config or {}).get("patch_size"):
        return spec.input_size[:2]
    h = max(65, spec.min_size) | 1
    return h, (h + 32) | 1


def _leaves(y) -> list[Any]:
    """A model output (array, tuple, list or dict, keys sorted) as a flat list, unconverted."""
    if isinstance(y, dict):
        return [a for k in sorted(y) for a in _leaves(y[k])]
    if isinstance(y, (tuple, list)):
        return [a for v in y for a in _leaves(v)]
    return [y]


def _cross_entropy(logits, labels):
    """torch's ``F.cross_entropy`` (mean) on channel-last logits: ``(N, K)`` or ``(N, H, W, K)``."""
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


@functools.lru_cache(maxsize=4)
def _grad_fn(module):
    """Jitted ``(loss, new batch_stats), grads`` of the summed cross-entropy in train mode."""

    def loss_fn(params, rest, x, labels):
        out, state = module.apply(
            {"params": params, **rest}, x, train=True, mutable=["batch_stats"]
        )
        outs = _leaves(out)
        if len(outs) != len(labels):
            raise AssertionError(f"flax returned {len(outs)} outputs, torch {len(labels)}")
        return sum(_cross_entropy(o, t) for o, t in zip(outs, labels, strict=True)), state

    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))


def _torch_to_flax(tree_sd, module, spec, source):
    """A torch-named state dict (gradients or parameters) in the Flax layout, by the
    converter's own names and transforms (all of them permutations and reshapes, so they
    map gradients exactly as they map weights): ``(flat params, {flax path: torch key})``."""
    from .api import _input_shape
    from .core import convert_state_dict, get_rules, variable_shapes

    shapes = variable_shapes(module, _input_shape(module, spec))
    variables, report = convert_state_dict(
        tree_sd, shapes, get_rules(spec.family, source), strict=True
    )
    names = {t: k for k, t in report.mapping.items()}
    flat = traverse_util.flatten_dict(dict(variables["params"]))
    return flat, {p: names[("params", *p)] for p in flat}


def _compare_trees(mode, size, got_flat, ref_flat, names, rtol) -> CheckResult:
    """Every tensor compared by name: ``max|Δ|`` over all of them, bound on the largest
    reference value; a tensor on one side only is an infinite difference."""
    worst, worst_name, ref_max = 0.0, None, 0.0
    for path in sorted(set(got_flat) | set(ref_flat)):
        if path not in got_flat or path not in ref_flat:
            d, r = float("inf"), 0.0
        else:
            d, r = compare_outputs([np.asarray(got_flat[path])], [np.asarray(ref_flat[path])])
        ref_max = _nan_max([ref_max, r])
        if not (d <= worst or np.isnan(worst)):  # a NaN is the worst, and stays it
            worst, worst_name = d, names.get(path, "/".join(path))
    return CheckResult(mode, size, worst, ref_max, rtol * max(1.0, ref_max), worst=worst_name)


def _grad_checks(
    name, source, size, batch, seed, rtol, torch_kwargs, overrides
) -> tuple[_Reference, list[CheckResult]]:
    """The float64 gradient and SGD-step comparison (``verify(..., grad=True)``) on the
    kernel paths in force. torch's side does not depend on them: checking one pair on both
    paths one after the other computes it once (:func:`_torch_reference`)."""
    with jax.enable_x64(True):
        ref = _torch_reference(
            name, source, size, batch, seed, _frozen(torch_kwargs), _frozen(overrides)
        )
        (loss, _), grads = _grad_fn(ref.module)(
            ref.variables["params"],
            {k: v for k, v in ref.variables.items() if k != "params"},
            _to_device_nhwc(ref.x),
            [jax.device_put(t) for t in ref.labels],
        )
        new_params, _ = _sgd_steps(ref.variables["params"], grads)
    size = ref.x.shape[2:]
    flat = traverse_util.flatten_dict
    return ref, [
        CheckResult(
            "loss", size, abs(float(loss) - ref.loss), abs(ref.loss), rtol * max(1.0, abs(ref.loss))
        ),
        _compare_trees("grad", size, flat(dict(grads)), ref.grads, ref.names, rtol),
        _compare_trees("sgd", size, flat(dict(new_params)), ref.params_after, ref.names, rtol),
    ]


def _frozen(kwargs: dict[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((kwargs or {}).items()))


@dataclasses.dataclass(frozen=True, eq=False)
class _Reference:
    """torch's float64 training step on one pair, and the converted float64 model."""

    flax_name: str
    torch_params: int
    flax_params: int
    module: Any
    variables: Any  # float64, converted from the torch model before the step
    x: np.ndarray  # NCHW float64 batch
    labels: list[np.ndarray]
    loss: float
    grads: dict  # flat Flax paths -> torch's gradients, in the Flax layout
    params_after: dict  # likewise, the parameters after torch's two SGD updates
    names: dict  # flat Flax path -> torch name


@functools.lru_cache(maxsize=1)
def _torch_reference(name, source, size, batch, seed, torch_kwargs, overrides) -> _Reference:
    """torch ``.double()`` in train mode (dropout and drop-path off): the summed
    cross-entropy of every output on seeded random labels, its gradients, and two
    ``torch.optim.SGD`` updates with them. Runs under ``jax_enable_x64``."""
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F

    spec, tmodel = random_torch_model(
        name, source=source, seed=seed, torch_kwargs=dict(torch_kwargs)
    )
    f64 = {"dtype": jnp.float64, "param_dtype": jnp.float64}
    lacking = [f for f in f64 if f not in spec.fields]
    if lacking:
        raise ValueError(f"{spec.name} has no {' or '.join(lacking)} field: no float64 check")
    tmodel = tmodel.double().train()
    _disable_dropout(tmodel)
    module, variables = from_torch(
        name, tmodel, source=source, **{**no_drop(spec), **f64, **dict(overrides)}
    )
    flat_vars = traverse_util.flatten_dict(dict(variables))
    narrow = ["/".join(p) for p, a in flat_vars.items() if a.dtype != jnp.float64]
    if narrow:
        raise AssertionError(
            f"{spec.name} with param_dtype=float64 keeps {len(narrow)} variables in another "
            f"dtype, e.g. {narrow[0]}"
        )

    size = tuple(size or default_grad_size(spec))
    c = getattr(module, "in_chans", spec.input_size[2])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, *size))
    tmodel.zero_grad(set_to_none=True)
    touts = _leaves(tmodel(torch.from_numpy(x)))
    labels = [rng.integers(0, o.shape[1], size=(o.shape[0], *o.shape[2:])) for o in touts]
    tloss = sum(F.cross_entropy(o, torch.from_numpy(t)) for o, t in zip(touts, labels, strict=True))
    tloss.backward()

    named = dict(tmodel.named_parameters())
    for p in named.values():
        if p.grad is None:  # an unused parameter: a zero gradient, as JAX gives it
            p.grad = torch.zeros_like(p)
    state = tmodel.state_dict()

    def torch_flat(values):
        # convert_state_dict copies: the arrays may alias torch's memory.
        sd = {k: values.get(k, v).detach().numpy() for k, v in state.items()}
        return _torch_to_flax(sd, module, spec, source)

    grads, names = torch_flat({k: p.grad for k, p in named.items()})
    _, mask = _sgd_steps(variables["params"], None)
    opt = _torch_sgd(named, names, traverse_util.flatten_dict(dict(mask)))
    opt.step()
    opt.step()  # the same gradients again: the momentum buffer now matters
    params_after, _ = torch_flat(dict(named))
    return _Reference(
        spec.name,
        sum(p.numel() for p in named.values()),
        sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"])),
        module,
        variables,
        x,
        labels,
        float(tloss.detach()),
        grads,
        params_after,
        names,
    )


def _sgd_steps(params, grads):
    """Two SGD updates with the same gradients, by the optimizer flaxcnn.train builds:
    ``(new params, the weight-decay mask it applies)``; ``grads=None``: only the mask."""
    two_steps, decay_mask = _train_sgd()
    return None if grads is None else two_steps(params, grads), decay_mask(params)


@functools.lru_cache(maxsize=1)
def _train_sgd():
    """``(two_steps, decay_mask)``: flaxcnn.train's SGD with :data:`GRAD_SGD`, from a fresh
    state, two updates with the same gradients (one jitted function)."""
    try:
        import ml_collections
        import optax

        from ..train.optim import build_optimizer, decay_mask
    except ImportError as e:
        raise ImportError(
            f"the gradient check's SGD step is flaxcnn.train's: pip install 'flaxcnn[train]' ({e})"
        ) from e
    cfg = ml_collections.ConfigDict({"optimizer": "sgd", "schedule": "constant", **GRAD_SGD})
    tx = build_optimizer(cfg, total_steps=2)

    @jax.jit
    def two_steps(params, grads):
        state = tx.init(params)
        for _ in range(2):
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params

    return two_steps, decay_mask


def _torch_sgd(named, names, flat_mask):
    """``torch.optim.SGD`` with :data:`GRAD_SGD`, weight decay on the parameters whose Flax
    counterpart flaxcnn.train decays (``flat_mask``, from
    :func:`flaxcnn.train.optim.decay_mask`), none on the others."""
    import torch

    decayed = {names[p] for p, d in flat_mask.items() if d}
    groups = [
        {"params": [p for k, p in named.items() if (k in decayed) == d], "weight_decay": wd}
        for d, wd in ((True, GRAD_SGD["weight_decay"]), (False, 0.0))
    ]
    return torch.optim.SGD(
        [g for g in groups if g["params"]],
        lr=GRAD_SGD["learning_rate"],
        momentum=GRAD_SGD["momentum"],
        nesterov=GRAD_SGD["nesterov"],
    )
