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
stage (timm's notation, which efficientnet-jax shares)::

    "ir_r2_k5_s2_e6_c40_se0.25"       one stage: 2 inverted-residual blocks, ...
    "ir_r1_k3_s2_e4_c24_nre ir_r1_k3_s1_e3_c24_nre"   a stage of two different blocks

A block is ``type_option_option...``. The type is one of

* ``ds`` depthwise-separable: dw kxk, [SE], pw 1x1 (an MBConv of expansion 1);
* ``dsa`` the same with an activation after the pw conv and no skip (MobileNet v1);
* ``ir`` inverted residual / MBConv: pw expand, dw kxk, [SE], pw project;
* ``er`` edge residual / Fused-MBConv: kxk expand, [SE], pw project;
* ``cn`` conv + BN + activation (a plain layer; a Fused-MBConv of expansion 1);

and the options are ``rN`` repeats (scaled by ``depth_multiplier``, rounded up), ``kN``
kernel of the spatial conv, ``sN`` stride of the stage's first block (repeats have stride
1), ``eX`` expansion ratio, ``cN`` output channels (scaled by ``width_multiplier``, rounded
to a multiple of 8), ``seX`` squeeze-and-excitation ratio (no SE when absent), ``nre``
ReLU instead of the model's activation (MobileNet v3's early blocks), ``skip``/``noskip``
force/forbid the residual (default: when stride is 1 and channels match; ``cn`` only
with ``skip``).

