"""Flax -> torch: ``to_torch`` turns flaxcnn variables back into a torchvision/timm state dict.

It runs the forward mapping of :mod:`flaxcnn.convert.core` over the torch model's own
keys and inverts each transform, so a model trained or fine-tuned in JAX loads into the
torch model with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from .._registry import find_by_source
from .core import ConversionReport, Mismatch, default_transform, get_rules, leaves_by_module
from .errors import ConversionError

__all__ = ["to_torch"]


def _head_config(spec, rules, flat, leaves_at) -> dict[str, int]:
    """``num_classes``/``in_chans`` of the variables, found through the torch names."""
    cfg = {}
    if spec.classifier:
        target = rules.target(f"{spec.classifier}.weight", leaves_at)
        if target in flat:
            cfg["num_classes"] = int(flat[target].shape[-1])
        elif not any(t[:-1] == target[:-1] for t in flat):
            cfg["num_classes"] = 0
    if spec.first_conv:
        target = rules.target(f"{spec.first_conv}.weight", leaves_at)
        if target in flat and flat[target].ndim == 4:
            cfg["in_chans"] = int(flat[target].shape[2])  # HWIO; the first conv is never grouped
    return cfg


def to_torch(
    name: str,
    variables: Mapping[str, Any],
    *,
    source: str,
    strict: bool = True,
    torch_kwargs: dict[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
):
    """A state dict for the torch model ``name`` of ``source`` holding the Flax ``variables``.

    ``num_classes`` and ``in_chans`` are read from the variables. With ``strict`` (default)
    any torch tensor left unfilled, Flax variable left unused or shape mismatch raises
    :class:`ConversionError`; otherwise ``(state_dict, report)`` is returned.
    ``reference`` is a state dict of the target torch model, if one is at hand (it
    saves building the torch model; only its keys, shapes and dtypes are used).
    """
    import torch

    from .verify import build_torch_model

    spec = find_by_source(source, name)
    rules = get_rules(spec.family, source)
    flat = traverse_util.flatten_dict(dict(variables))
    leaves_at = leaves_by_module(flat)
    kwargs = {**_head_config(spec, rules, flat, leaves_at), **(torch_kwargs or {})}
    if source == "torchvision":
        in_chans = kwargs.pop("in_chans", 3)  # torchvision models are 3-channel only
        if in_chans != 3 and reference is None:
            other = (
                "use source='timm' (timm models take in_chans), or "
                if "timm" in spec.sources
                else ""
            )
            raise ConversionError(
                f"{name}: the variables take {in_chans}-channel input, but torchvision's "
                f"{name} has no in_chans argument (3 channels only); {other}build the torch "
                f"model, replace its first conv {spec.first_conv!r} by a {in_chans}-channel one "
                "and pass its state_dict() as reference="
            )
    if reference is None:
        reference = build_torch_model(name, source, **kwargs).state_dict()

    report = ConversionReport(direction="flax->torch")
    out: dict[str, torch.Tensor] = {}
    used = set()
    for key, ref in reference.items():
        if rules.ignores(key):
            out[key] = ref.clone()  # buffers with no Flax counterpart by design
            continue
        target = rules.target(key, leaves_at)
        report.mapping[key] = target
        joined = "/".join(target)
        if target not in flat:
            report.missing.append(f"{key} (<- {joined})")
            continue
        used.add(target)
        arr = np.asarray(flat[target], dtype=np.float32)
        custom = rules.transform_for(joined)
        if custom is not None:
            if custom.inverse is None:
                raise ConversionError(
                    f"{spec.family}: {joined} has a conversion transform without an inverse; export is not supported"
                )
            arr = custom.inverse(arr)
        else:
            arr = default_transform(target[-1], arr, inverse=True)
        if tuple(arr.shape) != tuple(ref.shape):
            report.mismatched.append(
                Mismatch(joined, key, tuple(arr.shape), tuple(ref.shape), ("variables", "torch"))
            )
            continue
        out[key] = torch.from_numpy(np.array(arr, copy=True)).to(ref.dtype)
    report.unexpected = sorted("/".join(p) for p in flat if p not in used)
    if strict and not report.ok:
        raise ConversionError(str(report), report)
    return out if strict else (out, report)
