"""Batch normalisation with PyTorch's exact semantics."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from .params import shaped_param

__all__ = ["BatchNorm2d"]


class BatchNorm2d(nn.Module):
    """``torch.nn.BatchNorm2d`` for NHWC inputs (normalises the last axis).

    Matches torch where flax's ``nn.BatchNorm`` differs:

    * ``momentum`` is torch's: ``running = (1 - momentum) * running + momentum * batch``
      (flax's momentum is ``1 -`` this).
    * The running variance is updated with the *unbiased* batch variance, while the
      batch is normalised with the biased one, as torch does.
    * Statistics are reduced in the wider of float32 and the compute dtype: float32 under
      bf16/fp16 compute, float64 under float64 (``jax_enable_x64``), where the running
      statistics are float64 too.

    In training its derivative is the textbook one (:func:`_batch_norm_train`, two
    reductions of the output gradient), not JAX's derivative of the formula (five);
    forward and reverse mode and higher orders all work.

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
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        # float32, or float64 for a model computing in float64 (x64 enabled).
        acc = _stats_dtype(dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), acc))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), acc))
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

        scale_acc = None if scale is None else scale.astype(acc)
        if train and not self.is_mutable_collection("batch_stats"):
            raise ValueError(
                "train=True updates the BatchNorm running statistics: apply with "
                "mutable=['batch_stats'], e.g. `y, state = model.apply(variables, x, "
                "train=True, mutable=['batch_stats'])`"
            )
        if train and self.axis_name is None:
            y, mean, var = _batch_norm_train(x, scale_acc, bias, self.eps, dtype)
            self._update_running(ra_mean, ra_var, mean, var, x.size // c)
            return y
        if train:
            # Equal per-device batches: the mean of per-device moments is the global one.
            _, mean_d, var_d = _batch_moments(x, acc)
            mean = lax.pmean(mean_d, self.axis_name, axis_index_groups=self.axis_index_groups)
            # E[(x - m)^2] = E[(x - m_d)^2] + (m_d - m)^2, averaged over devices; the
            # per-device variance is two-pass (centred), as accurate as torch's.
            var = lax.pmean(
                var_d + jnp.square(mean_d - mean),
                self.axis_name,
                axis_index_groups=self.axis_index_groups,
            )
            n = (x.size // c) * lax.psum(
                1, self.axis_name, axis_index_groups=self.axis_index_groups
            )
            self._update_running(ra_mean, ra_var, mean, var, n)
        else:
            mean, var = ra_mean.value, ra_var.value
        return _normalize(x, mean, var, scale_acc, bias, self.eps, dtype)

    def _update_running(self, ra_mean, ra_var, mean, var, n):
        """torch's update: the running variance takes the *unbiased* batch variance."""
        if self.is_initializing():
            return
        unbiased = var * (n / jnp.maximum(n - 1, 1))
        m = self.momentum
        ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
        ra_var.value = (1.0 - m) * ra_var.value + m * unbiased


def _normalize(x, mean, var, scale, bias, eps, dtype):
    """``(x - mean) * rsqrt(var + eps) * scale + bias`` in float32 (or a wider compute
    dtype), rounded to ``dtype`` once at the end, as torch's BatchNorm does under autocast.
    Rounding the mean, the per-channel factor and the bias to bf16 first, and subtracting in
    bf16, doubled the bf16 error of trained EfficientNet-Lites (docs/conversion.md)."""
    acc = jnp.promote_types(dtype, jnp.float32)
    mul = lax.rsqrt(var.astype(acc) + eps)
    if scale is not None:
        mul = mul * scale.astype(acc)
    y = (x.astype(acc) - mean.astype(acc)) * mul
    if bias is not None:
        y = y + bias.astype(acc)
    return y.astype(dtype)


def _stats_dtype(dtype):
    """The statistics' dtype for compute ``dtype``: the wider of it and float32."""
    return jnp.promote_types(dtype, jnp.float32)


def _batch_moments(x, acc):
    """Batch mean and biased variance over all axes but the last (two-pass), in ``acc``."""
    xf = x.astype(acc)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(xf, axes)
    return xf, mean, jnp.mean(jnp.square(xf - mean), axes)


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _batch_norm_train(x, scale, bias, eps, dtype):
    """Training-mode batch norm: ``(y, batch mean, biased batch variance)``.

    The forward is the plain formula. The derivative is the textbook one (as in torch's
    and cuDNN's kernels), written so that its transpose needs two reductions of the output
    cotangent, ``sum(dy)`` and ``sum(dy * xhat)``, which are also the bias's and the
    scale's gradients. JAX's own rule for the formula differentiates the mean and the
    variance separately, and the variance's mean again (a term that is zero): five
    reductions and eight passes over the map. ``scale``/``bias`` may be ``None``.
    """
    _, mean, var = _batch_moments(x, _stats_dtype(dtype))
    return _normalize(x, mean, var, scale, bias, eps, dtype), mean, var


@partial(_batch_norm_train.defjvp, symbolic_zeros=True)
def _batch_norm_train_jvp(eps, dtype, primals, tangents):
    x, scale, bias = primals
    dx, dscale, dbias = tangents
    acc = _stats_dtype(dtype)
    xf, mean, var = _batch_moments(x, acc)
    y = _normalize(x, mean, var, scale, bias, eps, dtype)
    axes = tuple(range(x.ndim - 1))
    r = lax.rsqrt(var + eps)
    xhat = (xf - mean) * r
    k = r if scale is None else r * scale
    # dy = k u + shift + xhat * slope, with per-channel shift and slope: each of the two
    # broadcasts transposes to one reduction of the cotangent (sum(dy), sum(dy * xhat)),
    # shared by the input's, the bias's and the scale's gradients.
    terms, shift, slope = [], [], []
    dmean = dvar = jnp.zeros_like(mean)
    if not isinstance(dx, SymbolicZero):
        u = dx.astype(acc)
        # With d = x - mean: dmean = mean(u), dvar = 2 mean(d u) (sum(d) = 0), and
        # dxhat = r (u - dmean - xhat mean(xhat u)).
        dmean = jnp.mean(u, axes)
        m_xu = jnp.mean(xhat * u, axes)
        dvar = 2.0 * m_xu / r
        terms.append(k * u)
        shift.append(-k * dmean)
        slope.append(-k * m_xu)
    if bias is not None and not isinstance(dbias, SymbolicZero):
        shift.append(dbias.astype(acc))
    if scale is not None and not isinstance(dscale, SymbolicZero):
        slope.append(dscale)
    if shift:
        terms.append(jnp.broadcast_to(functools.reduce(jnp.add, shift), y.shape))
    if slope:
        terms.append(xhat * functools.reduce(jnp.add, slope))
    dy = functools.reduce(jnp.add, terms).astype(y.dtype) if terms else jnp.zeros_like(y)
    return (y, mean, var), (dy, dmean, dvar)
