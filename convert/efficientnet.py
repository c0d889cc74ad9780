"""MobileNet v1/v2/v3 and EfficientNet (B0-B7, Lite, V2) conversion rules.

flaxcnn names these modules as timm does (``conv_stem``, ``blocks.3.1.conv_pw``,
``conv_head``, ``classifier``), so timm needs a single rename: its EfficientNet
squeeze-and-excitation calls its convs ``conv_reduce``/``conv_expand`` where the shared
:class:`~flaxcnn.layers.SqueezeExcite` (and torchvision) say ``fc1``/``fc2``.

torchvision numbers the same layers by position: ``features.0`` is the stem,
``features.S.J.block.K`` (EfficientNet) or ``features.N.block.K`` / ``features.N.conv.K``
(MobileNet v3 / v2, one flat list of blocks) the blocks, the last ``features`` entry the
head, and ``classifier.1`` the final Linear. Inside a block, position ``K`` is, in order,
the block's convs (each a conv + BN pair) with the SE module (``fc1``/``fc2``) after the
depthwise conv when there is one; the rules below turn positions into timm's names.
MobileNet v3's head conv is torchvision's ``classifier.0`` Linear applied after pooling:
the same affine map, stored 2-D, so it is reshaped into a 1x1 conv kernel.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..models.efficientnet import MOBILENET_V2, decode_arch
from .core import Rules, Transform, register_rules
from .verify import register_verify_hook, scale_last_bns

__all__ = ["TV_LAYOUTS", "make_residual_blocks_contractive"]

# Per block kind: the (conv, norm) names of the block's conv + BN pairs in torch order.
TV_LAYOUTS = {
    "ds": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "ir": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
    "er": (("conv_exp", "bn1"), ("conv_pwl", "bn2")),
    "cn": (("conv", "bn1"),),
}

_STEM = [(r"^features\.0\.0\.", "conv_stem."), (r"^features\.0\.1\.", "bn1.")]
_TIMM_SE = Rules(
    renames=[(r"\.se\.conv_reduce\.", ".se.fc1."), (r"\.se\.conv_expand\.", ".se.fc2.")]
)


def _inner(kind: str, pos: int, sub: str, rest: str) -> str:
    """``block.K.sub.rest`` of a torchvision block -> timm's ``name.rest``.

    The SE module sits between the depthwise conv and the projection, so a conv at a
    position past the last layout entry is the projection of a block with SE.
    """
    layout = TV_LAYOUTS[kind]
    conv, norm = layout[min(pos, len(layout) - 1)]
    return f"{conv if sub == '0' else norm}.{rest}"


def _effnet_rename(kind_of_stage):
    """torchvision EfficientNet: ``features.S.J.block.K.{0,1}.x`` -> ``blocks.{S-1}.J.<name>.x``."""

    def rep(m: re.Match) -> str:
        s, j, pos, sub, rest = int(m[1]), m[2], int(m[3]), m[4], m[5]
        return f"blocks.{s - 1}.{j}.{_inner(kind_of_stage(s), pos, sub, rest)}"

    return rep


def _efficientnet_rules(kind_of_stage) -> Rules:
    return Rules(
        renames=[
            *_STEM,
            (r"^features\.(\d+)\.(\d+)\.block\.(\d+)\.(0|1)\.(.*)$", _effnet_rename(kind_of_stage)),
            (
                r"^features\.(\d+)\.(\d+)\.block\.\d+\.(fc1|fc2)\.",
                lambda m: f"blocks.{int(m[1]) - 1}.{m[2]}.se.{m[3]}.",
            ),
            (r"^features\.\d+\.0\.", "conv_head."),
            (r"^features\.\d+\.1\.", "bn2."),
            (r"^classifier\.1\.", "classifier."),
        ]
    )


def _v1_kind(stage: int) -> str:
    return "ds" if stage == 1 else "ir"


def _v2_kind(stage: int) -> str:
    # EfficientNetV2: a plain conv stage, two Fused-MBConv stages, then MBConv.
    return "cn" if stage == 1 else "er" if stage <= 3 else "ir"


def _mobilenet_v3_rules() -> Rules:
    # flaxcnn's torchvision MobileNet v3 is flat (a block per stage): features.N -> blocks.N-1.0
    def block(m: re.Match) -> str:
        n, pos, sub, rest = int(m[1]), int(m[2]), m[3], m[4]
        return f"blocks.{n - 1}.0.{_inner('ds' if n == 1 else 'ir', pos, sub, rest)}"

    return Rules(
        renames=[
            *_STEM,
            (r"^features\.(\d+)\.block\.(\d+)\.(0|1)\.(.*)$", block),
            (
                r"^features\.(\d+)\.block\.\d+\.(fc1|fc2)\.",
                lambda m: f"blocks.{int(m[1]) - 1}.0.se.{m[2]}.",
            ),
            # the last features entry is a plain conv + BN block ('cn')
            (r"^features\.(\d+)\.0\.", lambda m: f"blocks.{int(m[1]) - 1}.0.conv."),
            (r"^features\.(\d+)\.1\.", lambda m: f"blocks.{int(m[1]) - 1}.0.bn1."),
            (r"^classifier\.0\.", "conv_head."),
            (r"^classifier\.3\.", "classifier."),
        ],
        transforms=[
            Transform(
                r"^params/conv_head/kernel$",
                lambda a: np.asarray(a).T[None, None],  # Linear (out, in) -> 1x1 conv HWIO
                lambda k: np.asarray(k)[0, 0].T,  # and back, for export
            )
        ],
    )


def _mobilenet_v2_rules() -> Rules:
    # torchvision lists MobileNet v2's 17 blocks flat; timm groups them in stages.
    where = [(i, j) for i, stage in enumerate(decode_arch(MOBILENET_V2)) for j in range(len(stage))]
    ds = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}
    ir = {
        "conv.0.0": "conv_pw",
        "conv.0.1": "bn1",
        "conv.1.0": "conv_dw",
        "conv.1.1": "bn2",
        "conv.2": "conv_pwl",
        "conv.3": "bn3",
    }

    def block(m: re.Match) -> str:
        n, layer, leaf = int(m[1]), m[2], m[3]
        i, j = where[n - 1]
        return f"blocks.{i}.{j}.{(ds if n == 1 else ir)[layer]}.{leaf}"

    return Rules(
        renames=[
            *_STEM,
            (r"^features\.(\d+)\.(conv\.\d+(?:\.\d+)?)\.(\w+)$", block),
            (r"^features\.\d+\.0\.", "conv_head."),
            (r"^features\.\d+\.1\.", "bn2."),
            (r"^classifier\.1\.", "classifier."),
        ]
    )


for _family in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "efficientnet", "efficientnet_v2"):
    register_rules(_family, _TIMM_SE, source="timm")
register_rules("mobilenet_v2", _mobilenet_v2_rules(), source="torchvision")
register_rules("mobilenet_v3", _mobilenet_v3_rules(), source="torchvision")
register_rules("efficientnet", _efficientnet_rules(_v1_kind), source="torchvision")
register_rules("efficientnet_v2", _efficientnet_rules(_v2_kind), source="torchvision")


def make_residual_blocks_contractive(model: Any, generator: Any) -> None:
    """Scale the last BN of every block with a residual connection to U(0.1, 0.3).

    Random-init mobile networks with randomised BN statistics are chaotic in eval mode:
    every residual block adds its branch at full scale, so activations grow through the
    depth until float32 rounding decides the output. Measured (97x131 input): torch's own
    float32 timm ``tf_efficientnetv2_s`` differs from its float64 twin by 12% relative
    (max|ref| 9.7e3), so no float32 implementation could meet 1e-4 against it. Trained
    networks keep residual branches small, as this hook does (scales drawn small but
    non-zero, so every parameter still matters); blocks without a skip are untouched.
    The last BN is found by registration order, which is execution order in timm's blocks
    (``bn3``/``bn2``/``bn1``) and torchvision's Sequentials alike.
    """
    scale_last_bns(model, generator, _last_bn_of_residual_block)


def _last_bn_of_residual_block(m: Any) -> Any:
    import torch

    if not (getattr(m, "has_skip", False) or getattr(m, "use_res_connect", False)):
        return None
    bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    return bns[-1] if bns else None


for _family in ("mobilenet_v2", "mobilenet_v3", "efficientnet", "efficientnet_v2"):
    register_verify_hook(_family, make_residual_blocks_contractive)
