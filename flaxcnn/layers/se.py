"""Squeeze-and-Excitation (Hu et al., 2018, arXiv:1709.01507)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from .activations import get_act
from .conv import Conv2d

__all__ = ["SqueezeExcite"]


class SqueezeExcite(nn.Module):
    """Global-average-pool, 1x1 conv reduce, activation, 1x1 conv expand, gate, rescale.

    Submodules are ``fc1`` and ``fc2`` (1x1 convs with bias), the names both timm's
    ``SEModule`` and torchvision's ``SqueezeExcitation`` use, so their weights convert
    by name.

    Attributes:
        rd_channels: channels of the squeezed representation.
        act: activation after ``fc1`` (torch default ReLU).
        gate: gating function (sigmoid; MobileNetV3 uses hard_sigmoid).
    """

    rd_channels: int
    act: str = "relu"
    gate: str = "sigmoid"
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda f, name: Conv2d(  # noqa: E731
            f, 1, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = get_act(self.act)(conv(self.rd_channels, "fc1")(s))
        s = get_act(self.gate)(conv(x.shape[-1], "fc2")(s))
        return x * s.astype(x.dtype)
