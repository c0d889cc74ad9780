"""2-D convolution with PyTorch's padding, groups and dilation semantics."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from ..xla import materialize
from .padding import Padding, conv_padding, pair, window_taps
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

    A depthwise conv (``groups == in_channels == out_channels``, no dilation), such as
    ConvNeXt's 7x7 or Xception's separable convs, runs as
    :func:`depthwise_conv2d_shift` on CPU (``depthwise_impl='auto'``): the same result up
    to float32 summation order, without XLA:CPU's slow grouped convolutions. Also on CPU
    only, a grouped conv of at most 64 groups runs as one conv per group, a strided
    conv's input gradient as one stride-1 conv per phase of the stride, and a 1x1 conv's
    weight gradient as one matmul (:func:`_cpu_conv_ad`): XLA:CPU's own versions are
    slow (docs/performance.md).

    Attributes:
        features: output channels (torch ``out_channels``).
        kernel_size: ``k`` or ``(kh, kw)``.
        stride, padding, dilation, groups: as in torch.
        use_bias: torch ``bias``.
        depthwise_impl: how a depthwise conv runs: ``'shift'``, ``'conv'`` or ``'auto'``
            (see :class:`DepthwiseConv2d`); other convs ignore it.
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
        y = _conv(
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


def _explicit_padding(
    padding: Padding, size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]
):
    """Per-side padding ``((top, bottom), (left, right))`` of a torch or TF-'SAME' spec."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return ((0, 0), (0, 0))
        if padding.lower() != "same":
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        out = []
        for n, k, s in zip(size, kernel, stride, strict=True):
            total = max((-(-n // s) - 1) * s + k - n, 0)  # TF: the extra pixel goes bottom/right
            out.append((total // 2, total - total // 2))
        return tuple(out)
    ph, pw = pair(padding)
    return ((ph, ph), (pw, pw))


def _resolve_depthwise_impl(impl: str) -> str:
    if impl not in ("auto", "shift", "conv"):
        raise ValueError(f"depthwise impl must be 'auto', 'shift' or 'conv', got {impl!r}")
    if impl != "auto":
        return impl
    return "shift" if jax.default_backend() == "cpu" else "conv"


# On CPU a grouped conv with at most this many groups (ResNeXt's 32 or 64) runs as one conv
# per group: XLA:CPU's grouped convolutions are slow, their gradients very slow. ResNeXt's
# 3x3 conv, 32 groups of 4 channels at 56x56, batch 8: forward 124 -> 58 ms, forward and
# backward 10.4 s -> 138 ms. More groups (depthwise-like convs) would mean that many convs.
_MAX_SPLIT_GROUPS = 64


def _conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, int],
    padding: Padding,
    dilation: tuple[int, int],
    groups: int,
    depthwise_impl: str,
) -> jax.Array:
    """An NHWC x HWIO convolution; a depthwise one as shifted slices where ``depthwise_impl``
    says so (resolved here, so a bad value fails for every conv, not only depthwise ones);
    on CPU a grouped one as one conv per group, and each with :func:`_cpu_conv_ad`'s
    derivatives."""
    impl = _resolve_depthwise_impl(depthwise_impl)
    in_ch, out_ch = x.shape[-1], kernel.shape[-1]
    if impl == "shift" and groups == in_ch == out_ch and dilation == (1, 1):
        pad = _explicit_padding(padding, x.shape[1:3], kernel.shape[:2], stride)
        return depthwise_conv2d_shift(x, kernel, stride, pad)
    if jax.default_backend() != "cpu":
        return _lax_conv(x, kernel, stride, conv_padding(padding), groups, dilation)
    if 1 < groups <= _MAX_SPLIT_GROUPS:
        xs, ks = jnp.split(x, groups, axis=-1), jnp.split(kernel, groups, axis=-1)
        parts = [_cpu_conv(a, k, stride, padding, dilation) for a, k in zip(xs, ks, strict=True)]
        return jnp.concatenate(parts, axis=-1)
    return _cpu_conv(x, kernel, stride, padding, dilation, groups)


def _cpu_conv(x, kernel, stride, padding, dilation, groups=1):
    """A conv on CPU: without dilation, with :func:`_cpu_conv_ad`'s derivatives."""
    if dilation == (1, 1):
        pad = _explicit_padding(padding, x.shape[1:3], kernel.shape[:2], stride)
        return _cpu_conv_ad(x, kernel, stride, pad, groups)
    return _lax_conv(x, kernel, stride, conv_padding(padding), groups, dilation)


def _lax_conv(x, kernel, stride, padding, groups, dilation=(1, 1)):
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=stride,
        padding=padding,
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _cpu_conv_ad(x, kernel, stride, padding, groups):
    """A convolution (the forward is ``lax.conv_general_dilated``'s) whose derivatives
    XLA:CPU computes faster than JAX's own rule gives them.

    * A strided conv's tangent in ``x`` is :func:`_phase_conv`. JAX's rule differentiates
      a strided conv's input as a convolution of the output gradient dilated with zeros
      (``lhs_dilation``), which XLA:CPU runs in its own loop instead of Eigen, on four
      times the taps. The transpose of the phase form is ``s*s`` stride-1 convolutions and
      a strided interleave. ResNet-50's strided 3x3 convs, batch 32, input and weight
      gradients: 186 -> 104 ms at 56x56, 88 -> 63 ms at 28x28.
    * A 1x1 conv's tangent in ``kernel`` is a matmul (:func:`_pointwise_conv`), so its
      weight gradient is one matmul over the batch and the map, which XLA:CPU gives to
      YNNPACK. JAX's rule makes it a convolution over transposed copies of the input and
      the output gradient, in Eigen, which packs both into blocks before each matrix
      multiply: batch 32, 64->256 at 56x56, 73 -> 17 ms.
    """
    return _lax_conv(x, kernel, stride, padding, groups)


def _cpu_conv_ad_jvp(stride, padding, groups, primals, tangents):
    (x, kernel), (dx, dkernel) = primals, tangents
    y = _lax_conv(x, kernel, stride, padding, groups)
    # Symbolic zeros skip a term: a stem conv's input has no tangent, and a zero tangent
    # would still be convolved.
    terms = []
    if not isinstance(dx, SymbolicZero):
        if stride == (1, 1):
            terms.append(_lax_conv(dx, kernel, stride, padding, groups))
        else:
            terms.append(_phase_conv(dx, kernel, stride, padding, groups))
    if not isinstance(dkernel, SymbolicZero):
        if kernel.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)) and groups == 1:
            terms.append(_pointwise_conv(x, dkernel, stride))
        else:
            terms.append(_lax_conv(x, dkernel, stride, padding, groups))
    return y, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)


