"""Layer normalisation over channels with PyTorch's exact semantics."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from .params import shaped_param

__all__ = ["LayerNorm"]


class LayerNorm(nn.Module):
    """``torch.nn.LayerNorm(C)`` on the last axis, which on NHWC is also ``LayerNorm2d``.

    torch's channels-first ``LayerNorm2d`` (torchvision's and timm's ConvNeXt) permutes
    to channels-last and normalises the last axis, so one layer serves both. Differs
    from flax's ``nn.LayerNorm`` in the default ``eps`` (torch's 1e-5; ConvNeXt passes
    1e-6) and in computing the variance in two passes, in the wider of float32 and the compute
    dtype (float32 under bf16, float64 under float64), as torch does.

    Variables: ``params`` ``scale``, ``bias`` (torch ``weight``, ``bias``).
    """

    eps: float = 1e-5
    use_bias: bool = True
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = shaped_param(self, "scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = (
            shaped_param(self, "bias", nn.initializers.zeros, (c,), self.param_dtype)
            if self.use_bias
            else None
        )
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        acc = jnp.promote_types(dtype, jnp.float32)
        xf = x.astype(acc)
        mean = jnp.mean(xf, -1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), -1, keepdims=True)
        y = (xf - mean) * lax.rsqrt(var + self.eps) * scale.astype(acc)
        if bias is not None:
            y = y + bias.astype(acc)
        return y.astype(dtype)
