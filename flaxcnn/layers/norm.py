"""Batch normalisation with PyTorch's exact semantics."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from .params import shaped_param

__all__ = ["BatchNorm2d"]


class BatchNorm2d(nn.Module):
    """``torch.nn.BatchNorm2d`` for NHWC inputs (normalises the last axis).

    Matches torch where flax's ``nn.BatchNorm`` differs:

    * ``momentum`` is torch's: ``running = (1 - momentum) * running + momentum * batch``
      (flax's momentum is ``1 -`` this).
    * The running variance is updated with the *unbiased* batch variance, while the
      batch is normalised with the biased one, as torch does.
    * Statistics are always reduced in float32, also under bf16/fp16 compute.

    Variables: ``params`` ``scale``, ``bias``; ``batch_stats`` ``mean``, ``var``.
    ``train`` is explicit: batch statistics (and a running-stat update, which needs
    ``mutable=['batch_stats']``) when true, running statistics otherwise.

    ``axis_name`` / ``axis_index_groups`` average the batch moments across devices when the
    layer runs inside ``shard_map``; under plain ``jit`` on a sharded global batch the
    reduction is already global.
    """

    eps: float = 1e-5
    momentum: float = 0.1
    use_scale: bool = True
    use_bias: bool = True
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32
    scale_init: nn.initializers.Initializer = nn.initializers.ones
    bias_init: nn.initializers.Initializer = nn.initializers.zeros
    axis_name: str | None = None
    axis_index_groups: Sequence[Sequence[int]] | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = (
            shaped_param(self, "scale", self.scale_init, (c,), self.param_dtype)
            if self.use_scale
            else None
        )
        bias = (
            shaped_param(self, "bias", self.bias_init, (c,), self.param_dtype)
            if self.use_bias
            else None
        )

        if train:
            xf = x.astype(jnp.float32)
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axes)
            # Two-pass (centred) variance: as accurate as torch's on float32 inputs.
            mean_sq_dev = jnp.mean(jnp.square(xf - mean), axes)
            n = x.size // c
            if self.axis_name is not None:
                # Equal per-device batches: the mean of per-device moments is the global one.
                mean_all = lax.pmean(mean, self.axis_name, axis_index_groups=self.axis_index_groups)
                # E[(x - m)^2] = E[(x - m_d)^2] + (m_d - m)^2, averaged over devices.
                var = lax.pmean(
                    mean_sq_dev + jnp.square(mean - mean_all),
                    self.axis_name,
                    axis_index_groups=self.axis_index_groups,
                )
                n = n * lax.psum(1, self.axis_name, axis_index_groups=self.axis_index_groups)
                mean = mean_all
            else:
                var = mean_sq_dev
            if not self.is_initializing():
                unbiased = var * (n / jnp.maximum(n - 1, 1))
                m = self.momentum
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value

        mul = lax.rsqrt(var + self.eps)
        if scale is not None:
            mul = mul * scale.astype(jnp.float32)
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        y = (x.astype(dtype) - mean.astype(dtype)) * mul.astype(dtype)
        if bias is not None:
            y = y + bias.astype(dtype)
        return y
