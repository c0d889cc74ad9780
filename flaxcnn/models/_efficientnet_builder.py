"""The mobile-block builder: block strings -> a stage plan -> MobileNet/EfficientNet modules.

timm's ``_efficientnet_builder`` and ``_efficientnet_blocks`` in one module: the decoder of
the block-string notation, the blocks, and the :class:`EfficientNet` module that builds a
network from them. The architectures (block strings per model) and their registry rows
are in :mod:`flaxcnn.models.efficientnet`.

A network is a stem conv, stages of mobile blocks and a head, one line of *block strings*
per stage (timm's notation, which efficientnet-jax shares)::

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

The strings are decoded once per model, into a stage plan (:meth:`EfficientNet.stage_plan`:
every block's decoded args, channels, stride, SE width and drop-path rate) that both the
forward pass and ``feature_info`` read.

The residual-free stem and head are fields of the module. Submodule names are timm's
(``conv_stem``, ``bn1``, ``blocks_3_1/conv_pw``, ``conv_head``, ``classifier``), except that
squeeze-and-excitation is the shared :class:`~flaxcnn.layers.SqueezeExcite` (``se/fc1``,
``se/fc2`` for timm's ``conv_reduce``/``conv_expand``); ``convert/efficientnet.py`` holds
the renames for timm and torchvision.
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

__all__ = [
    "BlockArgs",
    "BlockPlan",
    "EfficientNet",
    "MobileBlock",
    "decode_arch",
    "flat_arch",
    "round_channels",
]

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


def flat_arch(arch: Sequence[str]) -> tuple[str, ...]:
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


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """One block as the model builds it: its decoded string and what the model's scaling
    and settings make of it (channels after width scaling, the stride of this repeat, the
    squeezed SE width, 0 for none, the activation and the drop-path rate)."""

    args: BlockArgs
    in_chs: int
    out_chs: int
    stride: int
    se_chs: int
    act: str
    drop_path: float


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

    @property
    def stem_features(self) -> int:
        """Channels of the stem conv."""
        return self.stem_size if self.fix_stem else self._round(self.stem_size)

    def stage_plan(self) -> list[list[BlockPlan]]:
        """The block strings decoded, depth- and width-scaled: every block of every stage,
        as ``__call__`` builds it and ``feature_info`` describes it."""
        stages = decode_arch(self.arch, self.depth_multiplier, self.fix_first_last)
        total = sum(len(s) for s in stages)
        plan, in_chs, idx = [], self.stem_features, 0
        for blocks in stages:
            plan.append([])
            for j, a in enumerate(blocks):
                out_chs = self._round(a.out_chs)
                plan[-1].append(
                    BlockPlan(
                        a,
                        in_chs=in_chs,
                        out_chs=out_chs,
                        stride=a.stride if j == 0 else 1,
                        se_chs=self._se_chs(a, in_chs),
                        act=a.act or self.act,
                        drop_path=self.drop_path_rate * idx / total,
                    )
                )
                in_chs, idx = out_chs, idx + 1
        return plan

    def _stage_info(self, plan: list[list[BlockPlan]] | None = None) -> list[dict[str, Any]]:
        plan = self.stage_plan() if plan is None else plan
        taps, r = [], 2  # after the stem
        if plan[0][0].stride > 1:
            taps.append((self.stem_features, r, "bn1"))
        for i, blocks in enumerate(plan):
            r *= blocks[0].stride
            if i == len(plan) - 1 or plan[i + 1][0].stride > 1:
                taps.append((blocks[-1].out_chs, r, f"blocks.{i}"))
        return stage_info(*zip(*taps, strict=True))

    @property
    def min_input_size(self) -> int:
        """1: every conv is padded (torch's k // 2 or TF's 'SAME'), so a 1x1 image
        leaves 1x1 maps."""
        return 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        check_image_input(x, self)
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

        x = conv(self.stem_features, 3, 2, name="conv_stem")(x)
        x = act(norm(name="bn1")(x, train=train))
        taps = {"bn1": x}
        plan = self.stage_plan()
        for i, blocks in enumerate(plan):
            for j, b in enumerate(blocks):
                x = MobileBlock(
                    b.args,
                    out_chs=b.out_chs,
                    stride=b.stride,
                    se_chs=b.se_chs,
                    act=b.act,
                    se_act=self.se_act,
                    se_gate=self.se_gate,
                    conv=conv,
                    dw_conv=dw_conv,
                    norm=norm,
                    drop_path=b.drop_path,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"blocks_{i}_{j}",
                )(x, train=train)
            taps[f"blocks.{i}"] = x
        if self.features_only:
            return self._select_features([taps[f["module"]] for f in self._stage_info(plan)])

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
