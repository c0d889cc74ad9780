"""Mixed precision measured against the peer: flaxcnn in bfloat16 next to torch autocast.

A model built with ``dtype=jnp.bfloat16`` computes in bfloat16 and keeps its parameters
and BatchNorm statistics in float32. How much that moves the output means little on its
own; next to what ``torch.autocast(dtype=torch.bfloat16)`` does to the same weights on the
same inputs it says whether flaxcnn's mixed precision loses more than the torch user is
used to losing. :func:`compare_bf16` measures both against their own float32 output:

* ``flax_rel_err  = max|flax_bf16  - flax_f32|  / max|flax_f32|``
* ``torch_rel_err = max|torch_bf16 - torch_f32| / max|torch_f32|``

and how often the bfloat16 top-1 class is the float32 one, on each side. By default the
torch model has random weights and randomised BatchNorm statistics, exactly as
:func:`~flaxcnn.convert.verify.verify` builds it; a trained model can be passed instead.

On a GPU the Flax side runs on JAX's default device and ``torch_device='cuda'`` puts the
torch model there; both float32 references are computed without TF32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._registry import find_by_source
from .api import from_torch
from .verify import no_drop, random_torch_model

__all__ = [
    "Logits",
    "PrecisionResult",
    "compare_bf16",
    "flax_logits",
    "main_output",
    "rel_err",
    "top1_agreement",
    "torch_logits",
]


@dataclasses.dataclass
class Logits:
    """The four outputs :func:`compare_bf16` compared, float32 numpy, NHWC where spatial."""

    flax_f32: np.ndarray
    flax_bf16: np.ndarray
    torch_f32: np.ndarray
    torch_bf16: np.ndarray


@dataclasses.dataclass
class PrecisionResult:
    """What bfloat16 does to one model's output in flaxcnn and in torch autocast.

    ``f32_rel_diff`` is the float32 conversion's own agreement, flax against torch
    (relative to ``max|torch_f32|``): the bf16 errors mean something only when it is small.
    ``cross_rel_diff`` is ``max|flax_bf16 - torch_bf16| / max|torch_f32|``. Top-1
    agreement is over the batch (per pixel for segmentation maps).
    """

    source: str
    name: str
    flax_name: str
    batch: int
    size: tuple[int, int]
    flax_rel_err: float
    torch_rel_err: float
    flax_top1_agree: float
    torch_top1_agree: float
    f32_rel_diff: float
    cross_rel_diff: float
    torch_device: str
    logits: Logits = dataclasses.field(repr=False, compare=False)

    @property
    def ratio(self) -> float:
        """``flax_rel_err / torch_rel_err``: above 1, flaxcnn's bf16 loses more than torch's."""
        return self.flax_rel_err / self.torch_rel_err if self.torch_rel_err else float("inf")

    def __str__(self) -> str:
        return (
            f"{self.source}:{self.name} -> {self.flax_name} {self.size[0]}x{self.size[1]} "
            f"x{self.batch}: bf16 rel err flax {self.flax_rel_err:.3g} torch "
            f"{self.torch_rel_err:.3g} (ratio {self.ratio:.2f}); top-1 agree flax "
            f"{self.flax_top1_agree:.2f} torch {self.torch_top1_agree:.2f}; "
            f"f32 flax-torch {self.f32_rel_diff:.2g}"
            + ("" if self.torch_device == "cpu" else f" (torch on {self.torch_device})")
        )


def main_output(y: Any) -> np.ndarray:
    """A model's prediction as float32 numpy: classification logits, or a segmentation
    model's main map (``'out'`` of a dict) in NHWC."""
    if isinstance(y, dict):
        y = y["out"]
    if hasattr(y, "detach"):
        a = y.detach().float().cpu().numpy()
        return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a
    return np.asarray(jnp.asarray(y, jnp.float32))


def rel_err(got: np.ndarray, ref: np.ndarray, scale: np.ndarray | None = None) -> float:
    """``max|got - ref| / max|scale|`` (``scale`` defaults to ``ref``), in float64."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    top = float(np.max(np.abs(ref if scale is None else scale)))
    return float(np.max(np.abs(got - ref)) / max(top, 1e-30))


def top1_agreement(got: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of rows (pixels, for maps) whose arg-max class over the last axis agrees."""
    return float(np.mean(np.argmax(got, -1) == np.argmax(ref, -1)))


