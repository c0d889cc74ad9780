"""Stochastic regularisers: DropPath (stochastic depth) and Dropout2d."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["DropPath", "Dropout2d"]


def _keep_mask(rng: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.bernoulli(rng, 1.0 - rate, shape)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): drop a residual branch per sample.

    Kept samples are scaled by ``1 / (1 - rate)`` as timm's ``drop_path`` does.
    Draws from the ``'dropout'`` rng stream; identity unless ``train`` and ``rate > 0``.
    """

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {self.rate}")
        keep = _keep_mask(self.make_rng("dropout"), self.rate, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)


class Dropout2d(nn.Module):
    """``torch.nn.Dropout2d`` on NHWC: zero whole channels per sample, rescale the rest."""

    rate: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"Dropout2d rate must be in [0, 1], got {self.rate}")
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        keep = _keep_mask(self.make_rng("dropout"), self.rate, (x.shape[0], 1, 1, x.shape[-1]))
        return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)
