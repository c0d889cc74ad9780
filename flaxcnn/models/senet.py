"""The Caffe-lineage SENets: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018
(arXiv:1709.01507), as timm's ``legacy_*`` models (the Cadene port of the authors'
Caffe weights): SENet-154 and the legacy SE-ResNeXt.

The torchvision-style SE-ResNet/SE-ResNeXt (timm ``seresnet50``, ``seresnext50_32x4d``)
live in :mod:`flaxcnn.models.resnet` as ResNet options; the legacy models are their own
module because their structure is not a ResNet configuration: a stem (``layer0``) whose
max pool has *no padding* and uses ceil mode (kept for the Caffe weights), an SE module
of exactly ``channels // 16`` with biases (``se_module``), and a ``last_linear``
classifier after dropout 0.2. The variants are data:

* ``block="senet"`` (SENet-154): a stem of three 3x3 conv-BN-ReLU, bottlenecks of width
  ``2 * planes`` then ``4 * planes`` (64 groups), 3x3 strided projection shortcuts in
  stages 2-4;
* ``block="seresnext"`` (``legacy_seresnext26_32x4d``): a 7x7 stem conv, ResNeXt
  bottlenecks of width ``floor(planes * base_width / 64) * groups``, 1x1 shortcuts.

Names mirror timm's module tree (``layer0/conv1``, ``layer3_12/se_module/fc1``,
``layer2_0/downsample_0``).
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
    SqueezeExcite,
    check_image_input,
    max_pool2d,
    relu,
    smallest_side,
    stage_info,
)

__all__ = ["SENet", "SEBottleneck"]

ModuleDef = Callable[..., nn.Module]


class SEBottleneck(nn.Module):
    """1x1 (``widths[0]``), grouped strided 3x3 (``widths[1]``), 1x1 (4 planes), SE,
    + shortcut, ReLU: timm's ``SEBottleneck`` and ``SEResNeXtBottleneck``."""

    planes: int
    widths: tuple[int, int]
    conv: ModuleDef
    norm: ModuleDef
    se: ModuleDef
    groups: int = 64
    reduction: int = 16
    stride: int = 1
    downsample: bool = False
    downsample_kernel_size: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        out_ch = self.planes * 4
        y = relu(self.norm(name="bn1")(self.conv(self.widths[0], 1, name="conv1")(x), train=train))
        y = self.conv(self.widths[1], 3, self.stride, padding=1, groups=self.groups, name="conv2")(
            y
        )
        y = relu(self.norm(name="bn2")(y, train=train))
        y = self.norm(name="bn3")(self.conv(out_ch, 1, name="conv3")(y), train=train)
        y = self.se(out_ch // self.reduction, name="se_module")(y)
        if self.downsample:
            k = self.downsample_kernel_size
            x = self.conv(out_ch, k, self.stride, padding=k // 2, name="downsample_0")(x)
            x = self.norm(name="downsample_1")(x, train=train)
        return relu(y + x)


class Stem(nn.Module):
    """timm's ``layer0``: three 3x3 conv-BN-ReLU (the first strided) for ``input_3x3``,
    else one 7x7 stride-2 conv-BN-ReLU."""

    widths: Sequence[int]
    conv: ModuleDef
    norm: ModuleDef
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        k = self.kernel_size
        for i, w in enumerate(self.widths):
            x = self.conv(w, k, 2 if i == 0 else 1, padding=k // 2, name=f"conv{i + 1}")(x)
            x = relu(self.norm(name=f"bn{i + 1}")(x, train=train))
        return x


class SENet(FeatureMixin, nn.Module):
    """A legacy SENet in NHWC (timm ``legacy_senet154``, ``legacy_seresnext26_32x4d``).

    Attributes:
        layers: blocks per stage (``(3, 8, 36, 3)``).
        block: ``"senet"`` (SENet-154 bottleneck, three-3x3 stem) or ``"seresnext"``
            (ResNeXt bottleneck of ``base_width``, 7x7 stem).
        groups: cardinality of the 3x3 convs.
        base_width: ResNeXt width per group at ``planes=64`` (``"seresnext"`` only).
        reduction: SE reduction (rd channels = channels // reduction).
        inplanes: stem output width.
        downsample_kernel_size: kernel of the stage 2-4 projection shortcuts (3, padding 1
            for SENet-154).
        num_classes: classifier outputs; ``0`` returns the pooled features (pre-logits); with
            ``global_pool=''`` the unpooled ``layer4`` map (timm's ``forward_features``).
        in_chans: input channels.
        features_only: return the maps ``[layer0, layer1, ..., layer4]`` (strides 2, 4, 8,
            16, 32; ``layer0`` before its max pool) selected by ``out_indices`` (``None``:
            all), and build no ``last_linear``.
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (none).
        drop_rate: dropout before ``last_linear`` (0.2, as timm).
        bn_eps, bn_momentum: BatchNorm settings (torch's defaults).
        dtype, param_dtype: computation and parameter dtypes.
    """

    layers: Sequence[int] = (3, 8, 36, 3)
    block: str = "senet"
    groups: int = 64
    base_width: int = 4
    reduction: int = 16
    inplanes: int = 128
    downsample_kernel_size: int = 3
    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    drop_rate: float = 0.2
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        n = len(self.layers)
        return stage_info(
            [self.inplanes] + [256 * 2**i for i in range(n)],
            [2 ** (i + 1) for i in range(n + 1)],
            ["layer0"] + [f"layer{i + 1}" for i in range(n)],
        )

    @property
    def min_input_size(self) -> int:
        """3: the stem's stride-2 conv (padded), then the unpadded 3x3/2 ceil-mode
        max pool, which needs two pixels; the stages' convs are padded."""
        k = 3 if self.block == "senet" else 7
        return smallest_side([(k, 2, k // 2), (3, 2, 0, True)])

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        check_image_input(x, self)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = partial(Conv2d, use_bias=False, **dt)
        norm = partial(BatchNorm2d, eps=self.bn_eps, momentum=self.bn_momentum, **dt)
        se = partial(SqueezeExcite, **dt)

        if self.block not in ("senet", "seresnext"):
            raise ValueError(f"SENet: block must be 'senet' or 'seresnext', got {self.block!r}")
        senet = self.block == "senet"
        stem = (64, 64, self.inplanes) if senet else (self.inplanes,)
        x = Stem(stem, conv, norm, 3 if senet else 7, name="layer0")(x, train=train)
        feats = [x]
        x = max_pool2d(x, 3, 2, ceil_mode=True)  # no padding, ceil mode: the Caffe original's
        in_ch = self.inplanes
        for i, n in enumerate(self.layers):
            planes = 64 * 2**i
            stride = 1 if i == 0 else 2
            width = planes * self.base_width // 64 * self.groups
            widths = (planes * 2, planes * 4) if senet else (width, width)
            for j in range(n):
                x = SEBottleneck(
                    planes,
                    widths,
                    conv,
                    norm,
                    se,
                    groups=self.groups,
                    reduction=self.reduction,
                    stride=stride if j == 0 else 1,
                    downsample=j == 0 and (stride != 1 or in_ch != planes * 4),
                    downsample_kernel_size=1 if i == 0 else self.downsample_kernel_size,
                    name=f"layer{i + 1}_{j}",
                )(x, train=train)
                in_ch = planes * 4
            feats.append(x)
        if self.features_only:
            return self._select_features(feats)
        x = self._pool(x)
        if self.num_classes == 0:
            return x
        x = Dropout(self.drop_rate, name="drop")(x, train=train)
        return nn.Dense(self.num_classes, name="last_linear", **dt)(x)


_register = variants(
    SENet,
    family="senet",
    sources=("timm",),
    classifier="last_linear",
    first_conv="layer0.conv1",
    paper="Hu et al., Squeeze-and-Excitation Networks, CVPR 2018",
)
# The small one first: the registry-wide contract test compiles each family's first model.
LegacySEResNeXt26_32x4d = _register(
    "legacy_seresnext26_32x4d",
    dict(layers=(2, 2, 2, 2), block="seresnext", groups=32, inplanes=64, downsample_kernel_size=1),
)
SENet154 = _register("legacy_senet154")