@functools.lru_cache(maxsize=8)
def _eval_fn(module):
    # One compile per (module, input shape); flax modules hash by their fields.
    return jax.jit(functools.partial(module.apply, train=False))


def flax_logits(module, variables, x: np.ndarray, dtype: Any = None) -> np.ndarray:
    """Eval-mode output of ``module`` (rebuilt with ``dtype`` if given) on NHWC ``x``.

    The float32 run uses full-precision matmuls (no TF32 on a GPU), as the reference.
    """
    if dtype is not None:
        module = module.clone(dtype=dtype)
    precision = "highest" if dtype in (None, jnp.float32) else None
    with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
        y = _eval_fn(module)(variables, jax.device_put(np.ascontiguousarray(x, np.float32)))
        return main_output(y)


@contextlib.contextmanager
def _no_tf32():
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def torch_logits(tmodel, x: np.ndarray, *, bf16: bool = False, device: str = "cpu") -> np.ndarray:
    """Eval-mode output of the torch model (already on ``device``) on NHWC ``x``, in float32
    or under ``torch.autocast(device_type=device, dtype=torch.bfloat16)``."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)).to(device)
    autocast = (
        torch.autocast(device_type=device, dtype=torch.bfloat16)
        if bf16
        else contextlib.nullcontext()
    )
    with torch.no_grad(), _no_tf32(), autocast:
        return main_output(tmodel.eval()(xt))


def compare_bf16(
    name: str,
    *,
    source: str,
    size: tuple[int, int] | None = None,
    batch: int = 8,
    seed: int = 0,
    torch_device: str = "cpu",
    inputs: np.ndarray | None = None,
    model: Any = None,
) -> PrecisionResult:
    """bfloat16 against float32 in flaxcnn and in torch autocast, on the same weights.

    Args:
        name, source: the torch model, as :func:`~flaxcnn.convert.from_torch` takes them.
        size: ``(H, W)`` of the random inputs (default the spec's ``input_size``).
        batch, seed: random inputs (seeded standard normal) and, without ``model``, the
            torch model's random weights.
        torch_device: where the torch model runs (``'cuda'`` moves it there for the call).
        inputs: NHWC float32 batch to use instead of random inputs (e.g. preprocessed
            photos); ``size`` and ``batch`` are then read from it.
        model: a torch model (e.g. with trained weights) to use as is, instead of
            :func:`~flaxcnn.convert.verify.random_torch_model`'s.

    Dropout and stochastic depth are off on the Flax side (eval mode ignores them anyway;
    the rates are zeroed as ``verify`` does, so the module is the one it checks).
    """
    if model is None:
        spec, tmodel = random_torch_model(name, source=source, seed=seed)
    else:
        spec, tmodel = find_by_source(source, name), model
    tmodel.eval()
    module, variables = from_torch(name, tmodel, source=source, **no_drop(spec))

    if inputs is None:
        h, w = size or spec.input_size[:2]
        c = getattr(module, "in_chans", spec.input_size[2])
        inputs = np.random.default_rng(seed).standard_normal((batch, h, w, c), dtype=np.float32)
    x = np.asarray(inputs, np.float32)
    if x.ndim != 4:
        raise ValueError(f"inputs must be an NHWC batch, got shape {x.shape}")

    home = next(tmodel.parameters()).device
    tmodel.to(torch_device)
    try:
        t32 = torch_logits(tmodel, x, device=torch_device)
        t16 = torch_logits(tmodel, x, bf16=True, device=torch_device)
    finally:
        tmodel.to(home)
    f32 = flax_logits(module, variables, x)
    f16 = flax_logits(module, variables, x, jnp.bfloat16)

    return PrecisionResult(
        source=source,
        name=name,
        flax_name=spec.name,
        batch=x.shape[0],
        size=(x.shape[1], x.shape[2]),
        flax_rel_err=rel_err(f16, f32),
        torch_rel_err=rel_err(t16, t32),
        flax_top1_agree=top1_agreement(f16, f32),
        torch_top1_agree=top1_agreement(t16, t32),
        f32_rel_diff=rel_err(f32, t32),
        cross_rel_diff=rel_err(f16, t16, scale=t32),
        torch_device=torch_device,
        logits=Logits(f32, f16, t32, t16),
    )