The residual-free stem and head are fields of the module. Submodule names are timm's
(``conv_stem``, ``bn1``, ``blocks_3_1/conv_pw``, ``conv_head``, ``classifier``), except that
squeeze-and-excitation is the shared :class:`~flaxcnn.layers.SqueezeExcite` (``se/fc1``,
``se/fc2`` for timm's ``conv_reduce``/``conv_expand``); ``convert/efficientnet.py`` holds
the renames for timm and torchvision.

Registry names are the sources' own names. Where torchvision's and timm's networks are
identical, BN settings included (MobileNet v2, EfficientNet B0-B4), one entry converts
from both. Otherwise torchvision's entry has torchvision's name (``mobilenet_v3_large``:
timm's twin has BN eps 1e-5, momentum 0.1; ``efficientnet_v2_s``: timm's is a TF port)
or, where timm uses the same name, a ``tv_`` prefix (``tv_efficientnet_b5``: BN eps 1e-3,
momentum 0.01, weights TF-ported by torchvision but run with symmetric padding).
``tf_*`` models use TF 'SAME' padding and TF's BN eps 1e-3.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import register_model
from ..layers import (
    BatchNorm2d,
    Conv2d,
    DepthwiseConv2d,
    Dropout,
    DropPath,
    FeatureMixin,
    SqueezeExcite,
    check_image_input,
    get_act,
    make_divisible,
    stage_info,
)

__all__ = ["BlockArgs", "EfficientNet", "decode_arch", "make_divisible", "round_channels"]

ModuleDef = Callable[..., nn.Module]
BLOCK_TYPES = ("ds", "dsa", "ir", "er", "cn")
HEAD_TYPES = ("conv_bn", "pool_conv")


def round_channels(channels: int, multiplier: float = 1.0, divisor: int = 8) -> int:
    """Width scaling: ``make_divisible(channels * multiplier, divisor)``."""
    return make_divisible(channels * multiplier, divisor)


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One decoded block (see the module docstring for the string format)."""

    block_type: str
    kernel: int
    stride: int
    exp_ratio: float
    out_chs: int
    se_ratio: float | None
    act: str | None  # None: the model's activation
    skip: bool | None  # None: residual when the shapes allow it


def _decode_block(s: str) -> tuple[BlockArgs, int]:
    bt, *ops = s.split("_")
    if bt not in BLOCK_TYPES:
        raise ValueError(f"block string {s!r}: unknown block type {bt!r}; known: {BLOCK_TYPES}")
    opts: dict[str, str] = {}
    act, skip = None, None
    for op in ops:
        if op == "nre":
            act = "relu"
        elif op in ("skip", "noskip"):
            skip = op == "skip"
        elif op.startswith("se"):
            opts["se"] = op[2:]
        elif op[:1] in "rksec" and op[1:]:
            opts[op[0]] = op[1:]
        else:
            raise ValueError(f"block string {s!r}: unknown option {op!r}")
    missing = [k for k in "rksc" if k not in opts]
    if missing:
        raise ValueError(f"block string {s!r}: missing option(s) {missing}")
    if bt == "dsa":
        skip = False  # MobileNet v1's separable convs have no residual
    args = BlockArgs(
        block_type=bt,
        kernel=int(opts["k"]),
        stride=int(opts["s"]),
        exp_ratio=float(opts.get("e", 1.0)),
        out_chs=int(opts["c"]),
        se_ratio=float(opts["se"]) if "se" in opts else None,
        act=act,
        skip=skip,
    )
    return args, int(opts["r"])


def _scale_depth(blocks: list[tuple[BlockArgs, int]], multiplier: float) -> list[BlockArgs]:
    """Scale a stage's total repeats by ``multiplier`` (rounded up) and share them out over
    its block kinds from the last one backwards, as timm does (the first block, often a
    different kind, is the least likely to be repeated)."""
    repeats = [r for _, r in blocks]
    total = sum(repeats)
    total_scaled = math.ceil(total * multiplier)
    scaled = []
    for r in repeats[::-1]:
        rs = max(1, round(r / total * total_scaled))
        scaled.append(rs)
        total -= r
        total_scaled -= rs
    return [b for (b, _), n in zip(blocks, scaled[::-1], strict=True) for _ in range(n)]


def decode_arch(
    arch: Sequence[str], depth_multiplier: float = 1.0, fix_first_last: bool = False
) -> list[list[BlockArgs]]:
    """Block strings (one line per stage) -> the blocks of every stage, depth-scaled.

    ``fix_first_last`` leaves the first and last stage unscaled (EfficientNet-Lite).
    """
    stages = []
    for i, line in enumerate(arch):
        blocks = [_decode_block(s) for s in line.split()]
        fixed = fix_first_last and i in (0, len(arch) - 1)
        stages.append(_scale_depth(blocks, 1.0 if fixed else depth_multiplier))
    return stages


class MobileBlock(nn.Module):
    """Any of the five block kinds (``ds``, ``dsa``, ``ir``, ``er``, ``cn``), timm's names.

    ``in_chs`` comes from the input; ``se_chs`` is the squeezed width (0: no SE).
    """

    args: BlockArgs
    out_chs: int
    stride: int
    se_chs: int
    act: str
    se_act: str | None
    se_gate: str
    conv: ModuleDef
    dw_conv: ModuleDef
    norm: ModuleDef
    drop_path: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        a = self.args
        in_chs = x.shape[-1]
        act = get_act(self.act)
        k, s = a.kernel, self.stride
        shortcut = x
        if a.block_type in ("ds", "dsa"):
            x = self.dw_conv(k, s, name="conv_dw")(x)
            x = act(self.norm(name="bn1")(x, train=train))
            x = self._se(x)
            x = self.conv(self.out_chs, 1, name="conv_pw")(x)
            x = self.norm(name="bn2")(x, train=train)
            if a.block_type == "dsa":
                x = act(x)
        elif a.block_type == "ir":
            mid = make_divisible(in_chs * a.exp_ratio)
            x = self.conv(mid, 1, name="conv_pw")(x)
            x = act(self.norm(name="bn1")(x, train=train))
            x = self.dw_conv(k, s, name="conv_dw")(x)
            x = act(self.norm(name="bn2")(x, train=train))
            x = self._se(x)
            x = self.conv(self.out_chs, 1, name="conv_pwl")(x)
            x = self.norm(name="bn3")(x, train=train)
        elif a.block_type == "er":
            mid = make_divisible(in_chs * a.exp_ratio)
            x = self.conv(mid, k, s, name="conv_exp")(x)
            x = act(self.norm(name="bn1")(x, train=train))
            x = self._se(x)
            x = self.conv(self.out_chs, 1, name="conv_pwl")(x)
            x = self.norm(name="bn2")(x, train=train)
        else:  # cn
            x = self.conv(self.out_chs, k, s, name="conv")(x)
            x = act(self.norm(name="bn1")(x, train=train))
        default_skip = a.block_type != "cn"
        can_skip = s == 1 and in_chs == self.out_chs
        if can_skip and (a.skip if a.skip is not None else default_skip):
            x = DropPath(self.drop_path, name="drop_path")(x, train=train) + shortcut
        return x

    def _se(self, x: jax.Array) -> jax.Array:
        if not self.se_chs:
            return x
        return SqueezeExcite(
            self.se_chs,
            act=self.se_act or self.act,
            gate=self.se_gate,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="se",
        )(x)


class EfficientNet(FeatureMixin, nn.Module):
    """The mobile-block network: stem, stages decoded from ``arch``, head, classifier.

    Attributes:
        arch: block strings, one line per stage (module docstring).
        num_classes: classifier outputs; ``0`` returns the pre-logits features, as timm
            defines them: ``'conv_bn'`` heads pool the head conv's output (1280 channels for
            B0); ``'pool_conv'`` heads (MobileNet v3) pool the last stage, then apply the
            head conv + act (1280 for the large model). With ``global_pool=''`` the unpooled
            map timm's ``forward_features`` returns: the head conv's output for ``'conv_bn'``,
            the last stage's for ``'pool_conv'`` (960 channels for MobileNet v3 large).
        in_chans: input channels.
        features_only: return timm's feature maps (``feature_location='bottleneck'``): the
            stem (``bn1``) if the first stage strides, and the last block of every stage
            followed by a strided stage, and of the last stage (``blocks.{i}``; strides 2,
            4, 8, 16, 32), selected by ``out_indices`` (``None``: all). No head conv and
            no classifier, as timm's ``EfficientNetFeatures``.
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (none).
        width_multiplier, depth_multiplier: compound scaling of channels (rounded to
            multiples of 8) and of repeats per stage (rounded up).
        fix_first_last: do not depth-scale the first and last stage (EfficientNet-Lite).
        stem_size: stem conv channels (3x3, stride 2); scaled unless ``fix_stem``.
        num_features: head conv channels, ``0`` for none (MobileNet v1). ``head_scaling``
            says how the width multiplier applies: ``'round'`` scaled, ``'fixed'`` not,
            ``'at_least'`` scaled but never below ``num_features`` (MobileNet v2).
        head_type: ``'conv_bn'`` 1x1 conv + BN + act then pool (EfficientNet, MobileNet v2);
            ``'pool_conv'`` pool then a 1x1 conv with bias + act and no BN (MobileNet v3,
            whose torchvision form is the same layer as a Linear).
        act: the model's activation (``'silu'``, ``'relu6'``, ``'hard_swish'``, ...).
        se_from_exp: SE width from the expanded channels rounded to a multiple of 8
            (MobileNet v3) instead of ``round(block_in * ratio)`` (EfficientNet).
        se_act: SE activation (default: the block's); se_gate: its gate.
        padding: ``''`` torch's symmetric padding; ``'same'`` TF 'SAME' (``tf_*`` weights).
        depthwise_impl: how depthwise convs run (:class:`~flaxcnn.layers.DepthwiseConv2d`):
            ``'auto'`` as :func:`flaxcnn.kernels` says (shifted slices on XLA:CPU), else as named.
        bn_eps, bn_momentum: BatchNorm settings (torch momentum convention).
        drop_rate: dropout before the classifier; drop_path_rate: stochastic depth,
            growing linearly over the blocks (block i of n gets ``rate * i / n``).
        dtype, param_dtype: computation and parameter dtypes; BN statistics stay float32.
    """

    arch: Sequence[str]
    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    width_multiplier: float = 1.0
    depth_multiplier: float = 1.0
    fix_first_last: bool = False
    stem_size: int = 32
    fix_stem: bool = False
    num_features: int = 1280
    head_scaling: str = "round"
    head_type: str = "conv_bn"
    act: str = "silu"
    se_from_exp: bool = False
    se_act: str | None = None
    se_gate: str = "sigmoid"
    padding: str = ""
    depthwise_impl: str = "auto"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _round(self, c: int) -> int:
        return round_channels(c, self.width_multiplier)

    def head_features(self) -> int:
        """Channels of the head conv (0: no head conv)."""
        if self.head_scaling not in ("round", "fixed", "at_least"):
            raise ValueError(
                f"head_scaling must be 'round', 'fixed' or 'at_least', got {self.head_scaling!r}"
            )
        if not self.num_features or self.head_scaling == "fixed":
            return self.num_features
        scaled = self._round(self.num_features)
        return max(self.num_features, scaled) if self.head_scaling == "at_least" else scaled

    def _stage_info(self) -> list[dict[str, Any]]:
        stages = decode_arch(self.arch, self.depth_multiplier, self.fix_first_last)
        taps, r = [], 2  # after the stem
        if stages[0][0].stride > 1:
            stem = self.stem_size if self.fix_stem else self._round(self.stem_size)
            taps.append((stem, r, "bn1"))
        for i, blocks in enumerate(stages):
            r *= blocks[0].stride
            if i == len(stages) - 1 or stages[i + 1][0].stride > 1:
                taps.append((self._round(blocks[-1].out_chs), r, f"blocks.{i}"))
        return stage_info(*zip(*taps, strict=True))

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        check_image_input(x, self.in_chans, type(self).__name__)
        if self.padding not in ("", "same"):
            raise ValueError(f"padding must be '' (torch) or 'same' (TF), got {self.padding!r}")
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}, got {self.head_type!r}")
        same = self.padding == "same"

        def conv(features, kernel=1, stride=1, *, groups=1, name, use_bias=False):
            # torch pads k // 2 on every side; TF 'SAME' pads by the input size (asymmetric).
            pad = "same" if same else kernel // 2
            return Conv2d(
                features,
                kernel,
                stride,
                padding=pad,
                groups=groups,
                use_bias=use_bias,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )

        def dw_conv(kernel, stride, *, name):
            return DepthwiseConv2d(
                kernel,
                stride,
                padding="same" if same else kernel // 2,
                use_bias=False,
                depthwise_impl=self.depthwise_impl,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )

        norm = partial(
            BatchNorm2d,
            eps=self.bn_eps,
            momentum=self.bn_momentum,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        act = get_act(self.act)

        stem = self.stem_size if self.fix_stem else self._round(self.stem_size)
        x = conv(stem, 3, 2, name="conv_stem")(x)
        x = act(norm(name="bn1")(x, train=train))
        taps = {"bn1": x}
        stages = decode_arch(self.arch, self.depth_multiplier, self.fix_first_last)
        total = sum(len(s) for s in stages)
        idx = 0
        in_chs = stem
        for i, blocks in enumerate(stages):
            for j, a in enumerate(blocks):
                out_chs = self._round(a.out_chs)
                x = MobileBlock(
                    a,
                    out_chs=out_chs,
                    stride=a.stride if j == 0 else 1,
                    se_chs=self._se_chs(a, in_chs),
                    act=a.act or self.act,
                    se_act=self.se_act,
                    se_gate=self.se_gate,
                    conv=conv,
                    dw_conv=dw_conv,
                    norm=norm,
                    drop_path=self.drop_path_rate * idx / total,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"blocks_{i}_{j}",
                )(x, train=train)
                in_chs = out_chs
                idx += 1
            taps[f"blocks.{i}"] = x
        if self.features_only:
            return self._select_features([taps[f["module"]] for f in self._stage_info()])

        head = self.head_features()
        if self.head_type == "conv_bn":
            if head:
                x = conv(head, 1, name="conv_head")(x)
                x = act(norm(name="bn2")(x, train=train))
            x = self._pool(x)
        elif self.num_classes or self.global_pool:
            x = self._pool(x, keepdims=True)
            x = act(conv(head, 1, name="conv_head", use_bias=True)(x))[:, 0, 0, :]
        if self.num_classes == 0:
            return x
        x = Dropout(self.drop_rate, name="drop")(x, train=train)
        return nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="classifier"
        )(x)

    def _se_chs(self, a: BlockArgs, in_chs: int) -> int:
        """Squeezed SE width, timm's arithmetic to the float (torchvision's agrees)."""
        if not a.se_ratio:
            return 0
        expands = a.block_type in ("ir", "er")
        mid = make_divisible(in_chs * a.exp_ratio) if expands else in_chs
        if self.se_from_exp:
            return make_divisible(mid * a.se_ratio)
        ratio = a.se_ratio / (a.exp_ratio if expands else 1.0)
        return round(mid * ratio)


# --------------------------------------------------------------------------- variants
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
# MobileNet v3 as timm groups its blocks into stages (torchvision's form: ``_flat``).
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


def _flat(arch: Sequence[str]) -> tuple[str, ...]:
    """One block per line: torchvision lists MobileNet v3's blocks flat (``features.1`` ...
    ``features.N``, the paper's table), so its Flax tree is ``blocks_{N-1}_0``."""
    out = []
    for line in arch:
        for s in line.split():
            a, r = _decode_block(s)
            first = s.replace(f"_r{r}_", "_r1_")
            out.append(first)
            out.extend([first.replace(f"_s{a.stride}_", "_s1_")] * (r - 1))
    return tuple(out)


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


