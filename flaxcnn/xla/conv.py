"""Convolutions as XLA runs them fastest: the one function every flaxcnn conv calls.

:func:`conv2d` computes a torch-semantics convolution (NHWC x HWIO). Under the portable
kernels (:mod:`flaxcnn.xla._switch`; what GPUs and TPUs always run) it is one
``lax.conv_general_dilated`` (``feature_group_count`` for groups) with JAX's own derivatives.
Under ``'auto'`` on CPU it takes XLA:CPU lowerings that compute the same linear map up to
float32 summation order, because XLA:CPU's own versions are slow (docs/performance-log.md):

* a depthwise conv as ``kh * kw`` shifted slices (:func:`depthwise_conv2d_shift`);
* a grouped conv of at most :data:`MAX_SPLIT_GROUPS` groups as one conv per group
  (:func:`_grouped_conv_ad`: a loop over the groups forward, separate convs in its
  derivatives);
* every undilated conv with :func:`_cpu_conv_ad`'s derivatives (a strided conv's input
  gradient as stride-1 convs per phase, a 1x1 conv's weight gradient as one matmul).

A depthwise conv's implementation can also be chosen per layer (``depthwise_impl``
``'shift'`` or ``'conv'``), on every backend; ``'auto'`` follows the kernel switch.
"""

from __future__ import annotations

import functools
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from ..layers.padding import Padding, conv_padding, explicit_padding, window_taps
from ._switch import cpu_kernels

__all__ = ["DEPTHWISE_IMPLS", "MAX_SPLIT_GROUPS", "conv2d", "depthwise_conv2d_shift"]

DEPTHWISE_IMPLS = ("auto", "shift", "conv")


def _resolve_depthwise_impl(impl: str) -> str:
    if impl not in DEPTHWISE_IMPLS:
        raise ValueError(f"depthwise impl must be one of {DEPTHWISE_IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    return "shift" if cpu_kernels() else "conv"


# On CPU a grouped conv with at most this many groups (ResNeXt's 32 or 64) runs as one conv
# per group: XLA:CPU's grouped convolutions are slow, their gradients very slow. More groups
# (depthwise-like convs) would mean that many convs.
MAX_SPLIT_GROUPS = 64


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, int],
    padding: Padding,
    dilation: tuple[int, int],
    groups: int,
    depthwise_impl: str,
) -> jax.Array:
    """An NHWC x HWIO convolution with torch's padding (``int``/pair, or TF ``'same'``), the
    implementation chosen as the module docstring says. ``depthwise_impl`` is resolved here,
    so a bad value fails for every conv, not only depthwise ones."""
    impl = _resolve_depthwise_impl(depthwise_impl)
    in_ch, out_ch = x.shape[-1], kernel.shape[-1]
    if impl == "shift" and groups == in_ch == out_ch and dilation == (1, 1):
        pad = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], stride)
        return depthwise_conv2d_shift(x, kernel, stride, pad)
    if not cpu_kernels():
        return _lax_conv(x, kernel, stride, conv_padding(padding), groups, dilation)
    if 1 < groups <= MAX_SPLIT_GROUPS:
        if dilation == (1, 1):
            pad = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], stride)
            return _grouped_conv_ad(x, kernel, stride, pad, groups)
        xs, ks = jnp.split(x, groups, axis=-1), jnp.split(kernel, groups, axis=-1)
        parts = [_cpu_conv(a, k, stride, padding, dilation) for a, k in zip(xs, ks, strict=True)]
        return jnp.concatenate(parts, axis=-1)
    return _cpu_conv(x, kernel, stride, padding, dilation, groups)


