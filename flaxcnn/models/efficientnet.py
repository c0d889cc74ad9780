"""MobileNet v1/v2/v3 and EfficientNet (B0-B7, Lite, V2): one builder, variants as block strings.

* MobileNet v1: Howard et al., "MobileNets: Efficient Convolutional Neural Networks for
  Mobile Vision Applications", 2017 (arXiv:1704.04861).
* MobileNet v2: Sandler et al., "MobileNetV2: Inverted Residuals and Linear
  Bottlenecks", CVPR 2018 (arXiv:1801.04381).
* MobileNet v3: Howard et al., "Searching for MobileNetV3", ICCV 2019 (arXiv:1905.02244).
* EfficientNet and EfficientNet-Lite: Tan & Le, "EfficientNet: Rethinking Model Scaling
  for Convolutional Neural Networks", ICML 2019 (arXiv:1905.11946).
* EfficientNetV2: Tan & Le, "EfficientNetV2: Smaller Models and Faster Training",
  ICML 2021 (arXiv:2104.00298).

All of them are a stem conv, stages of mobile blocks and a head, so one
:class:`EfficientNet` module builds them from a list of *block strings*, one line per
stage (timm's notation; :mod:`flaxcnn.models._efficientnet_builder` documents it and
holds the decoder, the blocks and the module). This module holds the architectures, as
block strings, and their registry rows.

Registry names are the sources' own names. Where torchvision's and timm's networks are
identical, BN settings included (MobileNet v2, EfficientNet B0-B4), one entry converts
from both. Otherwise torchvision's entry has torchvision's name (``mobilenet_v3_large``:
timm's twin has BN eps 1e-5, momentum 0.1; ``efficientnet_v2_s``: timm's is a TF port)
or, where timm uses the same name, a ``tv_`` prefix (``tv_efficientnet_b5``: BN eps 1e-3,
momentum 0.01, weights TF-ported by torchvision but run with symmetric padding).
``tf_*`` models use TF 'SAME' padding and TF's BN eps 1e-3.
"""

from __future__ import annotations

from typing import Any

from .._registry import variants
from ..layers import make_divisible
from ._efficientnet_builder import (
    BlockArgs,
    BlockPlan,
    EfficientNet,
    MobileBlock,
    decode_arch,
    flat_arch,
    round_channels,
)

__all__ = [
    "BlockArgs",
    "BlockPlan",
    "EfficientNet",
    "MobileBlock",
    "decode_arch",
    "flat_arch",
    "make_divisible",
    "round_channels",
]

# Each architecture is its block strings; a variant adds its scaling and settings.

MOBILENET_V1 = (
    "dsa_r1_k3_s1_c64",
    "dsa_r2_k3_s2_c128",
    "dsa_r2_k3_s2_c256",
    "dsa_r6_k3_s2_c512",
    "dsa_r2_k3_s2_c1024",
)
MOBILENET_V2 = (
    "ds_r1_k3_s1_c16",
    "ir_r2_k3_s2_e6_c24",
    "ir_r3_k3_s2_e6_c32",
    "ir_r4_k3_s2_e6_c64",
    "ir_r3_k3_s1_e6_c96",
    "ir_r3_k3_s2_e6_c160",
    "ir_r1_k3_s1_e6_c320",
)
# MobileNet v3 as timm groups its blocks into stages (torchvision's form: :func:`flat_arch`).
MOBILENET_V3_LARGE = (
    "ds_r1_k3_s1_e1_c16_nre",
    "ir_r1_k3_s2_e4_c24_nre ir_r1_k3_s1_e3_c24_nre",
    "ir_r3_k5_s2_e3_c40_se0.25_nre",
    "ir_r1_k3_s2_e6_c80 ir_r1_k3_s1_e2.5_c80 ir_r2_k3_s1_e2.3_c80",
    "ir_r2_k3_s1_e6_c112_se0.25",
    "ir_r3_k5_s2_e6_c160_se0.25",
    "cn_r1_k1_s1_c960",
)
MOBILENET_V3_SMALL = (
    "ds_r1_k3_s2_e1_c16_se0.25_nre",
    "ir_r1_k3_s2_e4.5_c24_nre ir_r1_k3_s1_e3.67_c24_nre",
    "ir_r1_k5_s2_e4_c40_se0.25 ir_r2_k5_s1_e6_c40_se0.25",
    "ir_r2_k5_s1_e3_c48_se0.25",
    "ir_r3_k5_s2_e6_c96_se0.25",
    "cn_r1_k1_s1_c576",
)


