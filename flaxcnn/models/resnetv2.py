"""ResNet v2, pre-activation: He et al., "Identity Mappings in Deep Residual Networks",
ECCV 2016 (arXiv:1603.05027), as timm's ``resnetv2_50`` / ``resnetv2_101``.

Where v1 (``flaxcnn.models.resnet``) adds the shortcut and then applies ReLU, v2
keeps the residual stream clean: every block starts with BN-ReLU (``norm1``) and
its branch ends in a bare conv; the projection shortcut takes the pre-activated
input. The stem is a bare 7x7 conv + max pool, and a final BN-ReLU (``norm``)
precedes the head. Like timm, the stride sits on the 3x3 conv, convs are plain
(the BiT variants' weight standardisation and GroupNorm are not these models) and
the classifier ``head.fc`` is a 1x1 conv (its kernel is stored as a conv's).

Submodule names mirror timm's (``stem/conv``, ``stages_0/blocks_0/downsample/conv``,
``norm``, ``head/fc``): the generic rule converts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import variants
from ..layers import (
    BatchNorm2d,
    Conv2d,
    Dropout,
    DropPath,
    FeatureMixin,
    check_image_input,
    make_divisible,
    max_pool2d,
    stage_info,
)

__all__ = ["PreActBottleneck", "ResNetV2"]

ModuleDef = Callable[..., nn.Module]


class _Conv(nn.Module):
    """A module holding one conv named ``conv`` (timm's ``stem`` and ``downsample``)."""

    features: int
    kernel_size: int
    stride: int
    padding: int
    conv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(
            self.features, self.kernel_size, self.stride, padding=self.padding, name="conv"
        )(x)


class PreActBottleneck(nn.Module):
    """BN-ReLU, 1x1, BN-ReLU, 3x3 (strided), BN-ReLU, 1x1 (x4); shortcut from the pre-activation."""

    out_chs: int
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    downsample: bool = False
    bottle_ratio: float = 0.25
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        mid = make_divisible(self.out_chs * self.bottle_ratio)
        x_preact = nn.relu(self.norm(name="norm1")(x, train=train))
        shortcut = x
        if self.downsample:
            shortcut = _Conv(self.out_chs, 1, self.stride, 0, self.conv, name="downsample")(
                x_preact
            )
        y = self.conv(mid, 1, name="conv1")(x_preact)
        y = nn.relu(self.norm(name="norm2")(y, train=train))
        y = self.conv(mid, 3, self.stride, padding=1, name="conv2")(y)
        y = nn.relu(self.norm(name="norm3")(y, train=train))
        y = self.conv(self.out_chs, 1, name="conv3")(y)
        return DropPath(self.drop_path, name="drop_path")(y, train=train) + shortcut


class ResNetStage(nn.Module):
    """``blocks_0`` ... ``blocks_{depth-1}``; the first strides and projects."""

    out_chs: int
    depth: int
    stride: int
    conv: ModuleDef
    norm: ModuleDef
    drop_paths: Sequence[float] = ()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        for j in range(self.depth):
            x = PreActBottleneck(
                self.out_chs,
                self.conv,
                self.norm,
                stride=self.stride if j == 0 else 1,
                downsample=j == 0,
                drop_path=self.drop_paths[j] if self.drop_paths else 0.0,
                name=f"blocks_{j}",
            )(x, train=train)
        return x


class _Head(nn.Module):
    """timm's ``ClassifierHead(use_conv=True)``: (pooled input), dropout, 1x1 conv ``fc``."""

    num_classes: int
    conv: ModuleDef
    drop_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = Dropout(self.drop_rate, name="drop")(x, train=train)
        return self.conv(self.num_classes, 1, use_bias=True, name="fc")(x)[:, 0, 0]


class ResNetV2(FeatureMixin, nn.Module):
    """Pre-activation ResNet (bottleneck blocks), timm's ``ResNetV2`` with plain convs and BN.

    Attributes:
        layers: blocks per stage (``(3, 4, 6, 3)`` for ResNet-v2-50).
        channels: output channels per stage.
        num_classes: classifier outputs; ``0`` returns the pooled features (pre-logits,
            after the final ``norm``); with ``global_pool=''`` the unpooled map (timm's
            ``forward_features``).
        in_chans: input channels.
        features_only: return the maps ``[stem.conv, stages.0, ..., stages.3]`` (strides 2,
            4, 8, 16, 32; the stages' raw outputs, before the final ``norm``, as timm's)
            selected by ``out_indices`` (``None``: all), and build no head.
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (none).
        stem_chs: stem width.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linear over blocks up to this rate.
        bn_eps, bn_momentum: BatchNorm settings (torch's defaults).
        dtype, param_dtype: computation and parameter dtypes.
    """

    layers: Sequence[int] = (3, 4, 6, 3)
    channels: Sequence[int] = (256, 512, 1024, 2048)
    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    stem_chs: int = 64
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        n = len(self.layers)
        return stage_info(
            [self.stem_chs, *self.channels],
            [2 ** (i + 1) for i in range(n + 1)],
            ["stem.conv"] + [f"stages.{i}" for i in range(n)],
        )

    @property
    def min_input_size(self) -> int:
        """1: every conv and pool is padded, so a 1x1 image leaves 1x1 maps."""
        return 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        check_image_input(x, self)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = partial(Conv2d, use_bias=False, **dt)
        norm = partial(BatchNorm2d, eps=self.bn_eps, momentum=self.bn_momentum, **dt)

        x = _Conv(self.stem_chs, 7, 2, 3, conv, name="stem")(x)
        feats = [x]
        x = max_pool2d(x, 3, 2, padding=1)
        total = sum(self.layers)
        rates = [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        start = 0
        for i, (depth, ch) in enumerate(zip(self.layers, self.channels, strict=True)):
            x = ResNetStage(
                ch,
                depth,
                1 if i == 0 else 2,
                conv,
                norm,
                drop_paths=tuple(rates[start : start + depth]),
                name=f"stages_{i}",
            )(x, train=train)
            start += depth
            feats.append(x)
        if self.features_only:
            return self._select_features(feats)
        x = self._pool(nn.relu(norm(name="norm")(x, train=train)), keepdims=True)
        if self.num_classes == 0:
            return x if self.global_pool == "" else x[:, 0, 0]
        return _Head(self.num_classes, conv, self.drop_rate, name="head")(x, train=train)


_PAPER = "He et al., Identity Mappings in Deep Residual Networks, ECCV 2016"


_register = variants(
    ResNetV2,
    family="resnetv2",
    sources=("timm",),
    classifier="head.fc",
    first_conv="stem.conv",
    paper=_PAPER,
)
ResNetV2_50 = _register("resnetv2_50", {"layers": (3, 4, 6, 3)})
ResNetV2_101 = _register("resnetv2_101", {"layers": (3, 4, 23, 3)})
