"""VGG: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015 (arXiv:1409.1556).

Stacks of 3x3 convs (padding 1) separated by 2x2 max pools, an adaptive average pool
to 7x7, and three FC layers with dropout. One :class:`VGG` class driven by the paper's
configurations A (11 layers), B (13), D (16) and E (19), with or without BatchNorm
after every conv (torchvision's ``vgg*_bn``). Names mirror torchvision's
``nn.Sequential`` indices: ``features_<i>`` (conv, BN) and ``classifier_0/3/6``.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    adaptive_avg_pool2d,
    check_image_input,
    max_pool2d,
    smallest_side,
    stage_info,
)

__all__ = ["CONFIGS", "VGG"]

# Table 1 of the paper: conv widths, "M" a 2x2/2 max pool.
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ),
}  # fmt: skip


class VGG(FeatureMixin, nn.Module):
    """VGG in NHWC, torchvision's architecture.

    Attributes:
        config: ``'A'``, ``'B'``, ``'D'`` or ``'E'`` (VGG-11/13/16/19), or a custom list.
        batch_norm: a BatchNorm after every conv (``vgg*_bn``).
        num_classes: outputs; ``0`` returns the second hidden FC layer's 4096 features
            (the pre-logits; a flattening head, so there is no ``global_pool`` choice).
        features_only: return timm's VGG taps: the last ReLU before each max pool
            (``features.3``, ... at strides 1, 2, 4, 8, 16) and the last pool's output
            (``features.{last}``, stride 32, the input of the classifier's adaptive pool),
            selected by ``out_indices`` (``None``: all); no classifier.
        drop_rate: dropout after each hidden FC layer (0.5).
    """

    config: str | Sequence[int | str] = "D"
    batch_norm: bool = False
    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    drop_rate: float = 0.5
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _layers(self) -> Sequence[int | str]:
        if isinstance(self.config, str) and self.config not in CONFIGS:
            raise ValueError(
                f"config must be one of {sorted(CONFIGS)} or a list, got {self.config!r}"
            )
        return CONFIGS[self.config] if isinstance(self.config, str) else self.config

    def _stage_info(self) -> list[dict[str, Any]]:
        taps, ch, r, idx = [], self.in_chans, 1, 0
        for v in self._layers():
            if v == "M":
                taps.append((ch, r, f"features.{idx - 1}"))  # the ReLU before the pool
                r, idx = r * 2, idx + 1
            else:
                ch, idx = int(v), idx + (3 if self.batch_norm else 2)
        taps.append((ch, r, f"features.{idx - 1}"))
        return stage_info(*zip(*taps, strict=True))

    @property
    def min_input_size(self) -> int:
        """``2**pools`` (32 for the published configs): each 2x2/2 max pool halves the map,
        and the padded 3x3 convs keep it."""
        return smallest_side((2, 2, 0) for v in self._layers() if v == "M")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        check_image_input(x, self)
        layers = self._layers()
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = partial(BatchNorm2d, eps=self.bn_eps, momentum=self.bn_momentum, **kw)
        idx = 0  # index in torchvision's `features` Sequential: conv[, BN], ReLU | MaxPool
        feats = []
        for v in layers:
            if v == "M":
                feats.append(x)
                x = max_pool2d(x, 2, 2)
                idx += 1
                continue
            x = Conv2d(int(v), 3, padding=1, name=f"features_{idx}", **kw)(x)
            if self.batch_norm:
                x = norm(name=f"features_{idx + 1}")(x, train=train)
            x = nn.relu(x)
            idx += 3 if self.batch_norm else 2
        if self.features_only:
            return self._select_features([*feats, x])
        x = adaptive_avg_pool2d(x, 7)
        # Flattened in NHWC order; the converter permutes torch's (NCHW-flattened) classifier_0.
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(4096, name="classifier_0", **kw)(x))
        x = Dropout(self.drop_rate, name="classifier_2")(x, train=train)
        x = nn.relu(nn.Dense(4096, name="classifier_3", **kw)(x))
        x = Dropout(self.drop_rate, name="classifier_5")(x, train=train)
        if self.num_classes == 0:
            return x
        return nn.Dense(self.num_classes, name="classifier_6", **kw)(x)


# timm's vgg* differ (a 7x7 conv "pre_logits" head and no adaptive pool): torchvision only.
_PAPER = (
    "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image "
    "Recognition, ICLR 2015"
)


_register = variants(
    VGG,
    family="vgg",
    sources=("torchvision",),
    classifier="classifier.6",
    first_conv="features.0",
    paper=_PAPER,
)
VGG11 = _register("vgg11", {"config": "A", "batch_norm": False})
VGG11_BN = _register("vgg11_bn", {"config": "A", "batch_norm": True})
VGG13 = _register("vgg13", {"config": "B", "batch_norm": False})
VGG13_BN = _register("vgg13_bn", {"config": "B", "batch_norm": True})
VGG16 = _register("vgg16", {"config": "D", "batch_norm": False})
VGG16_BN = _register("vgg16_bn", {"config": "D", "batch_norm": True})
VGG19 = _register("vgg19", {"config": "E", "batch_norm": False})
VGG19_BN = _register("vgg19_bn", {"config": "E", "batch_norm": True})