EFFICIENTNET = (
    "ds_r1_k3_s1_e1_c16_se0.25",
    "ir_r2_k3_s2_e6_c24_se0.25",
    "ir_r2_k5_s2_e6_c40_se0.25",
    "ir_r3_k3_s2_e6_c80_se0.25",
    "ir_r3_k5_s1_e6_c112_se0.25",
    "ir_r4_k5_s2_e6_c192_se0.25",
    "ir_r1_k3_s1_e6_c320_se0.25",
)
EFFICIENTNET_LITE = tuple(s.replace("_se0.25", "") for s in EFFICIENTNET)
EFFICIENTNET_V2_BASE = (  # timm's tf_efficientnetv2_b0 (the paper's scaled-down V2)
    "cn_r1_k3_s1_e1_c16_skip",
    "er_r2_k3_s2_e4_c32",
    "er_r2_k3_s2_e4_c48",
    "ir_r3_k3_s2_e4_c96_se0.25",
    "ir_r5_k3_s1_e6_c112_se0.25",
    "ir_r8_k3_s2_e6_c192_se0.25",
)
EFFICIENTNET_V2_S = (
    "cn_r2_k3_s1_e1_c24_skip",
    "er_r4_k3_s2_e4_c48",
    "er_r4_k3_s2_e4_c64",
    "ir_r6_k3_s2_e4_c128_se0.25",
    "ir_r9_k3_s1_e6_c160_se0.25",
    "ir_r15_k3_s2_e6_c256_se0.25",
)
EFFICIENTNET_V2_M = (
    "cn_r3_k3_s1_e1_c24_skip",
    "er_r5_k3_s2_e4_c48",
    "er_r5_k3_s2_e4_c80",
    "ir_r7_k3_s2_e4_c160_se0.25",
    "ir_r14_k3_s1_e6_c176_se0.25",
    "ir_r18_k3_s2_e6_c304_se0.25",
    "ir_r5_k3_s1_e6_c512_se0.25",
)
EFFICIENTNET_V2_L = (
    "cn_r4_k3_s1_e1_c32_skip",
    "er_r7_k3_s2_e4_c64",
    "er_r7_k3_s2_e4_c96",
    "ir_r10_k3_s2_e4_c192_se0.25",
    "ir_r19_k3_s1_e6_c224_se0.25",
    "ir_r25_k3_s2_e6_c384_se0.25",
    "ir_r7_k3_s1_e6_c640_se0.25",
)

_PAPERS = {
    "mobilenet_v1": "Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile "
    "Vision Applications, 2017",
    "mobilenet_v2": "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, "
    "CVPR 2018",
    "mobilenet_v3": "Howard et al., Searching for MobileNetV3, ICCV 2019",
    "efficientnet": "Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural "
    "Networks, ICML 2019",
    "efficientnet_v2": "Tan & Le, EfficientNetV2: Smaller Models and Faster Training, ICML 2021",
}
# TF-ported weights: TF 'SAME' padding and TF's BN epsilon (timm's BN_EPS_TF_DEFAULT).
_TF = dict(padding="same", bn_eps=1e-3)
# torchvision's MobileNet v3 and its EfficientNet B5-B7 (ported from TF) use TF's BN settings.
_TV_TF_BN = dict(bn_eps=1e-3, bn_momentum=0.01)


def _family(family: str, **metadata: Any) -> Any:
    return variants(
        EfficientNet,
        family=family,
        classifier="classifier",
        first_conv="conv_stem",
        paper=_PAPERS[family],
        **metadata,
    )


