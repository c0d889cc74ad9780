"""DenseNet-BC: Huang et al., "Densely Connected Convolutional Networks", CVPR 2017
(arXiv:1608.06993).

Each dense layer sees the concatenation of all earlier feature maps of its block
(BN-ReLU-conv1x1 bottleneck to ``bn_size * growth_rate`` channels, BN-ReLU-conv3x3
to ``growth_rate``); transitions halve channels and resolution. With
``memory_efficient`` the concatenation + bottleneck of each layer is rematerialised
in the backward pass (``flax.linen.remat``, Pleiss et al., arXiv:1707.06990), as
torchvision's flag of the same name does with ``torch.utils.checkpoint``: the
concatenations otherwise dominate activation memory.

torchvision and timm name the modules identically (``features.denseblock1.denselayer1.norm1``,
``features.transition1.conv``, ``features.norm5``, ``classifier``); so does flaxcnn.
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
    FeatureMixin,
    avg_pool2d,
    check_image_input,
    max_pool2d,
    smallest_side,
    stage_info,
)

__all__ = ["DenseNet", "DenseLayer"]

ModuleDef = Callable[..., nn.Module]


class DenseLayer(nn.Module):
    """concat -> BN-ReLU-conv1x1 (``bn_size * growth_rate``) -> BN-ReLU-conv3x3 (``growth_rate``).

    ``train`` is positional here so that ``nn.remat`` can treat it as static.
    """

    growth_rate: int
    bn_size: int
    conv: ModuleDef
    norm: ModuleDef
    drop_rate: float = 0.0

    @nn.compact
    def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
        x = jnp.concatenate(features, axis=-1)
        x = nn.relu(self.norm(name="norm1")(x, train=train))
        x = self.conv(self.bn_size * self.growth_rate, 1, name="conv1")(x)
        x = nn.relu(self.norm(name="norm2")(x, train=train))
        x = self.conv(self.growth_rate, 3, padding=1, name="conv2")(x)
        return Dropout(self.drop_rate, name="drop")(x, train=train)


class DenseBlock(nn.Module):
    """``num_layers`` dense layers (``denselayer1`` ...); returns all features concatenated."""

    num_layers: int
    growth_rate: int
    bn_size: int
    conv: ModuleDef
    norm: ModuleDef
    drop_rate: float = 0.0
    memory_efficient: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        layer_cls = (
            nn.remat(DenseLayer, static_argnums=(2,)) if self.memory_efficient else DenseLayer
        )
        features = [x]
        for i in range(self.num_layers):
            layer = layer_cls(
                self.growth_rate,
                self.bn_size,
                self.conv,
                self.norm,
                self.drop_rate,
                name=f"denselayer{i + 1}",
            )
            features.append(layer(tuple(features), train))
        return jnp.concatenate(features, axis=-1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 to ``features`` channels, then 2x2/2 average pooling."""

    features: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = nn.relu(self.norm(name="norm")(x, train=train))
        return avg_pool2d(self.conv(self.features, 1, name="conv")(x), 2, 2)


class Features(nn.Module):
    """torch's ``features`` Sequential: stem, dense blocks and transitions, ``norm5``.

    Returns timm's feature taps: ReLU(``norm0``), each dense block but the last (before
    its transition), and ``norm5`` (before the ReLU, which the caller applies).
    """

    growth_rate: int
    block_config: Sequence[int]
    num_init_features: int
    bn_size: int
    conv: ModuleDef
    norm: ModuleDef
    drop_rate: float = 0.0
    memory_efficient: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> list[jax.Array]:
        x = self.conv(self.num_init_features, 7, 2, padding=3, name="conv0")(x)
        x = nn.relu(self.norm(name="norm0")(x, train=train))
        feats = [x]
        x = max_pool2d(x, 3, 2, padding=1)
        ch = self.num_init_features
        for i, n in enumerate(self.block_config):
            x = DenseBlock(
                n,
                self.growth_rate,
                self.bn_size,
                self.conv,
                self.norm,
                self.drop_rate,
                self.memory_efficient,
                name=f"denseblock{i + 1}",
            )(x, train=train)
            ch += n * self.growth_rate
            if i != len(self.block_config) - 1:
                feats.append(x)
                ch //= 2
                x = Transition(ch, self.conv, self.norm, name=f"transition{i + 1}")(x, train=train)
        return [*feats, self.norm(name="norm5")(x, train=train)]


