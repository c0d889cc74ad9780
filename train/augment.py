"""On-device batch augmentations, run inside the jitted train step.

Images arrive as float32 ``(B, H, W, C)`` in [0, 1]; every function keeps that shape and
range (mixup and cutmix also return soft targets). Each example draws its own randomness
from one key, and jax's partitionable threefry makes the draws independent of how the
batch is sharded, so 1 device and 8 devices augment identically.

* :func:`random_resized_crop`: Inception-style crop of a random area and aspect ratio,
  resized back to the input size (bilinear).
* :func:`random_translate`: zero-pad and crop back at a random offset, the "4 pixels
  padded on each side, a 32x32 crop" of He et al.'s CIFAR recipe (torchvision's
  ``RandomCrop(32, padding=4)``).
* :func:`hflip`, :func:`color_jitter` (brightness, contrast, saturation),
  :func:`gaussian_noise`, :func:`random_erasing` (Zhong et al., 2017).
* :func:`mixup` (Zhang et al., 2018) and :func:`cutmix` (Yun et al., 2019) on the batch.
* :func:`salt_and_pepper`: each pixel set to white or black with a given probability.
* :func:`randaugment` (Cubuk et al., 2020): ``num_ops`` ops per image drawn from
  torchvision's ``transforms.v2.RandAugment`` list at one ``magnitude``, each as its
  torchvision function below (the op list and magnitude mapping are torchvision's).

The ops RandAugment draws from are also public, each its
``torchvision.transforms.v2.functional`` namesake on a float image (``tests/train/
test_augment.py`` compares them on a photo): :func:`rotate`, :func:`affine` (rotation,
translation, scale, shear), :func:`adjust_brightness`, :func:`adjust_contrast`,
:func:`adjust_saturation`, :func:`adjust_sharpness`, :func:`posterize`, :func:`solarize`,
:func:`autocontrast`, :func:`equalize`. Exactly for brightness and the ops on uint8 levels
(posterize, solarize, autocontrast, equalize); within 2 float32 ulps for contrast,
saturation and sharpness; within 5.5e-6 for bilinear resampling (nearest: equal but at
rounding ties); each docstring says why. Their parameters are scalars (one value for the
batch) or ``(B,)`` arrays (one per image).

For segmentation the crop and the flip take the batch's masks too and move their pixels
identically (``mask=``); the other augmentations do not move pixels, except RandAugment's
geometric ops, which do not take masks (:func:`augment_batch` refuses it with masks).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .checks import parse_randaugment

__all__ = [
    "RANDAUGMENT_OPS",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_sharpness",
    "affine",
    "augment_batch",
    "autocontrast",
    "color_jitter",
    "cutmix",
    "equalize",
    "gaussian_noise",
    "hflip",
    "mixup",
    "parse_randaugment",
    "posterize",
    "randaugment",
    "randaugment_magnitudes",
    "random_erasing",
    "random_resized_crop",
    "random_translate",
    "rotate",
    "salt_and_pepper",
    "solarize",
    "translate",
]


def _per_example(key: jax.Array, n: int) -> jax.Array:
    return jax.random.split(key, n)


def _crop_box(
    key: jax.Array, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[jax.Array, jax.Array]:
    """One random crop as the ``(scale, translation)`` that maps it onto the ``h x w`` frame."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    area = jax.random.uniform(k1, (), minval=scale[0], maxval=scale[1]) * h * w
    log_r = jax.random.uniform(k2, (), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1]))
    r = jnp.exp(log_r)
    ch = jnp.clip(jnp.sqrt(area / r), 1.0, h)
    cw = jnp.clip(jnp.sqrt(area * r), 1.0, w)
    top = jax.random.uniform(k3, ()) * (h - ch)
    left = jax.random.uniform(k4, ()) * (w - cw)
    s = jnp.stack([h / ch, w / cw])
    return s, -jnp.stack([top, left]) * s


def random_resized_crop(
    key: jax.Array,
    x: jax.Array,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    mask: jax.Array | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Crop a random ``scale`` fraction of the area at a random aspect ``ratio``; resize back.

    With ``mask`` (``(B, H, W)`` per-pixel labels) returns ``(x, mask)``: the mask gets the
    same crop, resampled by nearest neighbour (labels must not be interpolated) at the
    pixel centres the bilinear image resampling uses."""
    b, h, w, c = x.shape
    keys = _per_example(key, b)

    def one(k, img):
        s, t = _crop_box(k, h, w, scale, ratio)
        return jax.image.scale_and_translate(
            img, (h, w, c), (0, 1), s, t, method="linear", antialias=False
        )

    def one_mask(k, m):
        s, t = _crop_box(k, h, w, scale, ratio)
        # Output pixel i samples input coordinate (i + 0.5 - t) / s - 0.5, as in
        # scale_and_translate; the nearest input pixel is the floor of that plus 0.5.
        rows = jnp.floor((jnp.arange(h) + 0.5 - t[0]) / s[0]).astype(jnp.int32)
        cols = jnp.floor((jnp.arange(w) + 0.5 - t[1]) / s[1]).astype(jnp.int32)
        return m[jnp.clip(rows, 0, h - 1)][:, jnp.clip(cols, 0, w - 1)]

    out = jax.vmap(one)(keys, x)
    if mask is None:
        return out
    return out, jax.vmap(one_mask)(keys, mask)


def translate(x: jax.Array, offsets: jax.Array, pad: int) -> jax.Array:
    """Each image zero-padded by ``pad`` on every side, then cropped back to its size with
    its top-left corner at ``offsets[i] = (top, left)`` of the padded image (``0 ... 2 *
    pad``): torchvision's ``crop(pad(img, pad), top, left, h, w)``, which is also
    :func:`affine` by ``translate=(pad - left, pad - top)`` (the content moves right and
    down by those pixels; zeros come in), as RandAugment's TranslateX / TranslateY."""
    _, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))(
        padded, offsets
    )