# MobileNet v1 (timm; width multiplier alpha, no head conv).
_mobilenet_v1 = _family("mobilenet_v1", sources=("timm",))
_MNV1 = dict(arch=MOBILENET_V1, num_features=0, act="relu6")
MobileNetV1_100 = _mobilenet_v1("mobilenetv1_100", _MNV1)
MobileNetV1_125 = _mobilenet_v1("mobilenetv1_125", _MNV1 | dict(width_multiplier=1.25))
# Howard et al.'s width multiplier alpha (section 3.3; Table 6: 1.0, 0.75, 0.5, 0.25). timm
# registers none of these, but builds them from the same generator: the tests prove each
# against timm's ``_gen_mobilenet_v1`` at that multiplier.
MobileNetV1_075, MobileNetV1_050, MobileNetV1_025 = (
    _mobilenet_v1(f"mobilenetv1_{round(100 * a):03d}", _MNV1 | dict(width_multiplier=a), sources=())
    for a in (0.75, 0.5, 0.25)
)

# MobileNet v2: torchvision and timm build the same network; torchvision's other widths are
# ``mobilenet_v2(width_mult=...)``, which timm registers as mobilenetv2_035 ... _140.
_mobilenet_v2 = _family("mobilenet_v2", sources=("timm",))
_MNV2 = dict(arch=MOBILENET_V2, head_scaling="at_least", act="relu6", drop_rate=0.2)
MobileNetV2_100 = _mobilenet_v2(
    "mobilenetv2_100", _MNV2, sources={"timm": "mobilenetv2_100", "torchvision": "mobilenet_v2"}
)
MobileNetV2_035, MobileNetV2_050, MobileNetV2_075, MobileNetV2_140 = (
    _mobilenet_v2(f"mobilenetv2_{round(100 * a):03d}", _MNV2 | dict(width_multiplier=a))
    for a in (0.35, 0.5, 0.75, 1.4)
)

# MobileNet v3: the same networks in both libraries, with different BN settings.
_mobilenet_v3 = _family("mobilenet_v3")
_MNV3 = dict(
    stem_size=16,
    head_type="pool_conv",
    head_scaling="fixed",
    act="hard_swish",
    se_from_exp=True,
    se_act="relu",
    se_gate="hard_sigmoid",
    drop_rate=0.2,
)
MobileNetV3Large100 = _mobilenet_v3(
    "mobilenetv3_large_100",
    dict(arch=MOBILENET_V3_LARGE, num_features=1280, **_MNV3),
    sources=("timm",),
)
MobileNetV3Small100 = _mobilenet_v3(
    "mobilenetv3_small_100",
    dict(arch=MOBILENET_V3_SMALL, num_features=1024, **_MNV3),
    sources=("timm",),
)
MobileNetV3Large = _mobilenet_v3(
    "mobilenet_v3_large",
    dict(arch=flat_arch(MOBILENET_V3_LARGE), num_features=1280, **_MNV3, **_TV_TF_BN),
    sources=("torchvision",),
)
MobileNetV3Small = _mobilenet_v3(
    "mobilenet_v3_small",
    dict(arch=flat_arch(MOBILENET_V3_SMALL), num_features=1024, **_MNV3, **_TV_TF_BN),
    sources=("torchvision",),
)

# EfficientNet B0-B7: (width, depth, resolution, dropout) from the paper.
_EFFNET_PARAMS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}
_LITE_PARAMS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}
_efficientnet = _family("efficientnet")


def _scaled(params: tuple[float, float, int, float], arch: tuple[str, ...], **extra: Any) -> Any:
    """The config and input size of one compound-scaled variant."""
    w, d, size, drop = params
    config = dict(arch=arch, width_multiplier=w, depth_multiplier=d, **extra)
    return config | dict(drop_rate=drop, drop_path_rate=0.2), (size, size, 3)


def _effnet(v: str, prefix: str, sources: Any, **extra: Any) -> Any:
    config, size = _scaled(_EFFNET_PARAMS[v], EFFICIENTNET)
    return _efficientnet(
        f"{prefix}efficientnet_{v}", config | extra, sources=sources, input_size=size
    )


_LITE = dict(fix_first_last=True, fix_stem=True, head_scaling="fixed", act="relu6")


def _lite(v: str, prefix: str, **extra: Any) -> Any:
    config, size = _scaled(_LITE_PARAMS[v], EFFICIENTNET_LITE, **_LITE)
    return _efficientnet(
        f"{prefix}efficientnet_{v}", config | extra, sources=("timm",), input_size=size
    )


