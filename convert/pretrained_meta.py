"""Generate ``flaxcnn/_data/pretrained_cfgs.json`` from the installed torchvision, timm,
OpenAI's ``clip`` and ``open_clip``.

Each registered model gets one entry per weight tag its sources publish: torchvision's
weights enums (``IMAGENET1K_V2``...), timm's pretrained tags (``a1_in1k``...), OpenAI's
CLIP checkpoints (tag ``openai``) and open_clip's other weights for the same
architectures (``laion400m_e32``, ``metaclip_fullcc``, ...), with what is needed to fetch,
preprocess and describe them. Shipping the table as data means
``flaxcnn`` can list and describe weights without importing torch; a test regenerates it
and compares, so it cannot drift from the libraries.

Run ``python -m flaxcnn.convert meta --write`` after registering models.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path
from typing import Any

import flaxcnn

# The table covers every family, whichever of them `flaxcnn.models` imports by default.
from flaxcnn.models import clip as _clip_models  # noqa: F401
from flaxcnn.models import vit as _vit_models  # noqa: F401

__all__ = ["PRETRAINED_JSON", "generate", "write"]

PRETRAINED_JSON = Path(flaxcnn.__file__).parent / "_data" / "pretrained_cfgs.json"


def _torchvision_entries(name: str, src_name: str) -> list[dict[str, Any]]:
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(src_name)
    except (ValueError, KeyError):
        return []
    default = enum.DEFAULT if hasattr(enum, "DEFAULT") else None
    out = []
    for w in enum:
        tf = w.transforms
        defaults = {
            k: p.default
            for k, p in inspect.signature(tf.func).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        kw = {**defaults, **tf.keywords}
        if "crop_size" not in kw or w.meta.get("categories") is None:
            continue  # segmentation presets (FCN) and headless feature weights (VGG16 FEATURES)
        crop, resize = int(kw["crop_size"]), int(kw["resize_size"])
        metrics = w.meta.get("_metrics", {}).get("ImageNet-1K", {})
        out.append(
            dict(
                tag=w.name,
                source="torchvision",
                source_name=src_name,
                source_tag=w.name,
                default=w is default,
                url=w.url,
                hf_hub_id=None,
                num_classes=len(w.meta["categories"]),
                input_size=[crop, crop, 3],
                resize_size=resize,
                crop_pct=round(crop / resize, 4),
                interpolation=str(kw["interpolation"].value),
                mean=list(kw["mean"]),
                std=list(kw["std"]),
                top1=metrics.get("acc@1"),
                top5=metrics.get("acc@5"),
                license="BSD-3-Clause (torchvision); ImageNet terms of use apply",
                recipe=w.meta.get("recipe"),
            )
        )
    return out


def _timm_entries(name: str, src_name: str) -> list[dict[str, Any]]:
    import timm

    out = []
    tags = [
        t.split(".", 1)[1]
        for t in timm.list_pretrained(f"{src_name}.*")
        if t.split(".", 1)[0] == src_name
    ]
    default_tag = timm.models.get_pretrained_cfg(src_name).tag if tags else None  # timm's default
    for tag in tags:
        c = timm.models.get_pretrained_cfg(f"{src_name}.{tag}")
        if c is None or c.custom_load:
            continue
        _, h, w = c.input_size
        crop_pct = c.crop_pct or 0.875
        out.append(
            dict(
                tag=tag,
                source="timm",
                source_name=src_name,
                source_tag=tag,
                default=tag == default_tag,
                url=c.url or None,
                hf_hub_id=c.hf_hub_id or None,
                num_classes=int(c.num_classes),
                input_size=[h, w, 3],
                resize_size=math.floor(min(h, w) / crop_pct),
                crop_pct=crop_pct,
                interpolation=c.interpolation or "bilinear",
                mean=list(c.mean),
                std=list(c.std),
                top1=None,  # timm's results tables are not part of the package
                top5=None,
                license=c.license,
                recipe=c.origin_url,
            )
        )
    return out


def _clip_entry(name: str, **fields: Any) -> dict[str, Any]:
    """An entry with CLIP's eval transform (:func:`flaxcnn.preprocess.clip_cfg`), which
    every released CLIP checkpoint and open_clip's ``-quickgelu`` weights use."""
    from flaxcnn.preprocess import clip_cfg

    c = clip_cfg(name)
    return dict(
        num_classes=0,  # zero-shot: the classes are text embeddings
        input_size=list(c.input_size),
        resize_size=c.resize_size,
        crop_pct=c.crop_pct,
        interpolation=c.interpolation,
        mean=list(c.mean),
        std=list(c.std),
        top1=None,
        top5=None,
        **fields,
    )


def _openai_entries(name: str, src_name: str) -> list[dict[str, Any]]:
    """OpenAI's checkpoint of ``src_name`` (``'ViT-B/32'``), tag ``openai``: fetched by the
    ``clip`` package into its cache (``~/.cache/clip``), a TorchScript archive."""
    from clip.clip import _MODELS

    if src_name not in _MODELS:
        return []
    return [
        _clip_entry(
            name,
            tag="openai",
            source="openai",
            source_name=src_name,
            source_tag="openai",
            default=True,
            url=_MODELS[src_name],
            hf_hub_id=None,
            license="MIT (OpenAI CLIP)",
            recipe="https://github.com/openai/CLIP",
        )
    ]


def _open_clip_entries(name: str, src_name: str) -> list[dict[str, Any]]:
    """open_clip's weights for ``src_name`` (``'ViT-B-32-quickgelu'``) other than OpenAI's
    (tag ``openai``, listed from OpenAI's own package): LAION-400M, MetaCLIP, DFN, YFCC,
    CC12M. Only tags whose preprocessing is CLIP's are listed (all of them, today)."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    from flaxcnn.preprocess import clip_cfg

    ref = clip_cfg(name)
    out = []
    for tag in open_clip.list_pretrained_tags_by_model(src_name):
        c = get_pretrained_cfg(src_name, tag)
        if tag == "openai" or not c.get("quick_gelu", False):
            continue
        if (
            tuple(c.get("mean", ref.mean)) != ref.mean
            or tuple(c.get("std", ref.std)) != ref.std
            or c.get("interpolation", "bicubic") != "bicubic"
            or c.get("resize_mode", "shortest") != "shortest"
        ):
            continue
        out.append(
            _clip_entry(
                name,
                tag=tag,
                source="open_clip",
                source_name=src_name,
                source_tag=tag,
                default=False,
                url=c.get("url") or None,
                # open_clip's "owner/repo/" (its default file names) or "owner/repo/file".
                hf_hub_id=os.path.split(c.get("hf_hub", ""))[0] or None,
                license=None,  # open_clip's table does not record it; see the model card
                recipe="https://github.com/mlfoundations/open_clip",
            )
        )
    return out


def generate() -> dict[str, list[dict[str, Any]]]:
    """``{registry name: [entry, ...]}`` for every registered model with sources."""
    table = {}
    for name in flaxcnn.list_models():
        spec = flaxcnn.get_model_spec(name)
        entries = []
        if "torchvision" in spec.sources:
            entries += _torchvision_entries(name, spec.sources["torchvision"])
        if "timm" in spec.sources:
            entries += _timm_entries(name, spec.sources["timm"])
        if "openai" in spec.sources:
            entries += _openai_entries(name, spec.sources["openai"])
        if "open_clip" in spec.sources:
            entries += _open_clip_entries(name, spec.sources["open_clip"])
        if entries:
            table[name] = entries
    return table


def write(path: Path = PRETRAINED_JSON) -> Path:
    path.write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    return path
