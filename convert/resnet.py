"""ResNet family conversion notes.

torchvision and timm name ResNet/ResNeXt/Wide ResNet modules identically
(``conv1``, ``bn1``, ``layer1.0.downsample.0``, ``fc``), and flaxcnn's module
names mirror them, so the generic rename-and-transpose rule converts the family
with no extra rules. What the family does register is how to condition a random
torch model for :func:`flaxcnn.convert.verify` (see there for why).
"""

from __future__ import annotations

from typing import Any

from .verify import register_verify_hook, scale_last_bns

__all__ = ["make_residual_branches_contractive"]


def make_residual_branches_contractive(model: Any, generator: Any) -> None:
    """Scale the last BN of every residual block to U(0.1, 0.3), as trained ResNets have it.

    The last BN is ``bn3`` in a bottleneck and ``bn2`` in a basic block (the ones
    torchvision's ``zero_init_residual`` zeroes).
    """
    scale_last_bns(model, generator, _last_bn)


def _last_bn(m: Any) -> Any:
    if not hasattr(m, "conv1"):
        return None
    return getattr(m, "bn3", None) if hasattr(m, "conv3") else getattr(m, "bn2", None)


register_verify_hook("resnet", make_residual_branches_contractive)
