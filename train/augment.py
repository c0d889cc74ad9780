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

For segmentation the crop and the flip take the batch's masks too and move their pixels
identically (``mask=``); the other augmentations do not move pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "augment_batch",
    "color_jitter",
    "cutmix",
    "gaussian_noise",
    "hflip",
    "mixup",
    "random_erasing",
    "random_resized_crop",
    "random_translate",
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
    pad``): torchvision's ``crop(pad(img, pad), top, left, h, w)``."""
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


def augment_batch(
    key: jax.Array, x: jax.Array, cfg: Mapping[str, Any], *, mask: jax.Array | None = None
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """The per-image augmentations ``cfg`` switches on, in the usual order.

    Keys (0 / False disables): ``crop_scale_min`` (random-resized crop with scale
    ``(crop_scale_min, 1)``), ``translate`` (pad and random crop, pixels), ``hflip``,
    ``color_jitter`` (strength), ``noise_std``, ``erase_prob``.

    With ``mask`` (segmentation: ``(B, H, W)`` labels) returns ``(x, mask)``: the crop and
    the flip move the mask's pixels exactly as the image's; colour jitter and noise leave it
    alone. Random erasing would leave labels on pixels it replaced, so it is refused.
    """
    if mask is not None and cfg.get("erase_prob", 0):
        raise ValueError("random erasing (erase_prob > 0) does not apply to segmentation masks")
    if mask is not None and cfg.get("translate", 0):
        raise ValueError("translate pads with zeros, which is no label: not for segmentation")
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
    if cfg.get("color_jitter", 0):
        s = cfg["color_jitter"]
        x = color_jitter(keys[2], x, s, s, s)
    if cfg.get("noise_std", 0):
        x = gaussian_noise(keys[3], x, cfg["noise_std"])
    if cfg.get("erase_prob", 0):
        x = random_erasing(keys[4], x, cfg["erase_prob"])
    return x if mask is None else (x, mask)
