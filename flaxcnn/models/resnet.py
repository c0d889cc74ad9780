"""ResNet, ResNeXt and Wide ResNet.

* ResNet: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016
  (arXiv:1512.03385). torchvision's "v1.5": in the bottleneck the stride sits on
  the 3x3 conv, not the first 1x1.
* ResNeXt: Xie et al., "Aggregated Residual Transformations for Deep Neural
  Networks", CVPR 2017 (arXiv:1611.05431): grouped 3x3 convs ("cardinality").
* Wide ResNet: Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016
  (arXiv:1605.07146), in torchvision's form: bottleneck width doubled.
* ResNet-D: He et al., "Bag of Tricks for Image Classification with Convolutional
  Neural Networks", CVPR 2019 (arXiv:1812.01187): a deep 3x3 stem and an avg-pool
  shortcut, as timm's ``resnet50d``.
* SE-ResNet / SE-ResNeXt: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018
  (arXiv:1709.01507), as timm's ``seresnet50`` (SE after each block's last BN).

One :class:`ResNet` class; every variant is a row of data (block type, stage sizes,
groups, width per group, stem, shortcut, attention). Submodule names mirror
torchvision's and timm's module tree (``conv1``, ``bn1``, ``layer1_0/conv1``,
``layer1_0/downsample_0``, ``conv1_0`` for timm's deep stem, ``fc``), which is the
whole weight-conversion spec.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar, NamedTuple

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
    SqueezeExcite,
    avg_pool2d,
    check_image_input,
    get_act,
    make_divisible,
    max_pool2d,
    relu,
    stage_info,
)

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "make_divisible"]

ModuleDef = Callable[..., nn.Module]


class _Block(nn.Module):
    """What every residual block of :class:`ResNet` is given (the fields of both kinds).

    ``conv`` and ``norm`` are the parent's partials (dtype, BN settings); ``attn`` builds
    the SE module (``None``: no attention); ``act`` is the activation.
    """

    planes: int
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    downsample: bool = False
    groups: int = 1
    base_width: int = 64
    dilation: int = 1
    first_dilation: int = 1
    zero_init_last: bool = False
    drop_path: float = 0.0
    avg_down: bool = False
    attn: ModuleDef | None = None
    act: Callable[[jax.Array], jax.Array] = relu
    shortcut: str | None = "B"
    stride_in_1x1: bool = False

    expansion: ClassVar[int] = 1

    @property
    def last_norm(self) -> ModuleDef:
        """The block's last BN, scale initialised to zero with ``zero_init_last``."""
        if self.zero_init_last:
            return partial(self.norm, scale_init=nn.initializers.zeros)
        return self.norm


class BasicBlock(_Block):
    """Two 3x3 convs and an identity (or 1x1 projection) shortcut (ResNet-18/34)."""

    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if self.groups != 1 or self.base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and width_per_group=64")
        if self.dilation > 1:
            raise ValueError("BasicBlock does not support dilation > 1 (as in torchvision)")
        out = self.conv(self.planes, 3, self.stride, padding=1, name="conv1")(x)
        out = self.act(self.norm(name="bn1")(out, train=train))
        out = self.conv(self.planes, 3, padding=1, name="conv2")(out)
        out = self.last_norm(name="bn2")(out, train=train)
        return _residual(self, out, x, train)


class Bottleneck(_Block):
    """1x1 reduce, 3x3 (strided, grouped, dilated), 1x1 expand x4 (ResNet-50 and deeper).

    The stride is on the 3x3 conv (torchvision's ResNet v1.5), or with ``stride_in_1x1`` on
    the first 1x1 as He et al. published it (v1, Caffe's ResNet-50: a strided 1x1 reads a
    quarter of its input's positions, which is what v1.5 fixes). The 3x3's width is
    ``int(planes * base_width / 64) * groups``, which gives ResNeXt and Wide ResNet.
    """

    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        width = int(self.planes * (self.base_width / 64.0)) * self.groups
        stride_1x1, stride_3x3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
        out = self.conv(width, 1, stride_1x1, name="conv1")(x)
        out = self.act(self.norm(name="bn1")(out, train=train))
        out = self.conv(
            width,
            3,
            stride_3x3,
            padding=self.first_dilation,
            dilation=self.first_dilation,
            groups=self.groups,
            name="conv2",
        )(out)
        out = self.act(self.norm(name="bn2")(out, train=train))
        out = self.conv(self.planes * self.expansion, 1, name="conv3")(out)
        out = self.last_norm(name="bn3")(out, train=train)
        return _residual(self, out, x, train)


