"""Stochastic regularisers: Dropout, Dropout2d and DropPath (stochastic depth)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["DropPath", "Dropout", "Dropout2d"]


def _dropout(module: nn.Module, x: jax.Array, train: bool, shape: tuple[int, ...]) -> jax.Array:
    """Zero entries of ``x`` with probability ``module.rate`` (one draw per entry of the
    broadcastable ``shape``), rescale the rest by ``1 / (1 - rate)``; identity unless ``train``
    and ``rate > 0``, so evaluation and ``rate=0`` training need no ``'dropout'`` rng."""
    if not train or module.rate == 0.0:
        return x
    if not 0.0 <= module.rate <= 1.0:
        raise ValueError(f"{type(module).__name__} rate must be in [0, 1], got {module.rate}")
    if module.rate == 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - module.rate, shape)
    return jnp.where(keep, x / (1.0 - module.rate), 0).astype(x.dtype)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): drop a residual branch per sample.

    Kept samples are scaled by ``1 / (1 - rate)`` as timm's ``drop_path`` does (``rate=1``
    drops every sample, as there). Draws from the ``'dropout'`` rng stream; identity unless
    ``train`` and ``rate > 0``.
    """

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return _dropout(self, x, train, (x.shape[0],) + (1,) * (x.ndim - 1))


class Dropout(nn.Module):
    """``torch.nn.Dropout``: zero each element with probability ``rate`` while training.

    flax's ``nn.Dropout`` takes ``deterministic`` instead of the keyword-only ``train``
    every flaxcnn layer takes; models name each one after its torch module
    (``classifier_2``, ``drop``) rather than leaving flax's ``Dropout_0``.
    """

    rate: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return _dropout(self, x, train, x.shape)


class Dropout2d(nn.Module):
    """``torch.nn.Dropout2d`` on NHWC: zero whole channels per sample, rescale the rest."""

    rate: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return _dropout(self, x, train, (x.shape[0], 1, 1, x.shape[-1]))