class DenseNet(FeatureMixin, nn.Module):
    """DenseNet-BC in NHWC, torchvision's (and timm's) architecture.

    Attributes:
        growth_rate: channels each dense layer adds (``k``; 32, or 48 for DenseNet-161).
        block_config: dense layers per block (``(6, 12, 24, 16)`` for DenseNet-121).
        num_init_features: stem width (``2 * growth_rate`` in all four variants).
        bn_size: bottleneck width factor (``bn_size * growth_rate`` channels).
        num_classes: classifier outputs; ``0`` returns the pooled features (pre-logits); with
            ``global_pool=''`` the unpooled ReLU(``norm5``) map (timm's ``forward_features``).
        in_chans: input channels.
        features_only: return timm's taps ``[features.norm0, features.denseblock1, ...,
            features.denseblock{n-1}, features.norm5]`` (ReLU after the norms; strides 2, 4,
            8, 16, 32) selected by ``out_indices`` (``None``: all), and build no classifier.
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (none).
        drop_rate: dropout after each dense layer (torchvision's ``drop_rate``, timm's
            ``proj_drop_rate``).
        memory_efficient: rematerialise each layer's concat + bottleneck in the
            backward pass (less memory, one more forward per layer; same numbers).
        bn_eps, bn_momentum: BatchNorm settings (torch's defaults).
        dtype, param_dtype: computation and parameter dtypes.
    """

    growth_rate: int = 32
    block_config: Sequence[int] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    drop_rate: float = 0.0
    memory_efficient: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        chans, ch = [self.num_init_features], self.num_init_features
        for i, n in enumerate(self.block_config):
            ch += n * self.growth_rate
            chans.append(ch)
            if i != len(self.block_config) - 1:
                ch //= 2
        n = len(self.block_config)
        mods = [f"features.denseblock{i + 1}" for i in range(n - 1)]
        return stage_info(
            chans,
            [2 ** (i + 1) for i in range(n + 1)],
            ["features.norm0", *mods, "features.norm5"],
        )

    @property
    def min_input_size(self) -> int:
        """29 for the published four blocks: conv0 7x7/2 and pool0 3x3/2 (padded), then
        each transition's 2x2/2 average pool needs two pixels."""
        transitions = [(2, 2, 0)] * (len(self.block_config) - 1)
        return smallest_side([(7, 2, 3), (3, 2, 1), *transitions])

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        check_image_input(x, self)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # torchvision: nn.init.kaiming_normal_ (fan_in, untruncated normal); flax's kaiming_normal
        # is truncated.
        kaiming = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
        conv = partial(Conv2d, use_bias=False, kernel_init=kaiming, **dt)
        norm = partial(BatchNorm2d, eps=self.bn_eps, momentum=self.bn_momentum, **dt)
        feats = Features(
            self.growth_rate,
            tuple(self.block_config),
            self.num_init_features,
            self.bn_size,
            conv,
            norm,
            self.drop_rate,
            self.memory_efficient,
            name="features",
        )(x, train=train)
        feats[-1] = nn.relu(feats[-1])
        if self.features_only:
            return self._select_features(feats)
        x = self._pool(feats[-1])
        if self.num_classes == 0:
            return x
        return nn.Dense(self.num_classes, name="classifier", **dt)(x)


_PAPER = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017"


# timm registers the torchvision architectures under the same names and module names.
_register = variants(
    DenseNet,
    family="densenet",
    sources=("torchvision", "timm"),
    classifier="classifier",
    first_conv="features.conv0",
    paper=_PAPER,
)


def _config(growth_rate: int, block_config: tuple[int, ...]) -> dict[str, Any]:
    return dict(
        growth_rate=growth_rate, block_config=block_config, num_init_features=2 * growth_rate
    )


DenseNet121 = _register("densenet121", _config(32, (6, 12, 24, 16)))
DenseNet161 = _register("densenet161", _config(48, (6, 12, 36, 24)))
DenseNet169 = _register("densenet169", _config(32, (6, 12, 32, 32)))
DenseNet201 = _register("densenet201", _config(32, (6, 12, 48, 32)))
