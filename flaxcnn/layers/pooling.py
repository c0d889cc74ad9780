"""Pooling with PyTorch's exact window, ``ceil_mode`` and divisor semantics.

Flax's ``nn.max_pool``/``nn.avg_pool`` have neither ``ceil_mode`` nor torch's
``count_include_pad`` rule, and ``'SAME'`` pooling is not torch's padding; a
converted model that pools differently loses accuracy silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..xla import max_pool
from .padding import pair, pool_output_size

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "avg_pool2d",
    "global_avg_pool",
    "global_max_pool",
    "max_pool2d",
]


def _window_padding(
    hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    ceil_mode: bool,
) -> list[tuple[int, int]]:
    """Per-axis (lo, hi) padding that makes ``reduce_window`` produce torch's windows."""
    pads = []
    for size, k, s, p, d in zip(hw, kernel, stride, padding, dilation, strict=True):
        if p > (d * (k - 1) + 1) // 2:
            raise ValueError(
                f"pad should be at most half of effective kernel size, got pad={p}, kernel={k}"
            )
        out = pool_output_size(size, k, s, p, d, ceil_mode)
        needed = (out - 1) * s + d * (k - 1) + 1  # extent the windows cover
        pads.append((p, max(needed - size - p, 0)))
    return pads


def max_pool2d(
    x: jax.Array,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
) -> jax.Array:
    """``torch.nn.functional.max_pool2d`` on NHWC (padding counts as -inf).

    The forward is torch's on every kernel path. The gradient (:func:`flaxcnn.xla.max_pool`)
    differs only where a window holds tied maxima: with XLA:CPU's kernels it goes to torch's
    element (the first maximum in row-major window order, or the last NaN); on the portable
    paths (GPU, TPU) JAX's ``reduce_window`` rule decides which tied element gets it.
    """
    k = pair(kernel_size)
    s = pair(stride if stride is not None else kernel_size)
    d = pair(dilation)
    pads = tuple(_window_padding(x.shape[1:3], k, s, pair(padding), d, ceil_mode))
    return max_pool(x, k, s, d, pads)


def avg_pool2d(
    x: jax.Array,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> jax.Array:
    """``torch.nn.functional.avg_pool2d`` on NHWC.

    The divisor follows torch: with ``count_include_pad`` it counts the explicit
    zero padding inside the window but never the extra right/bottom overhang that
    ``ceil_mode`` adds; without it, only input pixels are counted.
    """
    k = pair(kernel_size)
    s = pair(stride if stride is not None else kernel_size)
    p = pair(padding)
    hw = tuple(x.shape[1:3])
    pads = _window_padding(hw, k, s, p, (1, 1), ceil_mode)
    cfg = [(0, 0), *pads, (0, 0)]
    summed = lax.reduce_window(x, np.array(0, x.dtype), lax.add, (1, *k, 1), (1, *s, 1), cfg)
    if divisor_override is not None:
        return summed / divisor_override
    # The divisor is data independent: compute it once, on the host, per axis.
    divs = []
    for size, kk, ss, pp, (lo, hi) in zip(hw, k, s, p, pads, strict=True):
        ones = np.zeros(size + lo + hi, np.float32)
        if count_include_pad:
            ones[: size + 2 * pp] = 1.0
        else:
            ones[lo : lo + size] = 1.0
        out = (size + lo + hi - kk) // ss + 1
        divs.append(np.array([ones[i * ss : i * ss + kk].sum() for i in range(out)], np.float32))
    div = jnp.asarray(np.outer(divs[0], divs[1])[None, :, :, None], dtype=x.dtype)
    return summed / div


def _adaptive_ranges(size: int, out: int) -> list[tuple[int, int]]:
    # torch: start = floor(i * size / out), end = ceil((i + 1) * size / out)
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    # float64, rounded once to the input's dtype (float32 entries are the same either way).
    m = np.zeros((out, size), np.float64)
    for i, (a, b) in enumerate(_adaptive_ranges(size, out)):
        m[i, a:b] = 1.0 / (b - a)
    return m


def adaptive_avg_pool2d(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
    """``torch.nn.functional.adaptive_avg_pool2d`` on NHWC, for any input size.

    Windows may overlap and differ in size when the input is not a multiple of the
    output (e.g. 13 -> 6); the pooling is a pair of averaging matrices, in the input's dtype.
    """
    oh, ow = pair(output_size)
    h, w = x.shape[1:3]
    if (h, w) == (oh, ow):
        return x
    if h % oh == 0 and w % ow == 0:
        return avg_pool2d(x, (h // oh, w // ow))
    mh = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
    mw = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", mh, x, mw, precision=lax.Precision.HIGHEST)


def adaptive_max_pool2d(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
    """``torch.nn.functional.adaptive_max_pool2d`` on NHWC (torch's window ranges)."""
    oh, ow = pair(output_size)
    h, w = x.shape[1:3]
    rows = [
        jnp.stack([x[:, a:b, c:d].max(axis=(1, 2)) for c, d in _adaptive_ranges(w, ow)], axis=1)
        for a, b in _adaptive_ranges(h, oh)
    ]
    return jnp.stack(rows, axis=1)


def global_avg_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
    """Mean over H and W (accumulated in float32 for low-precision inputs)."""
    return jnp.mean(
        x, axis=(1, 2), keepdims=keepdims, dtype=jnp.promote_types(x.dtype, jnp.float32)
    ).astype(x.dtype)


def global_max_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
    """Max over H and W."""
    return jnp.max(x, axis=(1, 2), keepdims=keepdims)
