"""Xception: Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions",
CVPR 2017 (arXiv:1610.02357), in timm's two forms.

* :class:`Xception` (timm ``legacy_xception``, the Cadene port of the original):
  an entry flow of strided blocks (ReLU-SepConv-BN twice, then a 3x3/2 max pool,
  with a 1x1/2 conv-BN skip), eight middle-flow blocks of three ReLU-SepConv-BN,
  and an exit flow ending in two SepConv-BN-ReLU. The separable convs have no
  BN between depthwise and pointwise. Names mirror timm's: ``block1/rep_1/conv1``,
  ``block1/rep_1/pointwise``, ``block1/rep_2`` (BN), ``block1/skip``, ``block1/skipbn``,
  where ``rep_i`` is the position in timm's ``rep`` Sequential (ReLUs and the pool
  hold no parameters but keep their indices).
* :class:`XceptionAligned` (timm ``xception41/65/71``, the "modified aligned
  Xception" of DeepLab v3+, Chen et al., ECCV 2018, arXiv:1802.02611): every block
  has three separable convs with BN (``conv_dw``, ``bn_dw``, ``conv_pw``, ``bn_pw``),
  the stride on the third depthwise conv instead of a max pool, BN eps 1e-3.
  Names mirror timm's: ``stem_0/conv``, ``blocks_3/stack/conv2/bn_dw``,
  ``blocks_0/shortcut/bn``, ``head/fc``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import register_model, variants
from ..layers import (
    BatchNorm2d,
    Conv2d,
    Dropout,
    DropPath,
    FeatureMixin,
    check_image_input,
    max_pool2d,
    smallest_side,
    stage_info,
)

__all__ = ["Xception", "XceptionAligned"]

ModuleDef = Callable[..., nn.Module]


# ----------------------------------------------------------------------------- legacy


class SeparableConv2d(nn.Module):
    """Depthwise ``conv1`` then pointwise ``pointwise``, no norm between (legacy Xception)."""

    features: int
    conv: ModuleDef
    stride: int = 1
    padding: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = self.conv(c, 3, self.stride, padding=self.padding, groups=c, name="conv1")(x)
        return self.conv(self.features, 1, name="pointwise")(x)


class Block(nn.Module):
    """Legacy Xception block: ``reps`` x (ReLU, SepConv, BN), a 3x3 max pool if strided, + skip."""

    out_chs: int
    reps: int
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    start_with_relu: bool = True
    grow_first: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        in_chs = x.shape[-1]
        y = x
        idx = 0 if self.start_with_relu else -1  # timm drops the leading ReLU, shifting indices
        for i in range(self.reps):
            # grow_first widens in the first SepConv, otherwise in the last.
            last = i == self.reps - 1
            out = self.out_chs if self.grow_first or last else in_chs
            if idx >= 0:
                y = nn.relu(y)
            y = SeparableConv2d(out, self.conv, name=f"rep_{idx + 1}")(y)
            y = self.norm(name=f"rep_{idx + 2}")(y, train=train)
            idx += 3
        if self.stride != 1:
            y = max_pool2d(y, 3, self.stride, padding=1)
        if self.out_chs != in_chs or self.stride != 1:
            x = self.conv(self.out_chs, 1, self.stride, name="skip")(x)
            x = self.norm(name="skipbn")(x, train=train)
        return y + x


class Xception(FeatureMixin, nn.Module):
    """The original Xception (timm ``legacy_xception``), NHWC.

    Attributes:
        num_classes: classifier outputs; ``0`` returns the pooled features (pre-logits); with
            ``global_pool=''`` the unpooled ``act4`` map (timm's ``forward_features``).
        in_chans: input channels.
        features_only: return timm's taps ``[act2, block2.rep.0, block3.rep.0,
            block12.rep.0, act4]`` (the ``rep.0`` taps are the ReLU of the previous block's
            output; strides 2, 4, 8, 16, 32) selected by ``out_indices`` (``None``: all),
            and build no ``fc``.
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (none).
        drop_rate: dropout before the classifier.
        bn_eps, bn_momentum: BatchNorm settings (torch's defaults, as timm's port).
        depthwise_impl: how the depthwise convs run (:class:`~flaxcnn.layers.Conv2d`):
            ``'auto'`` as :func:`flaxcnn.kernels` says (shifted slices on XLA:CPU), else as named.
        dtype, param_dtype: computation and parameter dtypes.
    """

    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    drop_rate: float = 0.0
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    depthwise_impl: str = "auto"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        return stage_info(
            [64, 128, 256, 728, 2048],
            [2, 4, 8, 16, 32],
            ["act2", "block2.rep.0", "block3.rep.0", "block12.rep.0", "act4"],
        )

    @property
    def min_input_size(self) -> int:
        """7: the stem's two unpadded 3x3 convs (the first stride 2); the blocks'
        convs and max pools are padded."""
        return smallest_side([(3, 2, 0), (3, 1, 0)])

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        check_image_input(x, self)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = partial(Conv2d, use_bias=False, depthwise_impl=self.depthwise_impl, **dt)
        norm = partial(BatchNorm2d, eps=self.bn_eps, momentum=self.bn_momentum, **dt)
        block = partial(Block, conv=conv, norm=norm)

        x = nn.relu(norm(name="bn1")(conv(32, 3, 2, name="conv1")(x), train=train))
        x = nn.relu(norm(name="bn2")(conv(64, 3, name="conv2")(x), train=train))
        feats = [x]
        x = block(128, 2, stride=2, start_with_relu=False, name="block1")(x, train=train)
        feats.append(nn.relu(x))
        x = block(256, 2, stride=2, name="block2")(x, train=train)
        feats.append(nn.relu(x))
        x = block(728, 2, stride=2, name="block3")(x, train=train)
        for i in range(4, 12):
            x = block(728, 3, name=f"block{i}")(x, train=train)
        feats.append(nn.relu(x))
        x = block(1024, 2, stride=2, grow_first=False, name="block12")(x, train=train)
        x = nn.relu(norm(name="bn3")(SeparableConv2d(1536, conv, name="conv3")(x), train=train))
        x = nn.relu(norm(name="bn4")(SeparableConv2d(2048, conv, name="conv4")(x), train=train))
        if self.features_only:
            return self._select_features([*feats, x])
        x = self._pool(x)
        if self.num_classes == 0:
            return x
        x = Dropout(self.drop_rate, name="drop")(x, train=train)
        return nn.Dense(self.num_classes, name="fc", **dt)(x)


# ----------------------------------------------------------------------------- aligned


class ConvNormAct(nn.Module):
    """timm's ``ConvNormAct``: ``conv`` (no bias), ``bn``, optional ReLU."""

    features: int
    kernel_size: int
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    act: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        pad = (self.kernel_size - 1) // 2
        x = self.conv(self.features, self.kernel_size, self.stride, padding=pad, name="conv")(x)
        x = self.norm(name="bn")(x, train=train)
        return nn.relu(x) if self.act else x