def _cpu_conv(x, kernel, stride, padding, dilation, groups=1):
    """A conv on CPU: without dilation, with :func:`_cpu_conv_ad`'s derivatives."""
    if dilation == (1, 1):
        pad = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], stride)
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
      a strided interleave.
    * A 1x1 conv's tangent in ``kernel`` is a matmul (:func:`_pointwise_conv`), so its
      weight gradient is one matmul over the batch and the map, which XLA:CPU gives to
      YNNPACK. JAX's rule makes it a convolution over transposed copies of the input and
      the output gradient, in Eigen, which packs both into blocks before each matrix
      multiply.
    """
    return _lax_conv(x, kernel, stride, padding, groups)


def _conv_tangent(x, kernel, dx, dkernel, stride, padding, groups):
    """The tangent of ``_lax_conv(x, kernel, ...)`` as :func:`_cpu_conv_ad` computes it,
    ``None`` for a zero one. ``dx`` or ``dkernel`` is ``None`` where its tangent is zero
    (symbolic zeros skip a term: a stem conv's input has no tangent, and a zero tangent
    would still be convolved)."""
    terms = []
    if dx is not None:
        if stride == (1, 1):
            terms.append(_lax_conv(dx, kernel, stride, padding, groups))
        else:
            terms.append(_phase_conv(dx, kernel, stride, padding, groups))
    if dkernel is not None:
        if kernel.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)) and groups == 1:
            terms.append(_pointwise_conv(x, dkernel, stride))
        else:
            terms.append(_lax_conv(x, dkernel, stride, padding, groups))
    return functools.reduce(jnp.add, terms) if terms else None


def _nonzero(t):
    return None if isinstance(t, SymbolicZero) else t


def _cpu_conv_ad_jvp(stride, padding, groups, primals, tangents):
    (x, kernel), (dx, dkernel) = primals, tangents
    y = _lax_conv(x, kernel, stride, padding, groups)
    dy = _conv_tangent(x, kernel, _nonzero(dx), _nonzero(dkernel), stride, padding, groups)
    return y, jnp.zeros_like(y) if dy is None else dy


_cpu_conv_ad.defjvp(_cpu_conv_ad_jvp, symbolic_zeros=True)


# How many groups one iteration of the grouped forward loop computes (XLA unrolls them):
# ResNeXt-50, batch 8: 8 gave the fastest inference (0.77 s; 0.99 s with 1; 0.88 s as 32
# separate convs), and the compile stays a fraction of 32 separate convs'.
GROUP_UNROLL = 8


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _grouped_conv_ad(x, kernel, stride, padding, groups):
    """A grouped convolution as one convolution per group, on CPU, where XLA's grouped
    convolutions are slow (forward) and very slow (their derivatives).

    The forward pass loops over the groups (``lax.scan``, :data:`GROUP_UNROLL` per
    iteration): one conv compiled instead of ``groups``, so a ResNeXt compiles in a
    fraction of the time of separate convs and runs its inference as fast. The derivatives
    are separate convs per group (:func:`_conv_tangent`'s, so strided and 1x1 groups get
    :func:`_cpu_conv_ad`'s faster rules): differentiated through the loop, the backward
    pass was 1.5x slower (stacked residuals, a serial loop).
    """
    n, h, w, _ = x.shape
    kh, kw, cg, out = kernel.shape
    xs = jnp.moveaxis(x.reshape(n, h, w, groups, cg), 3, 0)
    ks = jnp.moveaxis(kernel.reshape(kh, kw, cg, groups, out // groups), 3, 0)

    def body(carry, xk):
        return carry, _lax_conv(xk[0], xk[1], stride, padding, 1)

    _, ys = lax.scan(body, None, (xs, ks), unroll=min(GROUP_UNROLL, groups))
    return jnp.moveaxis(ys, 0, 3).reshape(*ys.shape[1:4], out)


def _grouped_conv_ad_jvp(stride, padding, groups, primals, tangents):
    (x, kernel), (dx, dkernel) = primals, tangents
    y = _grouped_conv_ad(x, kernel, stride, padding, groups)
    dx, dkernel = _nonzero(dx), _nonzero(dkernel)
    if dx is None and dkernel is None:
        return y, jnp.zeros_like(y)

    def split(a):
        return [None] * groups if a is None else jnp.split(a, groups, axis=-1)

    parts = [
        _conv_tangent(*args, stride, padding, 1)
        for args in zip(split(x), split(kernel), split(dx), split(dkernel), strict=True)
    ]
    return y, jnp.concatenate(parts, axis=-1)


_grouped_conv_ad.defjvp(_grouped_conv_ad_jvp, symbolic_zeros=True)


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
    ``feature_group_count=C`` up to float32 summation order; XLA:CPU runs it several times
    faster forward and backward, grouped convolutions being its weak spot
    (docs/performance-log.md).
    """
    kh, kw = kernel.shape[:2]
    # Products summed in float32 (or wider), rounded once: a bf16 running sum of kh*kw terms
    # doubled a trained depthwise layer's error against torch autocast's (a convolution
    # accumulates in float32 on every backend).
    acc = jnp.promote_types(x.dtype, jnp.float32)
    taps, _ = window_taps(x, (kh, kw), stride, (1, 1), padding)
    out = None
    for t, tap in enumerate(taps):
        tap = tap.astype(acc) * kernel[t // kw, t % kw, 0].astype(acc)
        out = tap if out is None else out + tap
    return out.astype(jnp.result_type(x.dtype, kernel.dtype))
