"""Transposed 2-D convolution with ``torch.nn.ConvTranspose2d``'s exact semantics.

Flax's ``nn.ConvTranspose`` pads the dilated input rather than cropping the output as
torch does, and has no ``output_padding`` or ``groups``; weights converted from torch
would land on the wrong pixels. This layer follows torch's definition (the gradient of
``Conv2d``): each input pixel scatters ``kernel``-weighted copies onto a grid of spacing
``stride``, taps ``dilation`` apart; ``padding`` is then cropped from both sides and
``output_padding`` adds rows/columns at the bottom/right. (Written as a forward conv, this
is the input dilated by ``stride`` and padded by ``dilation * (k - 1) - padding``,
convolved with the spatially flipped kernel; XLA on CPU runs that form very slowly.)
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from .padding import pair
from .params import shaped_param

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
    stores it (tap ``(a, b)`` moves input pixel ``(i, j)`` to ``(i*s + a*d, j*s + b*d)``).

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
        kernel = shaped_param(
            self, "kernel", self.kernel_init, (kh, kw, self.features // g, in_ch), self.param_dtype
        )
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        y = _conv_transpose(x.astype(dtype), kernel.astype(dtype), stride, padding, out_pad, dil, g)
        if self.use_bias:
            bias = shaped_param(self, "bias", self.bias_init, (self.features,), self.param_dtype)
            y = y + bias.astype(dtype)
        return y


def _conv_transpose(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, int],
    padding: tuple[int, int],
    output_padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> jax.Array:
    """Scatter form: every kernel tap is a matmul whose result lands on a strided grid.

    Tap ``(a, b)`` sends input pixel ``(i, j)`` to ``(i * s + a * d, j * s + b * d)`` of the
    uncropped output; torch then crops ``padding`` from both sides (``output_padding``
    extends the bottom/right). XLA's CPU convolution with ``lhs_dilation`` (the textbook
    formulation) is orders of magnitude slower, so the taps are written out.
    """
    n, h, w, cin = x.shape
    kh, kw, cout_g, _ = kernel.shape
    xg = x.reshape(n, h, w, groups, cin // groups)
    kg = kernel.reshape(kh, kw, cout_g, groups, cin // groups)
    size = [
        (m - 1) * s - 2 * p + d * (k - 1) + op + 1
        for m, k, s, p, op, d in zip(
            (h, w), (kh, kw), stride, padding, output_padding, dilation, strict=True
        )
    ]
    if min(size) < 1:
        raise ValueError(f"ConvTranspose2d output size {tuple(size)} is not positive")
    # The uncropped output, long enough for the crop [padding, padding + size).
    full = [
        max((m - 1) * s + d * (k - 1) + 1, p + o)
        for m, k, s, d, p, o in zip((h, w), (kh, kw), stride, dilation, padding, size, strict=True)
    ]
    zero = jnp.zeros((), x.dtype)
    y = None
    for a in range(kh):
        for b in range(kw):
            tap = jnp.einsum("nhwgi,ogi->nhwgo", xg, kg[a, b]).reshape(n, h, w, groups * cout_g)
            lo = (a * dilation[0], b * dilation[1])
            cfg = [(0, 0, 0)]
            for axis, m in enumerate((h, w)):
                span = (m - 1) * stride[axis] + 1
                cfg.append((lo[axis], full[axis] - lo[axis] - span, stride[axis] - 1))
            tap = lax.pad(tap, zero, [*cfg, (0, 0, 0)])
            y = tap if y is None else y + tap
    return y[:, padding[0] : padding[0] + size[0], padding[1] : padding[1] + size[1]]