def _reg(
    name: str,
    camel: str,
    family: str,
    sources: dict[str, str],
    *,
    size: int = 224,
    classifier: str = "classifier",
    **config: Any,
) -> Callable[..., nn.Module]:
    return register_model(
        name,
        EfficientNet,
        family=family,
        camel=camel,
        sources=sources,
        input_size=(size, size, 3),
        classifier=classifier,
        first_conv="conv_stem",
        paper=_PAPERS[family],
        **config,
    )


# MobileNet v1 (timm; width multiplier alpha, no head conv).
MobileNetV1_100 = _reg(
    "mobilenetv1_100",
    "MobileNetV1_100",
    "mobilenet_v1",
    {"timm": "mobilenetv1_100"},
    arch=MOBILENET_V1,
    num_features=0,
    act="relu6",
)
MobileNetV1_125 = _reg(
    "mobilenetv1_125",
    "MobileNetV1_125",
    "mobilenet_v1",
    {"timm": "mobilenetv1_125"},
    arch=MOBILENET_V1,
    width_multiplier=1.25,
    num_features=0,
    act="relu6",
)

# MobileNet v2: torchvision and timm build the same network.
MobileNetV2_100 = _reg(
    "mobilenetv2_100",
    "MobileNetV2_100",
    "mobilenet_v2",
    {"timm": "mobilenetv2_100", "torchvision": "mobilenet_v2"},
    arch=MOBILENET_V2,
    head_scaling="at_least",
    act="relu6",
    drop_rate=0.2,
)