def _residual(block: _Block, out: jax.Array, x: jax.Array, train: bool) -> jax.Array:
    """A block's tail: [SE], drop path, add the shortcut (none in a plain network),
    activation."""
    out = _attn(block, out)
    out = DropPath(block.drop_path, name="drop_path")(out, train=train)
    if block.shortcut is None:
        return block.act(out)
    return block.act(out + _shortcut(block, x, block.planes * block.expansion, train))


def _shortcut(block: _Block, x: jax.Array, out_ch: int, train: bool) -> jax.Array:
    """Identity, or where the shape changes (``downsample``) option A or B of He et al.
    section 3.3.

    Option A (the paper's CIFAR networks) has no parameters: the input subsampled by the
    stride and its channels zero-padded, half the new ones before and half after (as the
    widely used CIFAR re-implementations pad, so their weights load).

    Option B, torchvision's, projects: Sequential(conv1x1 (strided), BN). ResNet-D's
    (``avg_down``, Bag of Tricks section 4.1) is Sequential(AvgPool 2x2/2 (ceil_mode,
    count_include_pad=False), conv1x1, BN), so its conv and BN are timm's ``downsample.1``
    and ``downsample.2``.
    """
    if not block.downsample:
        return x
    if block.shortcut == "A":
        x = x[:, :: block.stride, :: block.stride, :]
        extra = out_ch - x.shape[-1]
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    if not block.avg_down:
        sc = block.conv(out_ch, 1, block.stride, name="downsample_0")(x)
        return block.norm(name="downsample_1")(sc, train=train)
    if block.stride != 1:
        x = avg_pool2d(x, 2, block.stride, ceil_mode=True, count_include_pad=False)
    elif block.first_dilation > 1:
        # timm's AvgPool2dSame(2, 1) in a dilated stage: zero-pad bottom/right, divide by 4.
        x = avg_pool2d(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))), 2, 1)
    sc = block.conv(out_ch, 1, name="downsample_1")(x)
    return block.norm(name="downsample_2")(sc, train=train)


def _attn(block: _Block, x: jax.Array) -> jax.Array:
    """timm's ``se`` after the last BN: SE with ratio 1/16, rounded to a multiple of 8."""
    if block.attn is None:
        return x
    return block.attn(make_divisible(x.shape[-1] / 16, 8, round_limit=0.0), name="se")(x)


class _Stage(NamedTuple):
    """One stage of the plan: block width, stride of its first block, dilation of its
    blocks and of its first block's 3x3 conv, and its output stride."""

    planes: int
    stride: int
    dilation: int
    first_dilation: int
    reduction: int


STEMS = ("", "cifar", "deep")
BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


