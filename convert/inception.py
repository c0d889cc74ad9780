"""Inception v3 conversion: torchvision and timm name the modules identically
(``Mixed_6e.branch7x7dbl_3.conv``, ``AuxLogits.conv1.bn``) and flaxcnn mirrors them.
torchvision builds the aux head by default, timm does not: whether it exists is read
from the weights."""

from __future__ import annotations

from .core import Rules, register_rules

register_rules(
    "inception",
    Rules(config=lambda sd: {"aux_logits": any(k.startswith("AuxLogits.") for k in sd)}),
)
