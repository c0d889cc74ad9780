"""User-facing conversion: ``from_torch`` and ``load_torch_weights``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from .._registry import SOURCES, ModelSpec, find_by_source, spec_of_module
from .checkpoint import load_checkpoint, to_numpy_state_dict
from .core import ConversionReport, Rules, convert_state_dict, get_rules, variable_shapes

__all__ = ["from_torch", "load_torch_weights", "read_state_dict"]


def read_state_dict(obj: Any) -> dict[str, np.ndarray]:
    """A torch ``nn.Module``, a state dict, or a checkpoint path, as ``{key: numpy array}``."""
    if isinstance(obj, (str, os.PathLike)):
        return load_checkpoint(obj)
    return to_numpy_state_dict(obj)


def _config_from_weights(
    spec: ModelSpec, sd: Mapping[str, np.ndarray], rules: Rules
) -> dict[str, Any]:
    """``num_classes`` and ``in_chans`` as the weights have them, and the family's ``config``.

    ``spec.classifier``/``spec.first_conv`` are torch names in the family's canonical
    naming, so the source's keys are renamed by its rules first.
    """
    cfg: dict[str, Any] = dict(rules.config(sd)) if rules.config is not None else {}
    sd = {rules.rename(k): v for k, v in sd.items()}
    fields = spec.fields
    head = f"{spec.classifier}.weight" if spec.classifier else None
    if head and "num_classes" in fields:
        if head in sd:
            cfg["num_classes"] = int(sd[head].shape[0])
        elif not any(k.startswith(f"{spec.classifier}.") for k in sd):
            cfg["num_classes"] = 0  # headless weights (timm reset_classifier(0) / num_classes=0)
    stem = f"{spec.first_conv}.weight" if spec.first_conv else None
    if stem and stem in sd and "in_chans" in fields and sd[stem].ndim == 4:
        cfg["in_chans"] = int(sd[stem].shape[1])
    return cfg


def _input_shape(module: nn.Module, spec: ModelSpec | None) -> tuple[int, ...]:
    h, w, c = spec.input_size if spec else (224, 224, 3)
    return (1, h, w, getattr(module, "in_chans", c))


def load_torch_weights(
    module: nn.Module,
    weights: Any,
    *,
    source: str | None = None,
    strict: bool = True,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, Any] | tuple[dict[str, Any], ConversionReport]:
    """Convert torch ``weights`` (module, state dict or file) for an existing Flax ``module``.

    Use this when you built the module yourself. With ``strict`` (default) returns the
    variables or raises :class:`ConversionError` listing missing, unexpected and
    mis-shaped tensors; with ``strict=False`` returns ``(variables, report)`` where
    variables the weights did not provide keep their fresh initialisation.
    """
    spec = spec_of_module(module)  # the registered variant carries the family's rules
    sd = read_state_dict(weights)
    shape = input_shape or _input_shape(module, spec)
    shapes = variable_shapes(module, shape)
    rules = get_rules(spec.family if spec else None, source)
    variables, report = convert_state_dict(sd, shapes, rules, strict=strict)
    if strict:
        return variables
    if report.missing or report.mismatched:
        init = traverse_util.flatten_dict(
            dict(module.init(jax.random.key(0), jnp.zeros(shape, jnp.float32)))
        )
        flat = traverse_util.flatten_dict(variables)
        variables = traverse_util.unflatten_dict({**init, **flat})
    return variables, report


def from_torch(
    name: str,
    weights: Any,
    *,
    source: str,
    strict: bool = True,
    **overrides: Any,
):
    """Convert a torchvision or timm model to flaxcnn: ``module, variables = from_torch(...)``.

    Args:
        name: the *source* library's model name, as ``torchvision.models.get_model`` or
            ``timm.create_model`` take it (``'resnet50'``, ``'resnext50_32x4d'``).
        weights: the torch model, its ``state_dict()``, or a checkpoint path
            (``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=True)``, or ``.safetensors``).
        source: ``'torchvision'`` or ``'timm'``.
        strict: raise :class:`ConversionError` on any missing, unexpected or
            mis-shaped tensor (default). ``False`` returns ``(module, variables, report)``.
        overrides: extra module fields (e.g. ``dtype=jnp.bfloat16``); ``num_classes``
            and ``in_chans`` are read from the weights.

    Returns:
        ``(module, variables)``: the matching flaxcnn module and its
        ``{'params': ..., 'batch_stats': ...}``.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    spec = find_by_source(source, name)
    sd = read_state_dict(weights)
    rules = get_rules(spec.family, source)
    cfg = {**_config_from_weights(spec, sd, rules), **overrides}
    module = spec.build(**cfg)
    shapes = variable_shapes(module, _input_shape(module, spec))
    variables, report = convert_state_dict(sd, shapes, rules, strict=strict)
    if strict:
        return module, variables
    if report.missing or report.mismatched:
        variables, _ = load_torch_weights(module, sd, source=source, strict=False)
    return module, variables, report
