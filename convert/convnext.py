"""ConvNeXt conversion: torchvision's names onto flaxcnn's (timm's) naming.

timm and flaxcnn name ConvNeXt alike (``stem.0``, ``stages.1.downsample.1``,
``stages.2.blocks.3.conv_dw``, ``mlp.fc1``, ``gamma``, ``head.norm``, ``head.fc``).
torchvision keeps one flat ``features`` Sequential (stem, stage, downsample,
stage, ...), a ``block`` Sequential per block (``0`` dwconv, ``2`` norm, ``3``/``5``
linears), ``layer_scale`` of shape (C, 1, 1) and ``classifier.0``/``.2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core import Rules, Transform, register_rules
from .verify import register_verify_hook

__all__ = ["TORCHVISION_RULES", "randomize_layer_norm_and_scale"]


def _features_renames() -> list[tuple[str, str]]:
    renames = [(r"^features\.0\.", "stem.")]
    for i in range(4):
        # features.1/3/5/7 are the stages, features.2/4/6 the downsamples of stages 1-3.
        renames.append((rf"^features\.{2 * i + 1}\.(\d+)\.", rf"stages.{i}.blocks.\1."))
        if i > 0:
            renames.append((rf"^features\.{2 * i}\.", f"stages.{i}.downsample."))
    return renames


TORCHVISION_RULES = Rules(
    renames=[
        *_features_renames(),
        (r"\.block\.0\.", ".conv_dw."),
        (r"\.block\.2\.", ".norm."),
        (r"\.block\.3\.", ".mlp.fc1."),
        (r"\.block\.5\.", ".mlp.fc2."),
        (r"\.layer_scale$", ".gamma"),
        (r"^classifier\.0\.", "head.norm."),
        (r"^classifier\.2\.", "head.fc."),
    ],
    # (C, 1, 1) -> (C,), and back for export
    transforms=[
        Transform(
            r"/gamma$",
            lambda a: np.asarray(a).reshape(-1),
            lambda a: np.asarray(a).reshape(-1, 1, 1),
        )
    ],
)
register_rules("convnext", TORCHVISION_RULES, source="torchvision")


def randomize_layer_norm_and_scale(model: Any, generator: Any) -> None:
    """Random LayerNorm affines and layer scales, so that no parameter hides.

    At initialisation the layer scale is 1e-6: every residual branch would contribute
    ~1e-6 of the output and a wrong branch would pass any tolerance; LayerNorm's
    identity affine would hide a swapped weight/bias. Layer scales are drawn from
    U(0.1, 0.3), LayerNorm weights from U(0.75, 1.25) and biases from N(0, 0.1).
    """
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                c = m.weight.shape
                m.weight.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.1)
            for pname in ("gamma", "layer_scale"):
                p = getattr(m, pname, None)
                if isinstance(p, torch.nn.Parameter):
                    p.copy_(torch.rand(p.shape, generator=generator) * 0.2 + 0.1)


register_verify_hook("convnext", randomize_layer_norm_and_scale)
