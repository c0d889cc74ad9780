"""2-D convolution with PyTorch's padding, groups and dilation semantics."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..xla import conv2d, depthwise_conv2d_shift, materialize
from .padding import Padding, pair
from .params import shaped_param

__all__ = [
    "Conv2d",
    "DepthwiseConv2d",
    "depthwise_conv2d_shift",
    "kaiming_normal_fan_out",
]

# torchvision initialises ResNet-style convs with kaiming_normal_(mode="fan_out", nonlinearity="relu").
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class Conv2d(nn.Module):
    """``torch.nn.Conv2d`` for NHWC inputs.

    Parameters are ``kernel`` of shape ``(kh, kw, in_channels // groups, out_channels)``
    (HWIO, the transpose of torch's OIHW) and ``bias``. Padding is explicit and
    symmetric as in torch, or ``'same'`` for TensorFlow-ported weights.

    How it is computed (XLA:CPU's fast lowerings, or the portable ``lax`` convolution that
    GPUs and TPUs run) is decided in one place, :func:`flaxcnn.xla.conv2d`, by the kernel
    switch (:func:`flaxcnn.kernels`); every implementation computes the same linear map.

    Attributes:
        features: output channels (torch ``out_channels``).
        kernel_size: ``k`` or ``(kh, kw)``.
        stride, padding, dilation, groups: as in torch.
        use_bias: torch ``bias``.
        depthwise_impl: how a depthwise conv runs: ``'shift'`` (shifted slices),
            ``'conv'`` (a grouped ``lax`` conv) or ``'auto'`` (the kernel switch decides);
            other convs ignore it.
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
    depthwise_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_ch = x.shape[-1]
        if in_ch % self.groups or self.features % self.groups:
            raise ValueError(
                f"{self.name}: in_channels={in_ch} and out_channels={self.features} "
                f"must both be divisible by groups={self.groups}"
            )
        kh, kw = pair(self.kernel_size)
        kernel = shaped_param(
            self,
            "kernel",
            self.kernel_init,
            (kh, kw, in_ch // self.groups, self.features),
            self.param_dtype,
        )
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        # Kept in memory for the weight gradient, not re-computed from its producers
        # (a no-op unless compiled with flaxcnn.compiler_options(); see flaxcnn.xla).
        x = materialize(x)
        y = conv2d(
            x.astype(dtype),
            kernel.astype(dtype),
            pair(self.stride),
            self.padding,
            pair(self.dilation),
            self.groups,
            self.depthwise_impl,
        )
        if self.use_bias:
            bias = shaped_param(self, "bias", self.bias_init, (self.features,), self.param_dtype)
            y = y + bias.astype(dtype)
        return y


class DepthwiseConv2d(nn.Module):
    """A depthwise ``torch.nn.Conv2d`` (``groups == in_channels == out_channels``), NHWC.

    Parameters are :class:`Conv2d`'s (``kernel`` ``(kh, kw, 1, C)``, ``bias``), so weights
    convert the same way. ``depthwise_impl`` (the name :class:`Conv2d` has for it):
    ``'shift'`` computes it as shifted slices
    (:func:`depthwise_conv2d_shift`, much faster under XLA on CPU), ``'conv'`` as a grouped
    ``lax`` convolution, ``'auto'`` (default) lets the kernel switch decide
    (:func:`flaxcnn.kernels`: ``'shift'`` on CPU, ``'conv'`` on the portable paths).
    """

    kernel_size: int | Sequence[int] = 3
    stride: int | Sequence[int] = 1
    padding: Padding = 0
    use_bias: bool = True
    depthwise_impl: str = "auto"
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32
    kernel_init: nn.initializers.Initializer = kaiming_normal_fan_out
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        k = pair(self.kernel_size)
        kernel = shaped_param(self, "kernel", self.kernel_init, (*k, 1, c), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        y = conv2d(
            x.astype(dtype),
            kernel.astype(dtype),
            pair(self.stride),
            self.padding,
            (1, 1),
            c,
            self.depthwise_impl,
        )
        if self.use_bias:
            y = y + shaped_param(self, "bias", self.bias_init, (c,), self.param_dtype).astype(dtype)
        return y
