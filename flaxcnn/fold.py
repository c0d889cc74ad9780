"""BatchNorm folding for inference: every ``Conv2d -> BatchNorm2d`` pair becomes one conv.

In eval mode a BatchNorm is a per-channel affine map of its input,
``y = (x - mean) * scale / sqrt(var + eps) + bias``. When its input is a convolution's
output, the multiplier folds into the conv kernel's output channels and the rest into one
bias, so inference runs ``conv(x, kernel * mul) + shift``: one fewer elementwise pass
over every feature map, and on GPU a conv + bias (+ ReLU) that XLA hands to cuDNN as
one fused kernel. torch users know this from ``torch.fx.experimental.optimization.fuse``
and ``torch.ao.quantization.fuse_modules``.

>>> folded, fvars = flaxcnn.fold_batchnorm(model, variables)
>>> logits = jax.jit(folded.apply)(fvars, x)          # eval mode only

The pairs are found by tracing the model once (``jax.eval_shape``, no computation): a
``BatchNorm2d`` is folded when the array it normalises is exactly what a ``Conv2d`` or
``DepthwiseConv2d`` returned and no other module reads that array. Every other BatchNorm
(pre-activation ResNet v2 and DenseNet normalise sums and concatenations) is left as it is. Results equal the unfolded
model's to float32 rounding (``tests/test_fold.py`` checks every family).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from ._registry import _REGISTRY
from .layers import BatchNorm2d, Conv2d, DepthwiseConv2d

__all__ = ["BatchNormFolded", "fold_batchnorm"]

Path = tuple[str, ...]


class BatchNormFolded(nn.Module):
    """``model`` with the BatchNorms at ``folded`` reduced to a bias add (or nothing).

    Built by :func:`fold_batchnorm`, which also rewrites the variables: the paired convs'
    kernels (and biases) carry the BatchNorm's affine map; a folded BatchNorm keeps only
    ``params/bias`` (the shift) when its conv has no bias of its own, else nothing. The
    variable tree is otherwise the model's (the wrapper shares the model's scope).
    Inference only: ``train=True`` raises.
    """

    model: nn.Module
    folded: tuple[Path, ...]

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, **kwargs: Any) -> Any:
        if train:
            raise ValueError(
                "a BatchNorm-folded model is for inference; train the original model "
                "(fold_batchnorm(model, variables) again afterwards)"
            )
        nn.share_scope(self, self.model)
        folded = set(self.folded)

        def folded_bn(next_fun, args, kw, context):
            m = context.module
            if not (isinstance(m, BatchNorm2d) and context.method_name == "__call__"):
                return next_fun(*args, **kw)
            if m.path not in folded:
                return next_fun(*args, **kw)
            (y,) = args
            if m.has_variable("params", "bias"):
                y = y + m.get_variable("params", "bias").astype(y.dtype)
            return y

        with nn.intercept_methods(folded_bn):
            return self.model(x, **kwargs)


def _pairs(
    model: nn.Module, variables: Any, x: jax.ShapeDtypeStruct
) -> dict[Path, tuple[Path, float]]:
    """``{batchnorm path: (conv path, eps)}`` for each BatchNorm2d fed directly by a conv
    whose output no other module reads (folding changes the conv's output for every reader;
    a read by plain ``jnp`` code between modules is not seen, which the equivalence tests
    of every family cover)."""
    produced: dict[int, Path] = {}
    readers: dict[int, int] = {}
    candidates: dict[Path, tuple[int, float]] = {}
    keep = []  # the traced outputs stay alive, so their ids stay unique

    def record(next_fun, args, kwargs, context):
        m = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        for a in jax.tree.leaves((args, kwargs)):
            if id(a) in produced:
                readers[id(a)] = readers.get(id(a), 0) + 1
        if isinstance(m, BatchNorm2d) and args and id(args[0]) in produced:
            candidates[m.path] = id(args[0]), m.eps
        out = next_fun(*args, **kwargs)
        if isinstance(m, (Conv2d, DepthwiseConv2d)):
            produced[id(out)] = m.path
            keep.append(out)
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
    return {bn: (produced[i], eps) for bn, (i, eps) in candidates.items() if readers[i] == 1}


def fold_batchnorm(
    model: nn.Module, variables: Any, input_shape: tuple[int, ...] | None = None
) -> tuple[BatchNormFolded, dict]:
    """Fold every BatchNorm that follows a convolution into it, for inference.

    Args:
        model: a flaxcnn model (any module built from ``Conv2d``/``BatchNorm2d``).
        variables: its ``{'params': ..., 'batch_stats': ...}``.
        input_shape: an NHWC input shape to trace with; default the registry's
            ``input_size`` of the model's class with batch 1, else 224x224.

    Returns:
        ``(folded_model, folded_variables)``; ``folded_model.apply(folded_variables, x)``
        gives ``model.apply(variables, x)`` (eval mode) to float32 rounding. The folded
        values are computed in float32 whatever the parameter dtype, then cast back.
    """
    if input_shape is None:
        specs = [s for s in _REGISTRY.values() if s.cls is type(model)]
        h, w, _ = specs[0].input_size if specs else (224, 224, 3)
        input_shape = (1, h, w, getattr(model, "in_chans", 3))
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    pairs = _pairs(model, variables, x)
    flat = traverse_util.flatten_dict(dict(variables))
    for bn, (conv, eps) in pairs.items():
        mean = flat.pop(("batch_stats", *bn, "mean")).astype(jnp.float32)
        var = flat.pop(("batch_stats", *bn, "var")).astype(jnp.float32)
        mul = jax.lax.rsqrt(var + eps)
        scale = flat.pop(("params", *bn, "scale"), None)
        if scale is not None:
            mul = mul * scale.astype(jnp.float32)
        beta = flat.pop(("params", *bn, "bias"), None)
        shift = -mean * mul + (0.0 if beta is None else beta.astype(jnp.float32))
        k = ("params", *conv, "kernel")
        flat[k] = (flat[k].astype(jnp.float32) * mul).astype(flat[k].dtype)
        b = ("params", *conv, "bias")
        if b in flat:
            flat[b] = (flat[b].astype(jnp.float32) * mul + shift).astype(flat[b].dtype)
        else:
            flat[("params", *bn, "bias")] = shift.astype(flat[k].dtype)
    folded = BatchNormFolded(model, tuple(sorted(pairs)))
    return folded, traverse_util.unflatten_dict(flat)
