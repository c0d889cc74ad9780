"""Eval preprocessing exactly as the weights' source does it, and prediction decoding.

torchvision's ``weights.transforms()`` and timm's eval transform both: resize the
shorter side (to ``resize_size``, i.e. ``crop / crop_pct``) with antialiased bilinear
or bicubic interpolation, centre-crop to the input size, scale to [0, 1] and
normalise by mean/std. They run that resize in Pillow on PIL images, so this does too:
a float re-implementation of the resize would differ by up to a grey level
(~0.017 after normalisation), far above the 1e-3 parity this module is tested to.
The result is NHWC-ready float32.

CLIP's eval transform (OpenAI's ``clip.load(...)[1]``, ``clip.clip._transform(n_px)``) is
the same recipe with ``crop_pct`` 1 (bicubic resize of the shorter side to the input size,
centre crop) and CLIP's own mean/std; the CLIP registry names (``clip_vit_b32``, ...)
select it, as does :func:`clip_cfg` for any size.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any

import numpy as np

from .pretrained import PretrainedCfg, get_pretrained_cfg, imagenet_labels

__all__ = [
    "CLIP_INPUT_SIZES",
    "CLIP_MEAN",
    "CLIP_STD",
    "clip_cfg",
    "decode_predictions",
    "preprocess",
]

# The statistics OpenAI normalises CLIP's inputs with (its training set's, not ImageNet's).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The input resolution of each CLIP image tower, as the registry names them.
CLIP_INPUT_SIZES = {
    "clip_rn50": 224,
    "clip_rn101": 224,
    "clip_rn50x4": 288,
    "clip_rn50x16": 384,
    "clip_rn50x64": 448,
    "clip_vit_b32": 224,
    "clip_vit_b16": 224,
    "clip_vit_l14": 224,
    "clip_vit_l14_336": 336,
}
# Sources whose transform converts to RGB after the resize and crop (CLIP's
# `_convert_image_to_rgb` comes third): a PIL image is resized in its own mode, which
# differs from resizing its RGB conversion for RGBA (Pillow premultiplies alpha) and
# palette images (Pillow resizes those with nearest neighbour, whatever is asked).
_RGB_AFTER_CROP = ("openai", "open_clip")

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


def clip_cfg(model: str | int) -> PretrainedCfg:
    """CLIP's eval transform as a :class:`PretrainedCfg`: that of a CLIP registry name
    (``'clip_vit_l14_336'``) or of an input size in pixels (``clip_cfg(224)``).

    It is OpenAI's ``clip.clip._transform(n_px)``: ``Resize(n_px, BICUBIC)``,
    ``CenterCrop(n_px)``, RGB, ``ToTensor``, ``Normalize(CLIP_MEAN, CLIP_STD)``.
    """
    if isinstance(model, str):
        if model not in CLIP_INPUT_SIZES:
            close = difflib.get_close_matches(model, CLIP_INPUT_SIZES, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown CLIP model {model!r}{hint} (known: {', '.join(CLIP_INPUT_SIZES)})"
            )
        name, n_px = model, CLIP_INPUT_SIZES[model]
    elif isinstance(model, numbers.Integral) and not isinstance(model, bool) and model > 0:
        name, n_px = f"clip_{model}px", int(model)
    else:
        raise ValueError(f"expected a CLIP model name or a positive input size, got {model!r}")
    return PretrainedCfg(
        name=name,
        tag="openai",
        source="openai",
        source_name=name,
        source_tag="openai",
        default=True,
        url=None,
        hf_hub_id=None,
        num_classes=0,  # zero-shot: classes are text embeddings
        input_size=(n_px, n_px, 3),
        resize_size=n_px,
        crop_pct=1.0,
        interpolation="bicubic",
        mean=CLIP_MEAN,
        std=CLIP_STD,
        top1=None,
        top5=None,
        license=None,
        recipe=None,
    )


def preprocess(image: Any, cfg: PretrainedCfg | str = "resnet50") -> np.ndarray:
    """One image (PIL, or H x W x 3 uint8 / [0, 1] float array) -> normalised H x W x 3 float32.

    ``cfg`` is a :class:`PretrainedCfg` or a name / ``name.tag`` whose eval transform to
    reproduce; a CLIP registry name (``'clip_vit_b32'``) means :func:`clip_cfg`, the
    transform every released CLIP checkpoint uses. Stack the results for a batch.
    """
    from PIL import Image

    if isinstance(cfg, str) and cfg in CLIP_INPUT_SIZES:
        cfg = clip_cfg(cfg)
    elif not isinstance(cfg, PretrainedCfg):
        cfg = get_pretrained_cfg(cfg)
    if isinstance(image, Image.Image) and cfg.source in _RGB_AFTER_CROP:
        img = image
    else:
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
    img = img.crop((left, top, left + tw, top + th)).convert("RGB")
    a = np.asarray(img, np.float32) / 255.0
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
