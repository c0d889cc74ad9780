"""Resizing with ``torch.nn.functional.interpolate``'s exact sampling grid (NHWC).

``jax.image.resize`` samples at half-pixel centres but antialiases when it downsamples,
uses a different cubic (Keys a=-0.5) and has neither torch's ``align_corners=True`` grid
nor its ``'nearest'`` rule (``floor(dst * in / out)``, not rounding). A model that was
trained with torch's resize needs torch's resize, so this module rebuilds it: per axis,
static source indices and weights (computed as torch's CPU kernel does: in float32, or for
the linear and cubic modes in float64 on float64 inputs) and a gather, applied to H then W
(the 2-D kernels are separable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .padding import pair

__all__ = ["MODES", "interpolate"]

MODES = ("nearest", "nearest-exact", "bilinear", "bicubic")
# torch's bicubic uses Keys' cubic convolution with A = -0.75 (as OpenCV does).
_CUBIC_A = -0.75


def _scale(
    in_size: int, out_size: int, align_corners: bool, scale: float | None, ft=np.float32
) -> np.floating:
    """torch's ``area_pixel_compute_scale``: source pixels per destination pixel, in ``ft``."""
    if align_corners:
        return ft((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    if scale is not None and scale > 0:
        return ft(1.0 / scale)
    return ft(in_size) / ft(out_size)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    a = t.dtype.type(_CUBIC_A)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _axis_taps(
    in_size: int,
    out_size: int,
    mode: str,
    align_corners: bool,
    scale: float | None,
    ft=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Source indices ``(out, taps)`` and their weights ``(out, taps)`` along one axis.

    ``ft`` is the float type of the linear and cubic grids: torch computes them in its
    ``opmath`` type (float32 for float32/bf16/fp16 inputs, float64 for float64 ones), and
    the nearest modes' indices always in float32."""
    dst = np.arange(out_size, dtype=np.float32)
    if mode in ("nearest", "nearest-exact"):
        s = _scale(in_size, out_size, False, scale)
        offset = np.float32(0.5 if mode == "nearest-exact" else 0.0)
        idx = np.minimum(np.floor((dst + offset) * s).astype(np.int64), in_size - 1)
        return idx[:, None], np.ones((out_size, 1), np.float32)
    dst = dst.astype(ft)
    s = _scale(in_size, out_size, align_corners, scale, ft)
    src = dst * s if align_corners else s * (dst + ft(0.5)) - ft(0.5)
    if mode == "bilinear":
        src = np.maximum(src, ft(0.0))  # torch clamps for linear modes, not for cubic
        i0 = np.floor(src).astype(np.int64)
        lam = (src - i0).astype(ft)
        idx = np.stack([i0, np.minimum(i0 + 1, in_size - 1)], axis=-1)
        return np.minimum(idx, in_size - 1), np.stack([1 - lam, lam], axis=-1)
    i0 = np.floor(src).astype(np.int64)
    t = (src - i0).astype(ft)
    idx = np.clip(i0[:, None] + np.arange(-1, 3), 0, in_size - 1)  # border pixels repeat
    return idx, _cubic_weights(t).astype(ft)


def _aa_filter(mode: str, x: np.ndarray) -> np.ndarray:
    """torch's antialiasing filters: the triangle, and Keys' cubic with A = -0.5 (PIL's)."""
    x = np.abs(x)
    if mode == "bilinear":
        return np.where(x < 1, 1 - x, 0).astype(x.dtype)
    a = x.dtype.type(-0.5)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0)).astype(x.dtype)


def _aa_axis_taps(
    in_size: int,
    out_size: int,
    mode: str,
    align_corners: bool,
    scale: float | None,
    ft=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights of torch's ``antialias=True`` resampling along one axis.

    torch's ``_compute_weights_aa``: when shrinking by ``s``, the filter is stretched by
    ``s`` (support ``2s`` taps each side for bicubic, ``s`` for bilinear) and every output
    pixel's weights are normalised to sum to one, so no input pixel is skipped; when
    enlarging, the plain filter with normalised weights. Rows have different tap counts:
    short rows are padded with zero weights."""
    s = _scale(in_size, out_size, align_corners, scale, ft)
    half = ft(1.0 if mode == "bilinear" else 2.0)
    support = half * s if s >= 1 else half
    invscale = ft(1) / s if s >= 1 else ft(1)
    centers = s * (np.arange(out_size, dtype=ft) + ft(0.5))
    xmin = np.maximum((centers - support + ft(0.5)).astype(np.int64), 0)
    xmax = np.minimum((centers + support + ft(0.5)).astype(np.int64), in_size)
    taps = int((xmax - xmin).max())
    j = np.arange(taps)
    w = _aa_filter(mode, ((j + xmin[:, None]).astype(ft) - centers[:, None] + ft(0.5)) * invscale)
    w = np.where(j < (xmax - xmin)[:, None], w, ft(0))
    total = w.sum(axis=1, keepdims=True, dtype=ft)
    w = np.where(total != 0, w / np.where(total != 0, total, ft(1)), w).astype(ft)
    return np.minimum(xmin[:, None] + j, in_size - 1), w


def _resize_axis(x: jax.Array, axis: int, idx: np.ndarray, w: np.ndarray) -> jax.Array:
    shape = [1] * x.ndim
    shape[axis] = idx.shape[0]
    out = None
    for t in range(idx.shape[1]):
        term = jnp.take(x, jnp.asarray(idx[:, t]), axis=axis)
        if idx.shape[1] > 1:
            term = term * jnp.asarray(w[:, t], x.dtype).reshape(shape)
        out = term if out is None else out + term
    return out


def interpolate(
    x: jax.Array,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    antialias: bool = False,
) -> jax.Array:
    """``torch.nn.functional.interpolate`` for an NHWC batch.

    Args:
        x: ``(N, H, W, C)``.
        size: output ``(H, W)`` (or one int for both); exclusive with ``scale_factor``.
        scale_factor: multiplier(s) of H and W; the output side is ``floor(side * factor)``
            and the sampling grid uses ``1 / factor``, as torch does without
            ``recompute_scale_factor``.
        mode: ``'nearest'`` (torch's legacy ``floor(dst * in / out)``), ``'nearest-exact'``,
            ``'bilinear'`` or ``'bicubic'`` (A = -0.75, border pixels repeated).
        align_corners: for bilinear/bicubic, as torch (default ``False``); must be ``None``
            for the nearest modes.
        antialias: torch's ``antialias=True`` for bilinear/bicubic: a filter stretched over
            every input pixel when shrinking, and for bicubic Keys' A = -0.5 (as PIL), not
            -0.75, in both directions (timm resamples ViT position embeddings this way).

    Returns:
        ``(N, H', W', C)`` in ``x``'s dtype.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if x.ndim != 4:
        raise ValueError(f"interpolate expects an NHWC batch, got shape {tuple(x.shape)}")
    if mode.startswith("nearest"):
        if antialias:
            raise ValueError("antialias only applies to 'bilinear' and 'bicubic' (as in torch)")
        if align_corners is not None:
            raise ValueError("align_corners only applies to 'bilinear' and 'bicubic' (as in torch)")
        align_corners = False
    align_corners = bool(align_corners)
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    in_hw = x.shape[1:3]
    if size is not None:
        out_hw, scales = pair(size), (None, None)
    else:
        factors = (
            (float(scale_factor),) * 2
            if isinstance(scale_factor, (int, float))
            else tuple(float(f) for f in scale_factor)
        )
        if len(factors) != 2:
            raise ValueError(f"scale_factor must be a number or a pair, got {scale_factor!r}")
        out_hw = tuple(math.floor(n * f) for n, f in zip(in_hw, factors, strict=True))
        scales = factors
    if min(out_hw) < 1:
        raise ValueError(f"output size {out_hw} must be positive")
    taps = _aa_axis_taps if antialias else _axis_taps
    # torch resamples W (the contiguous axis) first with antialias, H first without.
    axes = (2, 1) if antialias else (1, 2)
    for axis in axes:
        n_in, n_out, sc = in_hw[axis - 1], out_hw[axis - 1], scales[axis - 1]
        if n_in == n_out and sc in (None, 1.0):
            continue  # identity on this axis for every mode (also align_corners)
        ft = np.float64 if x.dtype == jnp.float64 else np.float32
        idx, w = taps(n_in, n_out, mode, align_corners, sc, ft)
        x = _resize_axis(x, axis, idx, w)
    return x
