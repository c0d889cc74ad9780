"""2-D convolution with PyTorch's padding, groups and dilation semantics."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from .padding import Padding, conv_padding, pair

__all__ = ["Conv2d", "kaiming_normal_fan_out"]

# torchvision initialises ResNet-style convs with kaiming_normal_(mode="fan_out", nonlinearity="relu").
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class Conv2d(nn.Module):
    """``torch.nn.Conv2d`` for NHWC inputs.

    Parameters are ``kernel`` of shape ``(kh, kw, in_channels // groups, out_channels)``
    (HWIO, the transpose of torch's OIHW) and ``bias``. Padding is explicit and
    symmetric as in torch, or ``'same'`` for TensorFlow-ported weights.

    Attributes:
        features: output channels (torch ``out_channels``).
        kernel_size: ``k`` or ``(kh, kw)``.
        stride, padding, dilation, groups: as in torch.
        use_bias: torch ``bias``.
    """

    features: int
    kernel_size: int | Sequence[int] = 3
    stride: int | Sequence[int] = 1
    padding: Padding = 0
    dilation: int | Sequence[int] = 1
    groups: int = 1
    use_bias: bool = True
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32
    kernel_init: nn.initializers.Initializer = kaiming_normal_fan_out
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_ch = x.shape[-1]
        if in_ch % self.groups or self.features % self.groups:
            raise ValueError(
                f"{self.name}: in_channels={in_ch} and out_channels={self.features} "
                f"must both be divisible by groups={self.groups}"
            )
        kh, kw = pair(self.kernel_size)
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (kh, kw, in_ch // self.groups, self.features),
            self.param_dtype,
        )
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        y = lax.conv_general_dilated(
            x.astype(dtype),
            kernel.astype(dtype),
            window_strides=pair(self.stride),
            padding=conv_padding(self.padding),
            rhs_dilation=pair(self.dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
        )
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            y = y + bias.astype(dtype)
        return y
