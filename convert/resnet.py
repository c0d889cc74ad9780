"""ResNet family conversion notes.

torchvision and timm name ResNet/ResNeXt/Wide ResNet modules identically
(``conv1``, ``bn1``, ``layer1.0.downsample.0``, ``fc``), and flaxcnn's module
names mirror them, so the generic rename-and-transpose rule converts the family
with no extra rules. What the family does register is how to condition a random
torch model for :func:`flaxcnn.convert.verify` (see there for why).
"""

from __future__ import annotations

from typing import Any

from .verify import register_verify_hook

__all__ = ["make_residual_branches_contractive"]


def make_residual_branches_contractive(model: Any, generator: Any) -> None:
    """Scale the last BN of every residual block to U(0.1, 0.3), as trained ResNets have it.

    The last BN is ``bn3`` in a bottleneck and ``bn2`` in a basic block (the ones
    torchvision's ``zero_init_residual`` zeroes).
    """
    import torch

    with torch.no_grad():
        for m in model.modules():
            last = getattr(m, "bn3", None) if hasattr(m, "conv3") else getattr(m, "bn2", None)
            if isinstance(last, torch.nn.modules.batchnorm._BatchNorm) and hasattr(m, "conv1"):
                c = last.num_features
                last.weight.copy_(torch.rand(c, generator=generator) * 0.2 + 0.1)


register_verify_hook("resnet", make_residual_branches_contractive)