# torchvision's B0-B4 are timm's B0-B4; its B5-B7 differ in BN settings only.
_BOTH = ("timm", "torchvision")
EfficientNetB0 = _effnet("b0", "", _BOTH)
EfficientNetB1 = _effnet("b1", "", _BOTH)
EfficientNetB2 = _effnet("b2", "", _BOTH)
EfficientNetB3 = _effnet("b3", "", _BOTH)
EfficientNetB4 = _effnet("b4", "", _BOTH)
EfficientNetB5 = _effnet("b5", "", ("timm",))
EfficientNetB6 = _effnet("b6", "", ("timm",))
EfficientNetB7 = _effnet("b7", "", ("timm",))
TVEfficientNetB5 = _effnet("b5", "tv_", {"torchvision": "efficientnet_b5"}, **_TV_TF_BN)
TVEfficientNetB6 = _effnet("b6", "tv_", {"torchvision": "efficientnet_b6"}, **_TV_TF_BN)
TVEfficientNetB7 = _effnet("b7", "tv_", {"torchvision": "efficientnet_b7"}, **_TV_TF_BN)
TFEfficientNetB0 = _effnet("b0", "tf_", ("timm",), **_TF)
TFEfficientNetB1 = _effnet("b1", "tf_", ("timm",), **_TF)
TFEfficientNetB2 = _effnet("b2", "tf_", ("timm",), **_TF)
TFEfficientNetB3 = _effnet("b3", "tf_", ("timm",), **_TF)
TFEfficientNetB4 = _effnet("b4", "tf_", ("timm",), **_TF)
TFEfficientNetB5 = _effnet("b5", "tf_", ("timm",), **_TF)
TFEfficientNetB6 = _effnet("b6", "tf_", ("timm",), **_TF)
TFEfficientNetB7 = _effnet("b7", "tf_", ("timm",), **_TF)

EfficientNetLite0 = _lite("lite0", "")
EfficientNetLite1 = _lite("lite1", "")
EfficientNetLite2 = _lite("lite2", "")
EfficientNetLite3 = _lite("lite3", "")
EfficientNetLite4 = _lite("lite4", "")
TFEfficientNetLite0 = _lite("lite0", "tf_", **_TF)
TFEfficientNetLite1 = _lite("lite1", "tf_", **_TF)
TFEfficientNetLite2 = _lite("lite2", "tf_", **_TF)
TFEfficientNetLite3 = _lite("lite3", "tf_", **_TF)
TFEfficientNetLite4 = _lite("lite4", "tf_", **_TF)

# EfficientNetV2: torchvision's (symmetric padding, BN eps 1e-3) and timm's TF port.
_efficientnet_v2 = _family("efficientnet_v2")
_V2 = {
    "s": (EFFICIENTNET_V2_S, 24, 384, 0.2),
    "m": (EFFICIENTNET_V2_M, 24, 480, 0.3),
    "l": (EFFICIENTNET_V2_L, 32, 480, 0.4),
}


def _v2(v: str, tf: bool) -> Any:
    arch, stem, size, drop = _V2[v]
    config = dict(arch=arch, stem_size=stem, drop_rate=drop, drop_path_rate=0.2)
    return _efficientnet_v2(
        f"tf_efficientnetv2_{v}" if tf else f"efficientnet_v2_{v}",
        config | (_TF if tf else dict(bn_eps=1e-3)),
        sources=("timm",) if tf else ("torchvision",),
        input_size=(size, size, 3),
    )


# The smallest V2, TF port only; registered first, so the family's concrete checks use it.
TFEfficientNetV2B0 = _efficientnet_v2(
    "tf_efficientnetv2_b0",
    dict(arch=EFFICIENTNET_V2_BASE, stem_size=32, **_TF),
    sources=("timm",),
    input_size=(192, 192, 3),
)
EfficientNetV2S = _v2("s", tf=False)
EfficientNetV2M = _v2("m", tf=False)
EfficientNetV2L = _v2("l", tf=False)
TFEfficientNetV2S = _v2("s", tf=True)
TFEfficientNetV2M = _v2("m", tf=True)
TFEfficientNetV2L = _v2("l", tf=True)