_cpu_conv_ad.defjvp(_cpu_conv_ad_jvp, symbolic_zeros=True)


def _pointwise_conv(x, kernel, stride):
    """An unpadded 1x1 convolution as one matmul of ``(N*H*W, C_in) x (C_in, C_out)``."""
    if stride != (1, 1):
        x = x[:, :: stride[0], :: stride[1]]
    n, h, w, c = x.shape
    y = jnp.dot(x.reshape(n * h * w, c), kernel.reshape(c, -1))
    return y.reshape(n, h, w, -1)


def _phase_conv(x, kernel, stride, padding, groups):
    """A strided convolution as a sum of stride-1 ones, one per phase ``(a, b)`` of the
    stride: ``y = sum conv(x_pad[a::sh, b::sw], kernel[a::sh, b::sw])``. The same linear
    map as ``_lax_conv(x, kernel, stride, padding, groups)`` up to float32 summation order."""
    (pt, pb), (pl, pr) = padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    (kh, kw), (sh, sw) = kernel.shape[:2], stride
    oh, ow = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    out = None
    for a in range(min(sh, kh)):
        for b in range(min(sw, kw)):
            k_ab = kernel[a::sh, b::sw]
            ma, mb = k_ab.shape[:2]
            x_ab = lax.slice(
                xp,
                (0, a, b, 0),
                (xp.shape[0], a + sh * (oh + ma - 2) + 1, b + sw * (ow + mb - 2) + 1, xp.shape[3]),
                (1, sh, sw, 1),
            )
            y = _lax_conv(x_ab, k_ab, (1, 1), ((0, 0), (0, 0)), groups)
            out = y if out is None else out + y
    return out


@partial(jax.jit, static_argnames=("stride", "padding"))
def depthwise_conv2d_shift(
    x: jax.Array, kernel: jax.Array, stride: tuple[int, int], padding
) -> jax.Array:
    """Depthwise conv as a sum of ``kh * kw`` strided slices times per-channel weights.

    ``kernel`` is ``(kh, kw, 1, C)``. The same result as ``lax.conv_general_dilated`` with
    ``feature_group_count=C`` up to float32 summation order, but XLA's CPU backend runs it
    7-14x faster forward and 10-45x faster backward (measured on EfficientNet's
    depthwise shapes, 3x3 and 5x5, stride 1 and 2), where grouped convs are a known weak spot.
    """
    kh, kw = kernel.shape[:2]
    taps, _ = window_taps(x, (kh, kw), stride, (1, 1), padding)
    out = None
    for t, tap in enumerate(taps):
        tap = tap * kernel[t // kw, t % kw, 0]
        out = tap if out is None else out + tap
    return out


class DepthwiseConv2d(nn.Module):
    """A depthwise ``torch.nn.Conv2d`` (``groups == in_channels == out_channels``), NHWC.

    Parameters are :class:`Conv2d`'s (``kernel`` ``(kh, kw, 1, C)``, ``bias``), so weights
    convert the same way. ``impl``: ``'shift'`` computes it as shifted slices
    (:func:`depthwise_conv2d_shift`, much faster under XLA on CPU), ``'conv'`` as a grouped
    ``lax`` convolution, ``'auto'`` (default) picks ``'shift'`` on CPU and ``'conv'`` on
    accelerators, whose grouped-conv kernels were not measured here.
    """

    kernel_size: int | Sequence[int] = 3
    stride: int | Sequence[int] = 1
    padding: Padding = 0
    use_bias: bool = True
    impl: str = "auto"
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
        y = _conv(
            x.astype(dtype),
            kernel.astype(dtype),
            pair(self.stride),
            self.padding,
            (1, 1),
            c,
            self.impl,
        )
        if self.use_bias:
            y = y + shaped_param(self, "bias", self.bias_init, (c,), self.param_dtype).astype(dtype)
        return y
