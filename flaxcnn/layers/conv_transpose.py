"""Transposed 2-D convolution with ``torch.nn.ConvTranspose2d``'s exact semantics.

Flax's ``nn.ConvTranspose`` pads the dilated input rather than cropping the output as
torch does, and has no ``output_padding`` or ``groups``; weights converted from torch
would land on the wrong pixels. This layer computes the transposed convolution as the
gradient of a forward convolution: the input dilated by ``stride`` (``lhs_dilation``),
padded by ``dilation * (k - 1) - padding`` on both sides (``output_padding`` more on the
bottom/right), convolved with the spatially flipped kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from .padding import pair

__all__ = ["ConvTranspose2d", "conv_transpose_output_size"]


def conv_transpose_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length along one axis, as torch's ``ConvTranspose2d`` documents it."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


class ConvTranspose2d(nn.Module):
    """``torch.nn.ConvTranspose2d`` for NHWC inputs.

    The ``kernel`` parameter has shape ``(kh, kw, out_channels // groups, in_channels)``:
    torch's ``(in_channels, out_channels // groups, kh, kw)`` with the same transpose
    ``(2, 3, 1, 0)`` that takes a ``Conv2d`` weight from OIHW to HWIO, so the generic
    converter maps torch weights with no extra rule. It is stored unflipped, as torch
    stores it; the flip happens in the forward pass.

    Attributes:
        features: output channels (torch ``out_channels``).
        kernel_size, stride, padding, output_padding, groups, dilation: as in torch;
            ``output_padding`` must be smaller than ``stride`` or ``dilation``.
        use_bias: torch ``bias``.
    """

    features: int
    kernel_size: int | Sequence[int] = 2
    stride: int | Sequence[int] = 1
    padding: int | Sequence[int] = 0
    output_padding: int | Sequence[int] = 0
    groups: int = 1
    dilation: int | Sequence[int] = 1
    use_bias: bool = True
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32
    # torch's default init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)), fan_in = out/groups*kh*kw.
    kernel_init: nn.initializers.Initializer = nn.initializers.variance_scaling(
        1.0 / 3.0, "fan_in", "uniform", in_axis=2, out_axis=3
    )
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_ch, g = x.shape[-1], self.groups
        if in_ch % g or self.features % g:
            raise ValueError(
                f"{self.name}: in_channels={in_ch} and out_channels={self.features} "
                f"must both be divisible by groups={g}"
            )
        (kh, kw), stride = pair(self.kernel_size), pair(self.stride)
        padding, out_pad, dil = pair(self.padding), pair(self.output_padding), pair(self.dilation)
        for op, s, d in zip(out_pad, stride, dil, strict=True):
            if op >= max(s, d):
                raise ValueError(
                    f"{self.name}: output_padding {out_pad} must be smaller than stride {stride} "
                    f"or dilation {dil} (as torch requires)"
                )
        kernel = self.param(
            "kernel", self.kernel_init, (kh, kw, self.features // g, in_ch), self.param_dtype
        )
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        # (kh, kw, out/g, g * in/g) -> the forward conv's grouped HWIO (kh, kw, in/g, g * out/g),
        # flipped in space.
        k = kernel.astype(dtype).reshape(kh, kw, self.features // g, g, in_ch // g)
        k = k.transpose(0, 1, 4, 3, 2).reshape(kh, kw, in_ch // g, self.features)
        k = k[::-1, ::-1]
        pads = [
            (d * (n - 1) - p, d * (n - 1) - p + op)
            for n, p, op, d in zip((kh, kw), padding, out_pad, dil, strict=True)
        ]
        y = lax.conv_general_dilated(
            x.astype(dtype),
            k,
            window_strides=(1, 1),
            padding=pads,
            lhs_dilation=stride,
            rhs_dilation=dil,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=g,
        )
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            y = y + bias.astype(dtype)
        return y