class SeparableConvNorm(nn.Module):
    """timm's aligned ``SeparableConv2d``: dw 3x3, ``bn_dw``, [ReLU], pw 1x1, ``bn_pw``, [ReLU]."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    act: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        act = nn.relu if self.act else (lambda v: v)
        x = self.conv(c, 3, self.stride, padding=1, groups=c, name="conv_dw")(x)
        x = act(self.norm(name="bn_dw")(x, train=train))
        x = self.conv(self.features, 1, name="conv_pw")(x)
        return act(self.norm(name="bn_pw")(x, train=train))


class _Stack(nn.Module):
    """timm's ``stack`` Sequential: three separable convs ``conv1..3`` (ReLUs before, or inside).

    Returns the output and the input of ``conv3`` (timm's ``stack.act3`` feature tap).
    """

    out_chs: Sequence[int]
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    start_with_relu: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        tap = x
        for i, out in enumerate(self.out_chs):
            if self.start_with_relu:
                x = nn.relu(x)
            tap = x
            x = SeparableConvNorm(
                out,
                self.conv,
                self.norm,
                stride=self.stride if i == 2 else 1,
                act=not self.start_with_relu,
                name=f"conv{i + 1}",
            )(x, train=train)
        return x, tap


class XceptionModule(nn.Module):
    """Three separable convs (the last strided) + a 1x1 conv-BN ``shortcut`` or identity.

    Returns the output and the input of the third (strided) separable conv, the feature
    map timm taps in a strided block.
    """

    out_chs: Sequence[int]
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    start_with_relu: bool = True
    no_skip: bool = False
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        y, tap = _Stack(
            self.out_chs, self.conv, self.norm, self.stride, self.start_with_relu, name="stack"
        )(x, train=train)
        if self.no_skip:
            return y, tap
        if self.out_chs[-1] != x.shape[-1] or self.stride != 1:
            x = ConvNormAct(
                self.out_chs[-1], 1, self.conv, self.norm, self.stride, act=False, name="shortcut"
            )(x, train=train)
        return DropPath(self.drop_path, name="drop_path")(y, train=train) + x, tap


def _aligned_blocks(middle: int, entry: Sequence[tuple[int, int]]) -> tuple[tuple[Any, ...], ...]:
    """``(out_chs, stride, start_with_relu, no_skip)`` rows: entry, ``middle`` x 728, exit flow."""
    rows: list[tuple[Any, ...]] = [((c, c, c), s, True, False) for c, s in entry]
    rows += [((728, 728, 728), 1, True, False)] * middle
    rows += [((728, 1024, 1024), 2, True, False), ((1536, 1536, 2048), 1, False, True)]
    return tuple(rows)


class XceptionAligned(FeatureMixin, nn.Module):
    """Modified aligned Xception (timm ``xception41/65/71``), NHWC.

    Attributes:
        block_cfg: rows ``(out_chs (3 ints), stride, start_with_relu, no_skip)``.
        num_classes: classifier outputs; ``0`` returns the pooled features (pre-logits); with
            ``global_pool=''`` the unpooled last block's map (timm's ``forward_features``).
        in_chans: input channels.
        features_only: return timm's taps, ``blocks.{i}.stack.act3`` (the input of the
            strided conv) of every strided block and the last block's output (strides 2,
            4, 8, 16, 32), selected by ``out_indices`` (``None``: all); no ``head``.
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (none).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linear over blocks up to this rate.
        bn_eps, bn_momentum: BatchNorm settings (timm: eps 1e-3, as the TF original).
        depthwise_impl: how the depthwise convs run (:class:`~flaxcnn.layers.Conv2d`):
            ``'auto'`` as :func:`flaxcnn.kernels` says (shifted slices on XLA:CPU), else as named.
        dtype, param_dtype: computation and parameter dtypes.
    """

    block_cfg: Sequence[tuple[Any, ...]]
    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    depthwise_impl: str = "auto"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        chans, reds, mods, r = [], [], [], 2  # after the stem
        for i, (out_chs, stride, *_) in enumerate(self.block_cfg):
            if stride > 1:
                chans.append(out_chs[-2])
                reds.append(r)
                mods.append(f"blocks.{i}.stack.act3")
                r *= stride
        last = len(self.block_cfg) - 1
        return stage_info(
            [*chans, self.block_cfg[-1][0][-1]], [*reds, r], [*mods, f"blocks.{last}"]
        )

    @property
    def min_input_size(self) -> int:
        """1: every conv is padded, so a 1x1 image leaves 1x1 maps."""
        return 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        check_image_input(x, self)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = partial(Conv2d, use_bias=False, depthwise_impl=self.depthwise_impl, **dt)
        norm = partial(BatchNorm2d, eps=self.bn_eps, momentum=self.bn_momentum, **dt)

        x = ConvNormAct(32, 3, conv, norm, 2, name="stem_0")(x, train=train)
        x = ConvNormAct(64, 3, conv, norm, 1, name="stem_1")(x, train=train)
        n = len(self.block_cfg)
        feats = []
        for i, (out_chs, stride, start_with_relu, no_skip) in enumerate(self.block_cfg):
            x, tap = XceptionModule(
                tuple(out_chs),
                conv,
                norm,
                stride,
                start_with_relu,
                no_skip,
                drop_path=self.drop_path_rate * i / max(n - 1, 1),
                name=f"blocks_{i}",
            )(x, train=train)
            if stride > 1:
                feats.append(tap)
        if self.features_only:
            return self._select_features([*feats, x])
        x = self._pool(x)
        if self.num_classes == 0:
            return x
        return _Head(self.num_classes, self.drop_rate, **dt, name="head")(x, train=train)


class _Head(nn.Module):
    """timm's ``ClassifierHead`` after its pool: dropout, Linear ``fc``."""

    num_classes: int
    drop_rate: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = Dropout(self.drop_rate, name="drop")(x, train=train)
        return nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc"
        )(x)


_PAPER = "Chollet, Xception: Deep Learning with Depthwise Separable Convolutions, CVPR 2017"
_ALIGNED = (
    "Chen et al., Encoder-Decoder with Atrous Separable Convolution for Semantic Image "
    "Segmentation (DeepLab v3+), ECCV 2018"
)

LegacyXception = register_model(
    "legacy_xception",
    Xception,
    family="xception",
    sources=("timm",),
    input_size=(299, 299, 3),
    paper=_PAPER,
)

_register_aligned = variants(
    XceptionAligned,
    family="xception",
    sources=("timm",),
    input_size=(299, 299, 3),
    classifier="head.fc",
    first_conv="stem.0.conv",
    paper=_ALIGNED,
)
_ENTRY = ((128, 2), (256, 2), (728, 2))
Xception41 = _register_aligned("xception41", {"block_cfg": _aligned_blocks(8, _ENTRY)})
Xception65 = _register_aligned("xception65", {"block_cfg": _aligned_blocks(16, _ENTRY)})
Xception71 = _register_aligned(
    "xception71",
    {"block_cfg": _aligned_blocks(16, ((128, 2), (256, 1), (256, 2), (728, 1), (728, 2)))},
)