# MobileNet v3: the same networks in both libraries, with different BN settings.
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
MobileNetV3Large100 = _reg(
    "mobilenetv3_large_100",
    "MobileNetV3Large100",
    "mobilenet_v3",
    {"timm": "mobilenetv3_large_100"},
    arch=MOBILENET_V3_LARGE,
    num_features=1280,
    **_MNV3,
)
MobileNetV3Small100 = _reg(
    "mobilenetv3_small_100",
    "MobileNetV3Small100",
    "mobilenet_v3",
    {"timm": "mobilenetv3_small_100"},
    arch=MOBILENET_V3_SMALL,
    num_features=1024,
    **_MNV3,
)
MobileNetV3Large = _reg(
    "mobilenet_v3_large",
    "MobileNetV3Large",
    "mobilenet_v3",
    {"torchvision": "mobilenet_v3_large"},
    arch=_flat(MOBILENET_V3_LARGE),
    num_features=1280,
    **_MNV3,
    **_TV_TF_BN,
)
MobileNetV3Small = _reg(
    "mobilenet_v3_small",
    "MobileNetV3Small",
    "mobilenet_v3",
    {"torchvision": "mobilenet_v3_small"},
    arch=_flat(MOBILENET_V3_SMALL),
    num_features=1024,
    **_MNV3,
    **_TV_TF_BN,
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


def _effnet(v: str, prefix: str, sources: dict[str, str], **extra: Any) -> Callable[..., nn.Module]:
    w, d, size, drop = _EFFNET_PARAMS[v]
    camel = {"": "EfficientNet", "tf_": "TFEfficientNet", "tv_": "TVEfficientNet"}[
        prefix
    ] + v.upper()
    return _reg(
        f"{prefix}efficientnet_{v}",
        camel,
        "efficientnet",
        sources,
        size=size,
        arch=EFFICIENTNET,
        width_multiplier=w,
        depth_multiplier=d,
        drop_rate=drop,
        drop_path_rate=0.2,
        **extra,
    )


def _lite(v: str, prefix: str, **extra: Any) -> Callable[..., nn.Module]:
    w, d, size, drop = _LITE_PARAMS[v]
    name = f"{prefix}efficientnet_{v}"
    return _reg(
        name,
        ("TFEfficientNet" if prefix else "EfficientNet") + v.capitalize(),
        "efficientnet",
        {"timm": name},
        size=size,
        arch=EFFICIENTNET_LITE,
        width_multiplier=w,
        depth_multiplier=d,
        fix_first_last=True,
        fix_stem=True,
        head_scaling="fixed",
        act="relu6",
        drop_rate=drop,
        drop_path_rate=0.2,
        **extra,
    )


# torchvision's B0-B4 are timm's B0-B4; its B5-B7 differ in BN settings only.
EfficientNetB0 = _effnet("b0", "", {"timm": "efficientnet_b0", "torchvision": "efficientnet_b0"})
EfficientNetB1 = _effnet("b1", "", {"timm": "efficientnet_b1", "torchvision": "efficientnet_b1"})
EfficientNetB2 = _effnet("b2", "", {"timm": "efficientnet_b2", "torchvision": "efficientnet_b2"})
EfficientNetB3 = _effnet("b3", "", {"timm": "efficientnet_b3", "torchvision": "efficientnet_b3"})
EfficientNetB4 = _effnet("b4", "", {"timm": "efficientnet_b4", "torchvision": "efficientnet_b4"})
EfficientNetB5 = _effnet("b5", "", {"timm": "efficientnet_b5"})
EfficientNetB6 = _effnet("b6", "", {"timm": "efficientnet_b6"})
EfficientNetB7 = _effnet("b7", "", {"timm": "efficientnet_b7"})
TVEfficientNetB5 = _effnet("b5", "tv_", {"torchvision": "efficientnet_b5"}, **_TV_TF_BN)
TVEfficientNetB6 = _effnet("b6", "tv_", {"torchvision": "efficientnet_b6"}, **_TV_TF_BN)
TVEfficientNetB7 = _effnet("b7", "tv_", {"torchvision": "efficientnet_b7"}, **_TV_TF_BN)
TFEfficientNetB0 = _effnet("b0", "tf_", {"timm": "tf_efficientnet_b0"}, **_TF)
TFEfficientNetB1 = _effnet("b1", "tf_", {"timm": "tf_efficientnet_b1"}, **_TF)
TFEfficientNetB2 = _effnet("b2", "tf_", {"timm": "tf_efficientnet_b2"}, **_TF)
TFEfficientNetB3 = _effnet("b3", "tf_", {"timm": "tf_efficientnet_b3"}, **_TF)
TFEfficientNetB4 = _effnet("b4", "tf_", {"timm": "tf_efficientnet_b4"}, **_TF)
TFEfficientNetB5 = _effnet("b5", "tf_", {"timm": "tf_efficientnet_b5"}, **_TF)
TFEfficientNetB6 = _effnet("b6", "tf_", {"timm": "tf_efficientnet_b6"}, **_TF)
TFEfficientNetB7 = _effnet("b7", "tf_", {"timm": "tf_efficientnet_b7"}, **_TF)

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
_V2 = {
    "s": (EFFICIENTNET_V2_S, 24, 384, 0.2),
    "m": (EFFICIENTNET_V2_M, 24, 480, 0.3),
    "l": (EFFICIENTNET_V2_L, 32, 480, 0.4),
}


def _v2(v: str, tf: bool) -> Callable[..., nn.Module]:
    arch, stem, size, drop = _V2[v]
    name = f"tf_efficientnetv2_{v}" if tf else f"efficientnet_v2_{v}"
    return _reg(
        name,
        ("TFEfficientNetV2" if tf else "EfficientNetV2") + v.upper(),
        "efficientnet_v2",
        {"timm": name} if tf else {"torchvision": name},
        size=size,
        arch=arch,
        stem_size=stem,
        drop_rate=drop,
        drop_path_rate=0.2,
        **(_TF if tf else dict(bn_eps=1e-3)),
    )


# The smallest V2, TF port only; registered first, so the family's concrete checks use it.
TFEfficientNetV2B0 = _reg(
    "tf_efficientnetv2_b0",
    "TFEfficientNetV2B0",
    "efficientnet_v2",
    {"timm": "tf_efficientnetv2_b0"},
    size=192,
    arch=EFFICIENTNET_V2_BASE,
    stem_size=32,
    **_TF,
)
EfficientNetV2S = _v2("s", tf=False)
EfficientNetV2M = _v2("m", tf=False)
EfficientNetV2L = _v2("l", tf=False)
TFEfficientNetV2S = _v2("s", tf=True)
TFEfficientNetV2M = _v2("m", tf=True)
TFEfficientNetV2L = _v2("l", tf=True)
