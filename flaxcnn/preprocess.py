"""Eval preprocessing exactly as the weights' source does it, and prediction decoding.

torchvision's ``weights.transforms()`` and timm's eval transform both: resize the
shorter side (to ``resize_size``, i.e. ``crop / crop_pct``) with antialiased bilinear
or bicubic interpolation, centre-crop to the input size, scale to [0, 1] and
normalise by mean/std. They run that resize in Pillow on PIL images, so this does too:
a float re-implementation of the resize would differ by up to a grey level
(~0.017 after normalisation), far above the 1e-3 parity this module is tested to.
The result is NHWC-ready float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .pretrained import PretrainedCfg, get_pretrained_cfg, imagenet_labels

__all__ = ["decode_predictions", "preprocess"]

_RESAMPLE = {
    "bilinear": "BILINEAR",
    "bicubic": "BICUBIC",
    "nearest": "NEAREST",
    "lanczos": "LANCZOS",
}


def _to_pil(image: Any):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"expected an H x W x 3 image (or a PIL image), got shape {a.shape}")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.min() >= 0 and a.max() <= 1:
            a = np.round(a * 255)
        a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(a[..., :3])


def preprocess(image: Any, cfg: PretrainedCfg | str = "resnet50") -> np.ndarray:
    """One image (PIL, or H x W x 3 uint8 / [0, 1] float array) -> normalised H x W x 3 float32.

    ``cfg`` is a :class:`PretrainedCfg` or a name / ``name.tag`` whose eval transform to
    reproduce. Stack the results for a batch.
    """
    from PIL import Image

    if not isinstance(cfg, PretrainedCfg):
        cfg = get_pretrained_cfg(cfg)
    img = _to_pil(image)
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    # torchvision's Resize(int): shorter side to `size`, longer side truncated, not rounded.
    new_short, new_long = cfg.resize_size, int(cfg.resize_size * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    if size != (w, h):
        img = img.resize(size, getattr(Image.Resampling, _RESAMPLE[cfg.interpolation]))
    th, tw = cfg.input_size[:2]
    w, h = img.size
    if th > h or tw > w:
        raise ValueError(f"image of {w}x{h} after resizing is smaller than the {tw}x{th} crop")
    # torchvision's CenterCrop: offsets rounded half to even.
    top, left = round((h - th) / 2.0), round((w - tw) / 2.0)
    a = np.asarray(img, np.float32)[top : top + th, left : left + tw] / 255.0
    return ((a - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)).astype(
        np.float32
    )


def decode_predictions(
    logits: Any, k: int = 5, labels: list[str] | None = None
) -> list[list[tuple[int, str, float]]]:
    """Top-``k`` ``(class index, class name, probability)`` for each row of ``logits``.

    ``labels`` default to the ImageNet-1k class names when there are 1000 classes.
    """
    x = np.asarray(logits, np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"expected logits of shape (batch, classes), got {x.shape}")
    if labels is None:
        labels = imagenet_labels() if x.shape[1] == 1000 else [str(i) for i in range(x.shape[1])]
    if len(labels) != x.shape[1]:
        raise ValueError(f"{len(labels)} labels for {x.shape[1]} classes")
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return [
        [(int(i), labels[i], float(row[i])) for i in idx] for row, idx in zip(p, top, strict=True)
    ]