class ResNet(FeatureMixin, nn.Module):
    """ResNet / ResNeXt / Wide ResNet, torchvision's architecture in NHWC.

    Attributes:
        stage_sizes: blocks per stage (``(3, 4, 6, 3)`` for ResNet-50).
        channels: each stage's block width (``planes``), the first ``len(stage_sizes)``
            used: ``(64, 128, 256, 512)``; He et al.'s CIFAR networks use ``(16, 32, 64)``
            (section 4.2).
        block: ``'basic'`` or ``'bottleneck'``.
        num_classes: classifier outputs; ``0`` returns the pooled features instead (below).
        in_chans: input channels.
        stem_type: ``''`` torchvision's 7x7/2 conv + 3x3/2 max pool; ``'cifar'`` a 3x3/1 conv
            and no pool, for small images (CIFAR, digits), as in He et al. section 4.2.
            ``'deep'`` ResNet-C/D's three 3x3 convs (stride 2, widths ``stem_width``,
            ``stem_width``, ``2 * stem_width``; timm's ``conv1.0/.3/.6``) + the max pool.
        stem_width: inner width of the deep stem (timm's meaning; the 7x7 and cifar stems
            are this wide: 64 for ImageNet, 16 for the CIFAR networks).
        shortcut: where a block changes shape, He et al.'s option ``'B'`` (a 1x1 projection,
            torchvision's) or ``'A'`` (stride subsampling and zero-padded channels: no
            parameters, the paper's CIFAR choice); ``None`` builds the *plain* network,
            no shortcuts at all (the paper's baseline that shows the degradation problem).
        stride_in_1x1: the bottleneck's stride on its first 1x1 conv (ResNet v1 as
            published) instead of the 3x3 (torchvision's v1.5).
        avg_down: ResNet-D shortcut: 2x2 average pool, then a stride-1 1x1 conv.
        attn_layer: ``'se'`` adds Squeeze-and-Excitation after each block's last BN
            (SE-ResNet/SE-ResNeXt, Hu et al., CVPR 2018), reduction 16 as timm rounds it.
        groups, width_per_group: ResNeXt cardinality and width (``32, 4`` for 32x4d).
        replace_stride_with_dilation: per stage 2-4, dilate instead of striding
            (output stride 16 or 8, as torchvision's segmentation backbones).
        zero_init_residual: initialise the last BN scale of every block to zero
            (Goyal et al., 2017), as torchvision's flag of the same name.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, increasing linearly to this rate over blocks.
        features_only: return the feature maps ``[act1, layer1, ..., layer4]`` (strides 2, 4,
            8, 16, 32) selected by ``out_indices`` (``None``: all; negative counts from the
            end) instead of logits; no ``fc``. ``feature_info()`` describes them.
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''``; ``num_classes=0`` returns
            the pooled ``layer4`` features (pre-logits), and with ``global_pool=''`` the
            unpooled ``layer4`` map (timm's ``forward_features``).
        bn_eps, bn_momentum: BatchNorm settings (torch's defaults).
        act_layer: the activation, by name (:func:`flaxcnn.layers.get_act`) or a callable
            (timm's ``act_layer``). Converted
            weights need ReLU; a smooth one (``'silu'``) makes the gradient a continuous
            function of the weights (the multi-host test relies on that).
        dtype: computation dtype (``jnp.bfloat16`` for mixed precision); ``param_dtype``
            the parameters' dtype. BN statistics stay float32.
    """

    stage_sizes: Sequence[int]
    channels: Sequence[int] = (64, 128, 256, 512)
    block: str = "bottleneck"
    num_classes: int = 1000
    in_chans: int = 3
    stem_type: str = ""
    stem_width: int = 64
    shortcut: str | None = "B"
    stride_in_1x1: bool = False
    avg_down: bool = False
    attn_layer: str = ""
    groups: int = 1
    width_per_group: int = 64
    replace_stride_with_dilation: Sequence[bool] = (False, False, False)
    zero_init_residual: bool = False
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    act_layer: str | Callable[[jax.Array], jax.Array] = "relu"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_plan(self) -> list[_Stage]:
        """Width, stride and dilation of every stage: what ``__call__`` builds and what
        ``feature_info`` reports."""
        cifar = self.stem_type == "cifar"
        reduction = 1 if cifar else 4  # after the stem's max pool
        dilation, plan = 1, []
        for i in range(len(self.stage_sizes)):
            stride, first_dilation = (1 if i == 0 else 2), dilation
            if i > 0 and self.replace_stride_with_dilation[i - 1]:
                dilation *= stride
                stride = 1
            reduction *= stride
            plan.append(_Stage(self.channels[i], stride, dilation, first_dilation, reduction))
        return plan

    def _stage_info(self) -> list[dict[str, Any]]:
        exp = BLOCKS[self.block].expansion
        plan = self._stage_plan()
        return stage_info(
            [self._stem_chs] + [s.planes * exp for s in plan],
            [1 if self.stem_type == "cifar" else 2] + [s.reduction for s in plan],
            ["act1"] + [f"layer{i + 1}" for i in range(len(plan))],
        )

    @property
    def _stem_chs(self) -> int:
        return 2 * self.stem_width if self.stem_type == "deep" else self.stem_width

    @property
    def min_input_size(self) -> int:
        """1: every conv and pool is padded (ResNet-D's ceil-mode 2x2/2 average pool
        starts inside a 1-pixel map), so a 1x1 image leaves 1x1 maps, as in torch."""
        return 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        if len(self.replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation should be None or a 3-element tuple, "
                f"got {self.replace_stride_with_dilation!r}"
            )
        if len(self.channels) < len(self.stage_sizes):
            raise ValueError(
                f"channels gives {len(self.channels)} stage widths for "
                f"{len(self.stage_sizes)} stages: {tuple(self.channels)} vs "
                f"stage_sizes={tuple(self.stage_sizes)}"
            )
        if self.shortcut not in ("A", "B", None):
            raise ValueError(f"shortcut must be 'A', 'B' or None, got {self.shortcut!r}")
        if self.shortcut == "A" and self.avg_down:
            raise ValueError("avg_down is a projection shortcut: it needs shortcut='B'")
        check_image_input(x, self)
        block_cls = BLOCKS[self.block]
        conv = partial(Conv2d, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
        norm = partial(
            BatchNorm2d,
            eps=self.bn_eps,
            momentum=self.bn_momentum,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

        if self.stem_type not in STEMS:
            raise ValueError(f"stem_type must be one of {STEMS}, got {self.stem_type!r}")
        if self.attn_layer not in ("", "se"):
            raise ValueError(f"attn_layer must be '' or 'se', got {self.attn_layer!r}")
        attn = (
            partial(SqueezeExcite, dtype=self.dtype, param_dtype=self.param_dtype)
            if self.attn_layer
            else None
        )
        act = get_act(self.act_layer)
        cifar = self.stem_type == "cifar"
        if self.stem_type == "deep":
            w = self.stem_width
            x = conv(w, 3, 2, padding=1, name="conv1_0")(x)
            x = act(norm(name="conv1_1")(x, train=train))
            x = conv(w, 3, padding=1, name="conv1_3")(x)
            x = act(norm(name="conv1_4")(x, train=train))
            x = conv(2 * w, 3, padding=1, name="conv1_6")(x)
        else:
            x = conv(
                self.stem_width,
                3 if cifar else 7,
                1 if cifar else 2,
                padding=1 if cifar else 3,
                name="conv1",
            )(x)
        x = act(norm(name="bn1")(x, train=train))
        feats = [x]
        if not cifar:
            x = max_pool2d(x, 3, 2, padding=1)

        total = sum(self.stage_sizes)
        in_ch, idx = self._stem_chs, 0
        for i, (n_blocks, stage) in enumerate(
            zip(self.stage_sizes, self._stage_plan(), strict=True)
        ):
            planes, stride = stage.planes, stage.stride
            for j in range(n_blocks):
                x = block_cls(
                    planes,
                    conv=conv,
                    norm=norm,
                    stride=stride if j == 0 else 1,
                    downsample=j == 0 and (stride != 1 or in_ch != planes * block_cls.expansion),
                    shortcut=self.shortcut,
                    stride_in_1x1=self.stride_in_1x1,
                    groups=self.groups,
                    base_width=self.width_per_group,
                    dilation=stage.dilation,
                    first_dilation=stage.first_dilation if j == 0 else stage.dilation,
                    zero_init_last=self.zero_init_residual,
                    drop_path=self.drop_path_rate * idx / max(total - 1, 1),
                    avg_down=self.avg_down,
                    act=act,
                    attn=attn,
                    name=f"layer{i + 1}_{j}",
                )(x, train=train)
                in_ch = planes * block_cls.expansion
                idx += 1
            feats.append(x)

        if self.features_only:
            return self._select_features(feats)
        x = self._pool(x)
        if self.num_classes == 0:
            return x
        x = Dropout(self.drop_rate, name="drop")(x, train=train)
        return nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc"
        )(x)


_TV_PAPER = {
    "resnet": "He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
    "resnext": "Xie et al., Aggregated Residual Transformations for Deep Neural Networks, CVPR 2017",
    "wide": "Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016",
    "resnetd": (
        "He et al., Bag of Tricks for Image Classification with Convolutional Neural Networks, "
        "CVPR 2019"
    ),
    "se": "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018",
}


# timm registers the torchvision architectures under the same names.
_register = variants(ResNet, family="resnet", sources=("torchvision", "timm"))
_D = dict(stem_type="deep", stem_width=32, avg_down=True)
_SE = dict(attn_layer="se")
_R50, _R101, _R152 = (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)

ResNet18 = _register(
    "resnet18", {"stage_sizes": (2, 2, 2, 2), "block": "basic"}, paper=_TV_PAPER["resnet"]
)
ResNet34 = _register("resnet34", {"stage_sizes": _R50, "block": "basic"}, paper=_TV_PAPER["resnet"])
ResNet50 = _register("resnet50", {"stage_sizes": _R50}, paper=_TV_PAPER["resnet"])
ResNet101 = _register("resnet101", {"stage_sizes": _R101}, paper=_TV_PAPER["resnet"])
ResNet152 = _register("resnet152", {"stage_sizes": _R152}, paper=_TV_PAPER["resnet"])
ResNeXt50_32x4d = _register(
    "resnext50_32x4d",
    {"stage_sizes": _R50, "groups": 32, "width_per_group": 4},
    paper=_TV_PAPER["resnext"],
)
ResNeXt101_32x8d = _register(
    "resnext101_32x8d",
    {"stage_sizes": _R101, "groups": 32, "width_per_group": 8},
    paper=_TV_PAPER["resnext"],
)
ResNeXt101_64x4d = _register(
    "resnext101_64x4d",
    {"stage_sizes": _R101, "groups": 64, "width_per_group": 4},
    paper=_TV_PAPER["resnext"],
)
WideResNet50_2 = _register(
    "wide_resnet50_2", {"stage_sizes": _R50, "width_per_group": 128}, paper=_TV_PAPER["wide"]
)
WideResNet101_2 = _register(
    "wide_resnet101_2", {"stage_sizes": _R101, "width_per_group": 128}, paper=_TV_PAPER["wide"]
)

# timm only; the deep stem's first conv is timm's ``conv1.0``.
_register_d = variants(
    ResNet, family="resnet", sources=("timm",), first_conv="conv1.0", paper=_TV_PAPER["resnetd"]
)
ResNet50d = _register_d("resnet50d", {"stage_sizes": _R50, **_D})
ResNet101d = _register_d("resnet101d", {"stage_sizes": _R101, **_D})

_register_se = variants(ResNet, family="resnet", sources=("timm",), paper=_TV_PAPER["se"])
SEResNet50 = _register_se("seresnet50", {"stage_sizes": _R50, **_SE})
SEResNet101 = _register_se("seresnet101", {"stage_sizes": _R101, **_SE})
SEResNet152 = _register_se("seresnet152", {"stage_sizes": _R152, **_SE})
SEResNeXt50_32x4d = _register_se(
    "seresnext50_32x4d", {"stage_sizes": _R50, "groups": 32, "width_per_group": 4, **_SE}
)

# He et al. section 4.2: the CIFAR-10 networks. 6n+2 layers: a 3x3 conv of 16 channels, three
# stages of n basic blocks (16, 32, 64 channels; 32, 16, 8 px), global average pool, a
# 10-way fc. Option A shortcuts, so their parameter counts are the paper's Table 6. The
# plain networks are the same layers without any shortcut: the paper's Figure 6 (left),
# where the deeper plain net has the higher *training* error.
_CIFAR_PAPER = _TV_PAPER["resnet"] + ", section 4.2 (CIFAR-10)"
_CIFAR = dict(
    block="basic",
    channels=(16, 32, 64),
    stem_type="cifar",
    stem_width=16,
    num_classes=10,
)
_register_cifar = variants(
    ResNet,
    family="resnet_cifar",
    input_size=(32, 32, 3),
    classifier="fc",
    first_conv="conv1",
    paper=_CIFAR_PAPER,
)
ResNet20, ResNet32, ResNet44, ResNet56, ResNet110 = (
    _register_cifar(f"resnet{6 * n + 2}", {"stage_sizes": (n, n, n), **_CIFAR, "shortcut": "A"})
    for n in (3, 5, 7, 9, 18)
)
Plain20, Plain32, Plain44, Plain56 = (
    _register_cifar(f"plain{6 * n + 2}", {"stage_sizes": (n, n, n), **_CIFAR, "shortcut": None})
    for n in (3, 5, 7, 9)
)

# ResNet v1 as published: the bottleneck's stride on its first 1x1 (torchvision's v1.5 moves
# it to the 3x3). No library ships it; its layers are torchvision's, so a torchvision
# ResNet-50 with the strides moved converts into it (tests/models/test_resnet.py).
ResNet50V1 = _register(
    "resnet50_v1",
    {"stage_sizes": _R50, "stride_in_1x1": True},
    sources=(),
    paper=_TV_PAPER["resnet"] + " (v1: stride in the first 1x1)",
)
