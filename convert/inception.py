"""Inception v3 conversion, and how :func:`~flaxcnn.convert.verify` conditions it.

torchvision and timm name the modules identically (``Mixed_6e.branch7x7dbl_3.conv``,
``AuxLogits.conv1.bn``) and flaxcnn mirrors them. torchvision builds the aux head by
default, timm does not: whether it exists is read from the weights.
"""

from __future__ import annotations

from typing import Any

from .core import Rules, register_rules
from .verify import register_verify_hook

__all__ = ["condition_for_verify"]

register_rules(
    "inception",
    Rules(config=lambda sd: {"aux_logits": any(k.startswith("AuxLogits.") for k in sd)}),
)


def condition_for_verify(model: Any, generator: Any) -> None:
    """Draw every BN bias from U(1, 2) (most ReLUs pass), and the aux head's ``conv1`` at
    std 0.01 (x0.1).

    Inception v3 is a plain (non-residual) stack of ~48 BN-ReLU layers on its longest
    path. At random initialisation, with zero-mean pre-activations, train mode (BN on
    batch statistics) is chaotic and amplifies rounding with depth (Yang et al., ICLR
    2019). And the aux head's last BN sees a 1x1 map, so with a batch of 2 its batch
    variance is (a - b)^2 / 2 of two 3200-term dot products: their float32 rounding
    (~3e-6 relative, random-sign terms) passes straight into the statistic, scaled by
    that variance (~100 with torchvision's std 0.1 there; its code means 0.01, but the
    ``stddev`` attribute sits on the BasicConv2d, where its init loop does not look).

    Measured (seed 0, batch 2, 299x299), torch's *own* float32 model against its
    float64 twin, worst updated running statistic: 3.7e-5 relative (timm, Mixed_7c) and
    4.5e-5 (torchvision, AuxLogits.conv1.bn), above the 1e-5 bound no float32
    implementation could then meet; BN biases in U(1, 2) alone: 1.4e-6 and 4.6e-6 (the
    aux BN); with the aux conv1 at std 0.01 too: 1.5e-6 (Mixed_7b). Train outputs agree
    to 6e-7 relative. Every parameter still matters and the bound is kept.
    """
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
                m.bias.copy_(torch.rand(m.num_features, generator=generator) + 1.0)
        aux = getattr(model, "AuxLogits", None)
        if aux is not None:
            aux.conv1.conv.weight.mul_(0.1)


register_verify_hook("inception", condition_for_verify)