def random_translate(key: jax.Array, x: jax.Array, pad: int = 4) -> jax.Array:
    """:func:`translate` by a uniform random offset per image (each of the ``(2 * pad +
    1) ** 2`` equally likely), as torchvision's ``RandomCrop(size, padding=pad)``."""
    offsets = jax.vmap(lambda k: jax.random.randint(k, (2,), 0, 2 * pad + 1))(
        _per_example(key, x.shape[0])
    )
    return translate(x, offsets, pad)


def hflip(
    key: jax.Array, x: jax.Array, p: float = 0.5, *, mask: jax.Array | None = None
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Mirror each image left-right with probability ``p`` (and its ``mask`` with it: then
    ``(x, mask)`` is returned)."""
    flip = jax.random.bernoulli(key, p, (x.shape[0], 1, 1, 1))
    out = jnp.where(flip, x[:, :, ::-1], x)
    if mask is None:
        return out
    return out, jnp.where(flip[..., 0], mask[:, :, ::-1], mask)


def color_jitter(
    key: jax.Array,
    x: jax.Array,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
) -> jax.Array:
    """Scale brightness, contrast (around the image mean) and saturation (around its grey)
    by factors drawn uniformly from ``[1 - s, 1 + s]``; clipped to [0, 1]."""
    b = x.shape[0]
    kb, kc, ks = jax.random.split(key, 3)

    def factor(k, s):
        return jax.random.uniform(k, (b, 1, 1, 1), minval=1 - s, maxval=1 + s)

    x = x * factor(kb, brightness)
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    x = mean + (x - mean) * factor(kc, contrast)
    if x.shape[-1] == 3:
        grey = jnp.sum(x * jnp.array([0.299, 0.587, 0.114], x.dtype), axis=-1, keepdims=True)
        x = grey + (x - grey) * factor(ks, saturation)
    return jnp.clip(x, 0.0, 1.0)


def gaussian_noise(key: jax.Array, x: jax.Array, std: float = 0.05) -> jax.Array:
    """Add N(0, std^2) noise to every pixel; clipped to [0, 1]."""
    return jnp.clip(x + std * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)


def random_erasing(
    key: jax.Array,
    x: jax.Array,
    p: float = 0.25,
    scale: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> jax.Array:
    """With probability ``p`` replace a random rectangle of each image by uniform noise."""
    b, h, w, _ = x.shape
    k0, k1, k2, k3, k4, k5 = jax.random.split(key, 6)
    apply = jax.random.bernoulli(k0, p, (b,))
    area = jax.random.uniform(k1, (b,), minval=scale[0], maxval=scale[1]) * h * w
    r = jnp.exp(jax.random.uniform(k2, (b,), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1])))
    eh = jnp.clip(jnp.sqrt(area * r), 1, h)
    ew = jnp.clip(jnp.sqrt(area / r), 1, w)
    top = jax.random.uniform(k3, (b,)) * (h - eh)
    left = jax.random.uniform(k4, (b,)) * (w - ew)
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + eh)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + ew)[:, None, None])
        & apply[:, None, None]
    )
    noise = jax.random.uniform(k5, x.shape, x.dtype)
    return jnp.where(inside[..., None], noise, x)


def _partner(key: jax.Array, n: int) -> jax.Array:
    return jax.random.permutation(key, n)


def mixup(
    key: jax.Array, x: jax.Array, y: jax.Array, alpha: float = 0.2
) -> tuple[jax.Array, jax.Array]:
    """Blend the batch with a permutation of itself by ``lam ~ Beta(alpha, alpha)``;
    ``y`` are (soft) one-hot targets, blended alike."""
    k1, k2 = jax.random.split(key)
    lam = jax.random.beta(k1, alpha, alpha)
    perm = _partner(k2, x.shape[0])
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix(
    key: jax.Array, x: jax.Array, y: jax.Array, alpha: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Paste a random box from a permuted batch; targets mixed by the box's true area."""
    b, h, w, _ = x.shape
    k1, k2, k3, k4 = jax.random.split(key, 4)
    lam = jax.random.beta(k1, alpha, alpha)
    cut = jnp.sqrt(1.0 - lam)
    ch, cw = cut * h, cut * w
    cy = jax.random.uniform(k2, ()) * h
    cx = jax.random.uniform(k3, ()) * w
    y0, y1 = jnp.clip(jnp.round(cy - ch / 2), 0, h), jnp.clip(jnp.round(cy + ch / 2), 0, h)
    x0, x1 = jnp.clip(jnp.round(cx - cw / 2), 0, w), jnp.clip(jnp.round(cx + cw / 2), 0, w)
    rows = jnp.arange(h)[:, None]
    cols = jnp.arange(w)[None, :]
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    perm = _partner(k4, b)
    mixed = jnp.where(box[None, :, :, None], x[perm], x)
    lam_true = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return mixed, lam_true * y + (1 - lam_true) * y[perm]


# --- torchvision's image ops ---------------------------------------------------------------
#
# Each kernel below works on one (H, W, C) image with scalar parameters and follows the
# float-tensor branch of torchvision.transforms.v2.functional operation for operation (same
# constants, same order of float32 roundings where it can be matched), so that the public
# batch functions equal torchvision's on every image, and RandAugment equals its
# standalone functions exactly.

_GREY = (np.float32(0.2989), np.float32(0.587), np.float32(0.114))  # torchvision's, not 0.299


def _to_uint8(x: jax.Array) -> jax.Array:
    """torchvision's ``to_dtype(x, uint8, scale=True)``: ``x * 255.999`` truncated (so every
    value in [0, 1] has a level, and ``k / 255`` maps back to ``k``); as int32."""
    return jnp.clip(jnp.floor(x * np.float32(255.999)), 0, 255).astype(jnp.int32)


def _from_uint8(u: jax.Array) -> jax.Array:
    """torchvision's ``to_dtype(u, float32, scale=True)``: ``u * float32(1 / 255)`` (a
    multiplication: ``u / 255`` differs in the last bit for some levels)."""
    return u.astype(jnp.float32) * np.float32(1 / 255)


def _per_image(v: Any, b: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(v, jnp.float32), (b,))


def _one_minus(f: Any, b: int) -> jax.Array:
    """``1 - f`` as torchvision computes it: in double for a Python number (then float32)."""
    if isinstance(f, numbers.Real):
        return _per_image(1.0 - float(f), b)
    return 1.0 - _per_image(f, b)


def _blend1(img: jax.Array, other: jax.Array, ratio: jax.Array, alpha: jax.Array) -> jax.Array:
    # torchvision's _blend: image1.mul(ratio).add_(image2, alpha=1 - ratio).clamp_(0, 1).
    # torch's add with alpha is one fused multiply-add (checked against a float64
    # emulation); XLA rounds the product first: up to 2 ulps (1.2e-7) apart near 1.
    return jnp.clip(img * ratio + other * alpha, 0.0, 1.0)


def _grey1(img: jax.Array) -> jax.Array:
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return r * _GREY[0] + g * _GREY[1] + b * _GREY[2]


def _brightness1(img: jax.Array, factor: jax.Array) -> jax.Array:
    return jnp.clip(img * factor, 0.0, 1.0)


def _saturation1(img: jax.Array, ratio: jax.Array, alpha: jax.Array) -> jax.Array:
    if img.shape[-1] == 1:  # torchvision (and PIL) leave a grey image alone
        return img
    return _blend1(img, _grey1(img)[..., None], ratio, alpha)


def _mean(v: jax.Array) -> jax.Array:
    """The mean by pairwise summation, within 2 ulps of torch's (a cascade sum). XLA's
    reduction of a whole image sums blocks of 1024 values one after another (measured 18 ulps
    off torch's on the test photo), and turns a division by a constant or by a broadcast
    scalar into a multiplication by its rounded reciprocal. So: halving adds, and the count
    as a value of the sum's own shape (batched under vmap, ``total * 0`` is not folded:
    NaN) behind a barrier."""
    v = v.reshape(-1)
    n = v.size
    v = jnp.pad(v, (0, (1 << (n - 1).bit_length()) - n))
    while v.size > 1:
        v = v[: v.size // 2] + v[v.size // 2 :]
    total = v[0]
    return total / jax.lax.optimization_barrier(total * 0.0 + n)


def _contrast1(img: jax.Array, ratio: jax.Array, alpha: jax.Array) -> jax.Array:
    grey = _grey1(img) if img.shape[-1] == 3 else img
    return _blend1(img, _mean(grey), ratio, alpha)


def _sharpness1(img: jax.Array, alpha: jax.Array) -> jax.Array:
    h, w, _ = img.shape
    if h <= 2 or w <= 2:  # torchvision: no interior to smooth
        return img
    k = np.full((3, 3), np.float32(1 / 13), np.float32)
    k[1, 1] = np.float32(5 / 13)
    blurred = sum(
        k[dy, dx] * img[dy : dy + h - 2, dx : dx + w - 2] for dy in range(3) for dx in range(3)
    )
    inner = img[1:-1, 1:-1]
    # torchvision: view.add_(blurred - view, alpha=1 - factor); the border keeps its pixels.
    return jnp.clip(img.at[1:-1, 1:-1].set(inner + alpha * (blurred - inner)), 0.0, 1.0)


def _posterize1(img: jax.Array, bits: int) -> jax.Array:
    if bits >= 8:  # torchvision's uint8 kernel returns the image as it is
        return img
    mask = (0xFF << (8 - bits)) & 0xFF
    return _from_uint8(_to_uint8(img) & mask)


def _solarize1(img: jax.Array, threshold: jax.Array) -> jax.Array:
    return jnp.where(img >= threshold, 1.0 - img, img)


def _autocontrast1(img: jax.Array) -> jax.Array:
    lo = jnp.min(img, axis=(0, 1))
    hi = jnp.max(img, axis=(0, 1))
    flat = hi == lo  # a constant channel is left as it is
    scale = jnp.where(flat, 1.0, hi - lo)
    # XLA rewrites a division by a broadcast value into a multiplication by its reciprocal
    # (one rounding more); torchvision divides. The barrier keeps the division.
    scale = jax.lax.optimization_barrier(jnp.broadcast_to(scale, img.shape))
    return jnp.clip((img - jnp.where(flat, 0.0, lo)) / scale, 0.0, 1.0)


def _equalize1(img: jax.Array) -> jax.Array:
    h, w, c = img.shape
    u = _to_uint8(img).reshape(h * w, c).T  # (C, N) levels
    hist = jax.vmap(lambda v: jnp.bincount(v, length=256))(u)
    cum = jnp.cumsum(hist, axis=-1)
    # torchvision's (PIL's) LUT: the pixels below the channel's highest level, in 255 steps,
    # rounded; lut[k] uses the count below k, so lut[0] = 0. A channel whose pixels (but
    # fewer than 255) all sit at its top level has step 0 and is left at its levels.
    top = jnp.take_along_axis(hist, jnp.argmax(cum, axis=-1)[:, None], axis=-1)
    step = (h * w - top) // 255
    lut = jnp.clip((cum[:, :-1] + step // 2) // jnp.maximum(step, 1), 0, 255)
    lut = jnp.concatenate([jnp.zeros((c, 1), lut.dtype), lut], axis=-1)
    out = jnp.where(step != 0, jnp.take_along_axis(lut, u, axis=-1), u)
    return _from_uint8(out.T.reshape(h, w, c))


def _warp1(img: jax.Array, m: jax.Array, interpolation: str, fill: float | None) -> jax.Array:
    """Resample ``img`` at ``m``'s inverse map, as torchvision's ``affine``/``rotate``:
    output pixel (i, j) sits at ``(j + 0.5 - W/2, i + 0.5 - H/2)`` about the image centre
    and reads input point ``m @ (x, y, 1)`` through ``grid_sample(align_corners=False,
    padding_mode='zeros')``.

    The sample points are computed here in pixels rather than (as torchvision does) through
    normalised [-1, 1] grid coordinates and back, so the identity map reads every pixel
    exactly; they differ from torchvision's by float32 rounding (about 1e-6 px)."""
    h, w, c = img.shape
    xs = jnp.arange(w, dtype=jnp.float32) + (0.5 - w / 2)
    ys = (jnp.arange(h, dtype=jnp.float32) + (0.5 - h / 2))[:, None]
    sx = m[0] * xs + m[1] * ys + m[2] + (w / 2 - 0.5)
    sy = m[3] * xs + m[4] * ys + m[5] + (h / 2 - 0.5)
    flat = img.reshape(h * w, c)

    def at(iy, ix):
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        v = flat[jnp.clip(iy, 0, h - 1) * w + jnp.clip(ix, 0, w - 1)]
        return jnp.where(inside[..., None], v, 0.0), inside

    def index(v, size):  # far-off points stay off the image through the int conversion
        return jnp.clip(v, -2, size + 1).astype(jnp.int32)

    if interpolation == "nearest":
        # nearbyint: ties to even, as jnp.round.
        out, inside = at(index(jnp.round(sy), h), index(jnp.round(sx), w))
        return out if fill is None else jnp.where(inside[..., None], out, fill)
    if interpolation != "bilinear":
        raise ValueError(f"interpolation={interpolation!r}: must be 'nearest' or 'bilinear'")
    x0, y0 = jnp.floor(sx), jnp.floor(sy)
    # torchvision's CPU grid_sample: distances to the corners, products as weights, the
    # corners summed north-west, north-east, south-west, south-east; outside ones read 0.
    we, ns = sx - x0, sy - y0
    ea, so = 1.0 - we, 1.0 - ns
    ix, iy = index(x0, w), index(y0, h)
    corners = [(iy, ix, so * ea), (iy, ix + 1, so * we), (iy + 1, ix, ns * ea)]
    corners.append((iy + 1, ix + 1, ns * we))
    out, cover = 0.0, 0.0
    for cy, cx, wt in corners:
        v, inside = at(cy, cx)
        out = out + v * wt[..., None]
        cover = cover + jnp.where(inside, wt, 0.0)
    if fill is None:
        return out
    # torchvision with a fill resamples a channel of ones alongside (the coverage) and
    # blends (out - fill) * cover + fill: the zero-padded border is attenuated once more
    # (pytorch/vision#6517: fill=0 is not fill=None).
    return (out - fill) * cover[..., None] + fill


def _inverse_affine(
    center: Sequence[Any],
    angle: Any,
    translate: Sequence[Any],
    scale: Any,
    shear: Sequence[Any],
    m: Any = math,
) -> list[Any]:
    """torchvision's ``_get_inverse_affine_matrix`` (inverted=True), line for line, with
    ``m`` as ``math`` (Python numbers: double precision, as torchvision) or ``jnp``."""
    rot = m.radians(angle)
    sx = m.radians(shear[0])
    sy = m.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    cos_sy = m.cos(sy)
    tan_sx = m.tan(sx)
    rot_minus_sy = rot - sy
    cx_plus_tx = cx + tx
    cy_plus_ty = cy + ty
    a = m.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + m.sin(rot))
    c = m.sin(rot_minus_sy) / cos_sy
    d = m.cos(rot) - c * tan_sx
    mat = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0]
    mat[2] += cx - mat[0] * cx_plus_tx - mat[1] * cy_plus_ty
    mat[5] += cy - mat[3] * cx_plus_tx - mat[4] * cy_plus_ty
    return mat


def _centre(center: Sequence[float] | None, h: int, w: int) -> list[float]:
    # torchvision: pixel coordinates of the centre (None: the image centre), relative to
    # the image centre; (0, 0) is the top-left corner of the top-left pixel.
    return [0.0, 0.0] if center is None else [center[0] - w * 0.5, center[1] - h * 0.5]


def _matrices(b: int, params: list[Any], build) -> jax.Array:
    """``(B, 6)`` float32 matrices from ``build(*params, m)``: in double on the host when
    every parameter is a Python number, else in float32 per image.

    A host matrix goes in behind a barrier: as a constant, XLA would fold its products with
    the (constant) pixel grid at compile time, rounding differently from the same matrix
    as data (a one-ulp different sample point), and RandAugment's ops, whose matrices are
    data, would not equal these functions under jit."""
    if all(isinstance(p, numbers.Real) for p in params):
        mat = jnp.asarray(build(*params, math), jnp.float32)
        return jnp.broadcast_to(jax.lax.optimization_barrier(mat), (b, 6))
    mats = jax.vmap(lambda *ps: jnp.stack(build(*ps, jnp)))(*[_per_image(p, b) for p in params])
    return mats.astype(jnp.float32)


def _warp(x: jax.Array, mats: jax.Array, interpolation: str, fill: float | None) -> jax.Array:
    return jax.vmap(lambda img, m: _warp1(img, m, interpolation, fill))(x, mats)


def affine(
    x: jax.Array,
    angle: Any = 0.0,
    translate: Sequence[Any] = (0, 0),
    scale: Any = 1.0,
    shear: Any = (0.0, 0.0),
    *,
    interpolation: str = "nearest",
    fill: float | None = None,
    center: Sequence[float] | None = None,
) -> jax.Array:
    """torchvision's ``F.affine``: rotate by ``angle`` degrees (clockwise), shear by
    ``shear = (sx, sy)`` degrees (one number: ``(s, 0)``), scale, then translate by
    ``translate = (tx, ty)`` pixels, about ``center`` (pixel coordinates, default the image
    centre); ``interpolation`` 'nearest' or 'bilinear'. ``fill=None`` zero-pads; a number
    fills uncovered pixels as torchvision does (for bilinear that blends by the coverage,
    which darkens the border once more than ``None``: not the same).

    Measured against torchvision on a 37x53 photo (tests): bilinear within 5.5e-6 (the
    sample points differ by float32 rounding, see :func:`_warp1`; asserted 1e-5); nearest
    equal, but a sample point within rounding of a pixel boundary (one of the tests' is
    1.2e-6 px from one) may round either way, depending on how XLA compiles the sums (it
    did, with the matrix as a compile-time constant)."""
    b, h, w, _ = x.shape
    if isinstance(scale, numbers.Real) and scale <= 0:
        raise ValueError(f"scale={scale!r}: must be > 0")
    if isinstance(shear, numbers.Real) or (hasattr(shear, "ndim") and shear.ndim == 0):
        shear = (shear, 0.0)
    centre = _centre(center, h, w)
    mats = _matrices(
        b,
        [angle, translate[0], translate[1], scale, shear[0], shear[1]],
        lambda a, tx, ty, s, sx, sy, m: _inverse_affine(centre, a, (tx, ty), s, (sx, sy), m),
    )
    return _warp(x, mats, interpolation, fill)


def rotate(
    x: jax.Array,
    angle: Any,
    *,
    interpolation: str = "nearest",
    fill: float | None = None,
    center: Sequence[float] | None = None,
) -> jax.Array:
    """torchvision's ``F.rotate`` with ``expand=False``: rotate by ``angle`` degrees
    counter-clockwise about ``center`` (default the image centre), output the input's size.

    As torchvision, a Python-number angle of 0 or 180 degrees (and 90 or 270 on a square
    image), about the centre, is an exact transpose rather than a resampling. Measured
    against torchvision as :func:`affine`."""
    b, h, w, _ = x.shape
    if isinstance(angle, numbers.Real):
        angle = float(angle) % 360
        transposable = angle in (0.0, 180.0) or (h == w and angle in (90.0, 270.0))
        if center is None and transposable:
            return jnp.rot90(x, int(angle) // 90, axes=(1, 2))
    centre = _centre(center, h, w)
    # torchvision: "incoherence of rotation angle direction between affine and rotate".
    mats = _matrices(
        b, [angle], lambda a, m: _inverse_affine(centre, -a, (0.0, 0.0), 1.0, (0.0, 0.0), m)
    )
    return _warp(x, mats, interpolation, fill)


def adjust_brightness(x: jax.Array, factor: Any) -> jax.Array:
    """torchvision's ``F.adjust_brightness``: ``x * factor``, clipped to [0, 1]."""
    return jax.vmap(_brightness1)(x, _per_image(factor, x.shape[0]))


def adjust_contrast(x: jax.Array, factor: Any) -> jax.Array:
    """torchvision's ``F.adjust_contrast``: blend with the mean of the image's grey
    (``0.2989 R + 0.587 G + 0.114 B``; the mean of the image itself for one channel);
    within 2 ulps of torchvision's (:func:`_blend1`, :func:`_mean`). :func:`color_jitter`'s
    contrast blends with the mean of all channels instead."""
    b = x.shape[0]
    return jax.vmap(_contrast1)(x, _per_image(factor, b), _one_minus(factor, b))


def adjust_saturation(x: jax.Array, factor: Any) -> jax.Array:
    """torchvision's ``F.adjust_saturation``: blend each pixel with its grey (0 is the grey
    image); one-channel images are returned as they are. Within 2 ulps of torchvision's
    (:func:`_blend1`). :func:`color_jitter`'s saturation uses 0.299 rather than
    torchvision's 0.2989 for red."""
    b = x.shape[0]
    return jax.vmap(_saturation1)(x, _per_image(factor, b), _one_minus(factor, b))


def adjust_sharpness(x: jax.Array, factor: Any) -> jax.Array:
    """torchvision's ``F.adjust_sharpness``: blend with the image smoothed by the 3x3
    kernel ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` (``factor`` 0: smoothed, 1: the
    image, 2: sharpened); the one-pixel border keeps its pixels. Equal to torchvision's
    within float32 rounding, 2 ulps (its convolution sums in another order, and its blend
    is a fused multiply-add)."""
    return jax.vmap(_sharpness1)(x, _one_minus(factor, x.shape[0]))


def posterize(x: jax.Array, bits: int) -> jax.Array:
    """torchvision's ``F.posterize`` on uint8 levels: keep the top ``bits`` of each
    channel's 8-bit level. torchvision defines it on uint8 images, and its float kernel
    is another quantisation (``floor(x * 2**bits) / 2**bits``); here ``x`` is converted
    to levels as torchvision's ``to_dtype(x, uint8, scale=True)`` (``x * 255.999``,
    truncated), posterized, and converted back (``level / 255``): exactly
    ``to_dtype(F.posterize(to_dtype(x, uint8)), float32)``, and exactly torchvision's
    uint8 result / 255 on an image of levels ``k / 255``. ``bits=8`` returns ``x``
    unchanged, as torchvision's uint8 kernel does."""
    if not isinstance(bits, numbers.Integral) or not 0 <= bits <= 8:
        raise ValueError(f"posterize bits={bits!r}: must be an integer in [0, 8]")
    return _posterize1(x, int(bits))


def solarize(x: jax.Array, threshold: Any) -> jax.Array:
    """torchvision's ``F.solarize``: invert (``1 - x``) every value ``>= threshold``
    (a float threshold in [0, 1]; torchvision's uint8 threshold ``t`` is ``t / 255``)."""
    t = _per_image(threshold, x.shape[0])[:, None, None, None]
    return _solarize1(x, t)


def autocontrast(x: jax.Array) -> jax.Array:
    """torchvision's ``F.autocontrast``: stretch each channel of each image linearly so its
    minimum maps to 0 and its maximum to 1 (a constant channel is left as it is)."""
    return jax.vmap(_autocontrast1)(x)


def equalize(x: jax.Array) -> jax.Array:
    """torchvision's ``F.equalize``, per channel of each image: histogram equalisation of
    the uint8 levels (``x`` converted as :func:`posterize`; the result is a level / 255).

    torchvision's (PIL's) algorithm: with the histogram ``hist`` and its cumulative sum
    ``cum``, the channel's top level (its last non-empty bin) is left out, ``step = (N -
    hist[top]) // 255``, and level ``k`` maps to ``(cum[k - 1] + step // 2) // step``
    (clipped to 255; level 0 to 0); where ``step`` is 0 (fewer than 255 pixels below the
    top level) the channel keeps its levels."""
    return jax.vmap(_equalize1)(x)


def salt_and_pepper(
    key: jax.Array, x: jax.Array, p: float = 0.05, salt_vs_pepper: float = 0.5
) -> jax.Array:
    """Set each pixel, all its channels together, to white (1) with probability ``p *
    salt_vs_pepper`` or black (0) with probability ``p * (1 - salt_vs_pepper)``; one uniform
    draw per pixel from the image's own key. torchvision has no such op;
    ``skimage.util.random_noise(mode='s&p')`` replaces each channel value independently
    (coloured specks) instead."""
    b, h, w, _ = x.shape

    def one(k, img):
        u = jax.random.uniform(k, (h, w, 1))
        salt = u < p * salt_vs_pepper
        return jnp.where(salt, 1.0, jnp.where(u < p, 0.0, img)).astype(img.dtype)

    return jax.vmap(one)(_per_example(key, b), x)


# --- RandAugment ----------------------------------------------------------------------------

# torchvision.transforms.v2.RandAugment._AUGMENTATION_SPACE, in its order.
RANDAUGMENT_OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_SIGNED = frozenset((*_GEOMETRIC, "Brightness", "Color", "Contrast", "Sharpness"))
_RANGES = {  # (start, end) of each op's torch.linspace over the magnitude bins
    "ShearX": (0.0, 0.3),
    "ShearY": (0.0, 0.3),
    "Rotate": (0.0, 30.0),
    "Brightness": (0.0, 0.9),
    "Color": (0.0, 0.9),
    "Contrast": (0.0, 0.9),
    "Sharpness": (0.0, 0.9),
    "Solarize": (1.0, 0.0),
}
# Each op's branch of the switch: the five geometric ops are one resampling (branch 1)
# with the op's matrix.
_KIND = {
    "Identity": 0,
    **dict.fromkeys(_GEOMETRIC, 1),
    "Brightness": 2,
    "Color": 3,
    "Contrast": 4,
    "Sharpness": 5,
    "Posterize": 6,
    "Solarize": 7,
    "AutoContrast": 8,
    "Equalize": 9,
}


def _linspace_at(start: float, end: float, n: int, i: int) -> float:
    """Entry ``i`` of ``torch.linspace(start, end, n)`` (float32), correctly rounded. torch's
    CPU kernel may differ in the last bit, depending on its SIMD width (tested: <= 1 ulp)."""
    s, e = float(np.float32(start)), float(np.float32(end))
    return float(np.float32(s + (e - s) * i / (n - 1)))


def randaugment_magnitudes(
    h: int, w: int, magnitude: int, num_magnitude_bins: int = 31
) -> dict[str, float | int | None]:
    """Each RandAugment op's unsigned magnitude at bin ``magnitude``, as torchvision's
    ``RandAugment._AUGMENTATION_SPACE[op](num_magnitude_bins, h, w)[magnitude]``: shear
    0..0.3 (tan of the angle), translate 0..150/331 of the width / height (pixels, truncated
    to an integer when applied), rotate 0..30 degrees, the enhance ops' factor offset
    0..0.9, posterize 8..4 bits, solarize threshold 1..0; ``None`` for ops without one."""
    if not isinstance(num_magnitude_bins, numbers.Integral) or num_magnitude_bins < 2:
        raise ValueError(f"num_magnitude_bins={num_magnitude_bins!r}: must be an integer >= 2")
    n = int(num_magnitude_bins)
    if not isinstance(magnitude, numbers.Integral) or not 0 <= magnitude < n:
        raise ValueError(f"magnitude={magnitude!r}: must be an integer in [0, {n - 1}]")
    mags: dict[str, float | int | None] = dict.fromkeys(RANDAUGMENT_OPS)
    for op, (start, end) in _RANGES.items():
        mags[op] = _linspace_at(start, end, n, magnitude)
    mags["TranslateX"] = _linspace_at(0.0, 150.0 / 331.0 * w, n, magnitude)
    mags["TranslateY"] = _linspace_at(0.0, 150.0 / 331.0 * h, n, magnitude)
    # torchvision: (8 - (arange(n) / ((n - 1) / 4))).round().int() in float32, ties to even.
    quarter = np.float32((n - 1) / 4)
    mags["Posterize"] = int(np.round(np.float32(8) - np.float32(magnitude) / quarter))
    return mags


def _randaugment_params(
    h: int, w: int, magnitude: int, num_magnitude_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per op and sign (0: +, 1: -), what its branch needs, computed on the host in double as
    torchvision's ``_apply_image_or_video_transform`` computes it: the inverse affine
    matrix ``(14, 2, 6)``, a factor or threshold ``p`` and ``1 - factor`` ``q`` ``(14, 2)``;
    and the posterize bits (unsigned, so static)."""
    mags = randaugment_magnitudes(h, w, magnitude, num_magnitude_bins)
    mats = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float64), (len(RANDAUGMENT_OPS), 2, 1))
    p = np.zeros((len(RANDAUGMENT_OPS), 2))
    q = np.zeros((len(RANDAUGMENT_OPS), 2))
    corner = _centre((0.0, 0.0), h, w)  # ShearX / ShearY shear about the top-left corner
    for k, op in enumerate(RANDAUGMENT_OPS):
        for s in (0, 1):
            mag = mags[op]
            if mag is None or op == "Posterize":
                continue
            mag = -mag if s and op in _SIGNED else mag
            no_shear = (0.0, 0.0)
            if op in ("ShearX", "ShearY"):
                deg = math.degrees(math.atan(mag))
                shear = (deg, 0.0) if op == "ShearX" else (0.0, deg)
                mats[k, s] = _inverse_affine(corner, 0.0, (0.0, 0.0), 1.0, shear)
            elif op in ("TranslateX", "TranslateY"):
                t = (float(int(mag)), 0.0) if op == "TranslateX" else (0.0, float(int(mag)))
                mats[k, s] = _inverse_affine((0.0, 0.0), 0.0, t, 1.0, no_shear)
            elif op == "Rotate":
                mats[k, s] = _inverse_affine((0.0, 0.0), -(mag % 360), (0.0, 0.0), 1.0, no_shear)
            elif op == "Solarize":
                p[k, s] = mag  # 1.0 (a float image's maximum) times the magnitude
            else:  # Brightness, Color, Contrast, Sharpness: factor 1 + magnitude
                p[k, s] = 1.0 + mag
                q[k, s] = 1.0 - (1.0 + mag)
    bits = int(mags["Posterize"])
    return mats.astype(np.float32), p.astype(np.float32), q.astype(np.float32), bits


def _randaugment_apply(
    x: jax.Array,
    ops: jax.Array,
    negative: jax.Array,
    magnitude: int,
    num_magnitude_bins: int = 31,
    interpolation: str = "nearest",
    fill: float | None = None,
) -> jax.Array:
    """Apply ops ``ops[i, r]`` (indices into :data:`RANDAUGMENT_OPS`) in rounds ``r`` to
    image ``i``, with the magnitude negated where ``negative[i, r]`` (ignored for unsigned
    ops)."""
    _, h, w, _ = x.shape
    mats, p, q, bits = _randaugment_params(h, w, magnitude, num_magnitude_bins)
    mats, p, q = jnp.asarray(mats), jnp.asarray(p), jnp.asarray(q)
    kind = jnp.asarray([_KIND[op] for op in RANDAUGMENT_OPS])
    branches = [
        lambda img, m, p, q: img,
        lambda img, m, p, q: _warp1(img, m, interpolation, fill),
        lambda img, m, p, q: _brightness1(img, p),
        lambda img, m, p, q: _saturation1(img, p, q),
        lambda img, m, p, q: _contrast1(img, p, q),
        lambda img, m, p, q: _sharpness1(img, q),
        lambda img, m, p, q: _posterize1(img, bits),
        lambda img, m, p, q: _solarize1(img, p),
        lambda img, m, p, q: _autocontrast1(img),
        lambda img, m, p, q: _equalize1(img),
    ]

    def one(img, op, neg):
        s = neg.astype(jnp.int32)
        return jax.lax.switch(kind[op], branches, img, mats[op, s], p[op, s], q[op, s])

    def round_(imgs, op_neg):
        return jax.vmap(one)(imgs, *op_neg), None

    return jax.lax.scan(round_, x, (ops.T, negative.T))[0]


def randaugment(
    key: jax.Array,
    x: jax.Array,
    num_ops: int = 2,
    magnitude: int = 9,
    num_magnitude_bins: int = 31,
    *,
    interpolation: str = "nearest",
    fill: float | None = None,
) -> jax.Array:
    """RandAugment (Cubuk et al., 2020) as torchvision's ``transforms.v2.RandAugment``: per
    image, ``num_ops`` times, an op drawn uniformly (with replacement) from
    :data:`RANDAUGMENT_OPS` applied at bin ``magnitude`` of ``num_magnitude_bins``
    (:func:`randaugment_magnitudes`), its magnitude negated with probability 1/2 for the
    signed ops (shear, translate, rotate, brightness, colour, contrast, sharpness). Each op
    is exactly this module's function with torchvision's parameters (ShearX / ShearY shear
    about the top-left corner, as torchvision). Defaults are torchvision's: nearest
    resampling and zero padding; ``interpolation='bilinear'`` and a ``fill`` as
    :func:`affine`.

    Each image draws its ops and signs from its own key (``jax.random.split(key, B)``), so
    any sharding of the batch gives the same images. Jittable: per image the op is a
    ``lax.switch``, but under ``vmap`` a switch becomes a select, so every branch is
    computed for every image and round and one result kept (the five geometric ops share
    one resampling, with the chosen op's matrix, so ten branches are paid for).

    timm's string form ``'rand-m9-n2'`` is read by :func:`parse_randaugment` (what it
    means, and what of timm's RandAugment is not reproduced)."""
    if not isinstance(num_ops, numbers.Integral) or num_ops < 0:
        raise ValueError(f"num_ops={num_ops!r}: must be an integer >= 0")
    randaugment_magnitudes(1, 1, magnitude, num_magnitude_bins)  # validate them
    if num_ops == 0:
        return x
    signed = jnp.asarray([op in _SIGNED for op in RANDAUGMENT_OPS])

    def draw(k):
        k_op, k_sign = jax.random.split(k)
        ops = jax.random.randint(k_op, (num_ops,), 0, len(RANDAUGMENT_OPS))
        return ops, jax.random.bernoulli(k_sign, 0.5, (num_ops,)) & signed[ops]

    ops, negative = jax.vmap(draw)(_per_example(key, x.shape[0]))
    return _randaugment_apply(x, ops, negative, magnitude, num_magnitude_bins, interpolation, fill)


def augment_batch(
    key: jax.Array, x: jax.Array, cfg: Mapping[str, Any], *, mask: jax.Array | None = None
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """The per-image augmentations ``cfg`` switches on, in the usual order.

    Keys (0 / False / '' disables): ``crop_scale_min`` (random-resized crop with scale
    ``(crop_scale_min, 1)``), ``translate`` (pad and random crop, pixels), ``hflip``,
    ``randaugment`` (:func:`randaugment`; timm's ``'rand-m9-n2'`` or ``(num_ops,
    magnitude)``, see :func:`flaxcnn.train.checks.parse_randaugment`), ``color_jitter``
    (strength), ``noise_std``, ``salt_pepper`` (:func:`salt_and_pepper`'s probability),
    ``erase_prob``.

    With ``mask`` (segmentation: ``(B, H, W)`` labels) returns ``(x, mask)``: the crop and
    the flip move the mask's pixels exactly as the image's; colour jitter and noise leave it
    alone. Random erasing would leave labels on pixels it replaced, translate and
    RandAugment's geometric ops move pixels without the mask (and pad with zeros, no
    label): those are refused.
    """
    if mask is not None and cfg.get("erase_prob", 0):
        raise ValueError("random erasing (erase_prob > 0) does not apply to segmentation masks")
    if mask is not None and cfg.get("translate", 0):
        raise ValueError("translate pads with zeros, which is no label: not for segmentation")
    ra = parse_randaugment(cfg.get("randaugment", ""))
    if mask is not None and ra is not None:
        raise ValueError(
            "randaugment's shear, translate and rotate do not move masks: not for segmentation"
        )
    keys = jax.random.split(key, 6)
    if cfg.get("crop_scale_min", 0):
        scale = (cfg["crop_scale_min"], 1.0)
        if mask is None:
            x = random_resized_crop(keys[0], x, scale=scale)
        else:
            x, mask = random_resized_crop(keys[0], x, scale=scale, mask=mask)
    if cfg.get("translate", 0):
        x = random_translate(keys[5], x, int(cfg["translate"]))
    if cfg.get("hflip", False):
        if mask is None:
            x = hflip(keys[1], x)
        else:
            x, mask = hflip(keys[1], x, mask=mask)
    # The later keys are folded in rather than split off with the six above, so those six
    # (and every earlier config's augmentations) stay as they were.
    if ra is not None:
        x = randaugment(jax.random.fold_in(key, 6), x, *ra)
    if cfg.get("color_jitter", 0):
        s = cfg["color_jitter"]
        x = color_jitter(keys[2], x, s, s, s)
    if cfg.get("noise_std", 0):
        x = gaussian_noise(keys[3], x, cfg["noise_std"])
    if cfg.get("salt_pepper", 0):
        x = salt_and_pepper(jax.random.fold_in(key, 7), x, cfg["salt_pepper"])
    if cfg.get("erase_prob", 0):
        x = random_erasing(keys[4], x, cfg["erase_prob"])
    return x if mask is None else (x, mask)
