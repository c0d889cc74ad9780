"""Conv -> BatchNorm -> ReLU under the names torchvision's Inception family gives it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .conv import Conv2d
from .norm import BatchNorm2d
from .padding import Padding

__all__ = ["BasicConv2d"]


class BasicConv2d(nn.Module):
    """torchvision's ``BasicConv2d`` (GoogLeNet, Inception v3) and timm's ``ConvNormAct``.

    A bias-free conv (``conv``), a BatchNorm (``bn``) and a ReLU. ``bn_eps`` defaults to
    1e-3: both torchvision Inception models use it (ported from TensorFlow), not torch's 1e-5.
    ``batch_norm=False`` gives the networks that predate BatchNorm (GoogLeNet as published):
    a conv with a bias, then the ReLU.
    """

    features: int
    kernel_size: int | Sequence[int] = 1
    stride: int | Sequence[int] = 1
    padding: Padding = 0
    batch_norm: bool = True
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = Conv2d(
            self.features,
            self.kernel_size,
            self.stride,
            padding=self.padding,
            use_bias=not self.batch_norm,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        if not self.batch_norm:
            return nn.relu(x)
        x = BatchNorm2d(
            eps=self.bn_eps,
            momentum=self.bn_momentum,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="bn",
        )(x, train=train)
        return nn.relu(x)
