"""AlexNet and ZFNet: five convs with ReLU and overlapping max pools, then three FC layers.

* AlexNet: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
  Convolutional Neural Networks", NeurIPS 2012. ``alexnet`` is torchvision's version
  (64-192-384-256-256 channels, the "one weird trick" widths, no normalisation);
  ``alexnet_paper`` has the paper's 96-256-384-384-256 on a 227x227 input (62.4M
  parameters) and its local response normalisation after the first two convs (section
  3.3), without the two-GPU grouping (one GPU holds it today, as in d2l).
* ZFNet: Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV
  2014: a 7x7/2 first conv and a 5x5/2 second conv (Fig. 3). Its pools use ``ceil_mode``
  so the maps are the paper's 110 -> 55, 26 -> 13 and 13 -> 6.

One :class:`AlexNet` class; a variant is its list of conv rows. Names mirror
torchvision's ``nn.Sequential`` indices (``features_0`` ... ``features_10``,
``classifier_1/4/6``). An adaptive average pool to 6x6 sits before the classifier, as
torchvision has it, so any input size works (identity at the default sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import variants
from ..layers import (
    Conv2d,
    Dropout,
    FeatureMixin,
    adaptive_avg_pool2d,
    check_image_input,
    local_response_norm,
    max_pool2d,
    smallest_side,
    stage_info,
)

__all__ = ["AlexNet"]

# (out_channels, kernel, stride, padding, max pool 3x3/2 after it)
ConvRow = tuple[int, int, int, int, bool]

ALEXNET_TV: tuple[ConvRow, ...] = (
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)
ALEXNET_PAPER: tuple[ConvRow, ...] = (
    (96, 11, 4, 0, True),
    (256, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)
ZFNET: tuple[ConvRow, ...] = (
    (96, 7, 2, 1, True),
    (256, 5, 2, 0, True),
    (384, 3, 1, 1, False),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)

# Krizhevsky et al. section 3.3: k=2, n=5, alpha=1e-4 (on the plain sum; torch's alpha is
# divided by n), beta=0.75.
PAPER_LRN = dict(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)


class AlexNet(FeatureMixin, nn.Module):
    """AlexNet-style network: conv rows, adaptive 6x6 average pool, FC-FC-FC with dropout.

    Attributes:
        convs: ``(out_channels, kernel, stride, padding, pool_after)`` per conv.
        ceil_mode: the max pools' ``ceil_mode``.
        hidden: width of the two hidden FC layers.
        num_classes: outputs; ``0`` returns the second hidden FC layer's features (the
            pre-logits; a flattening head, so there is no ``global_pool`` choice).
        features_only: return the maps timm's VGG rule gives (AlexNet is not in timm): the
            ReLU before each max pool (``features.1``, ``features.4``, ``features.11`` for
            ``alexnet``, at strides 4, 8, 16) and the last pool's output (stride 32),
            selected by ``out_indices`` (``None``: all); no classifier.
        drop_rate: dropout before each hidden FC layer (0.5 in the paper).
        lrn: local response normalisation after the ReLU of the first two convs, before
            their pools, with the paper's constants (k=2, n=5, alpha=1e-4, beta=0.75: alpha
            as the paper writes it, without torch's division by n; see
            :func:`~flaxcnn.layers.local_response_norm`).
    """

    convs: Sequence[ConvRow] = ALEXNET_TV
    ceil_mode: bool = False
    lrn: bool = False
    hidden: int = 4096
    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    drop_rate: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        taps, r, idx = [], 1, 0
        for out_ch, _, s, _, pool in self.convs:
            r, idx = r * s, idx + 2
            if pool:
                taps.append((out_ch, r, f"features.{idx - 1}"))  # the ReLU before the pool
                r, idx = r * 2, idx + 1
        taps.append((self.convs[-1][0], r, f"features.{idx - 1}"))
        return stage_info(*zip(*taps, strict=True))

    @property
    def min_input_size(self) -> int:
        """The smallest side the conv rows and their 3x3/2 pools leave a pixel of (63 for
        ``alexnet`` and ``zfnet``, 67 for ``alexnet_paper``'s unpadded first conv)."""
        windows = []
        for _, k, s, p, pool in self.convs:
            windows += [(k, s, p), (3, 2, 0, self.ceil_mode)] if pool else [(k, s, p)]
        return smallest_side(windows)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        check_image_input(x, self)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        idx = 0  # index in torchvision's `features` Sequential: conv, ReLU[, MaxPool]
        feats = []
        for i, (out_ch, k, s, p, pool) in enumerate(self.convs):
            x = nn.relu(Conv2d(out_ch, k, s, padding=p, name=f"features_{idx}", **kw)(x))
            if self.lrn and i < 2:
                x = local_response_norm(x, **PAPER_LRN)
            idx += 2
            if pool:
                feats.append(x)
                x = max_pool2d(x, 3, 2, ceil_mode=self.ceil_mode)
                idx += 1
        if self.features_only:
            return self._select_features([*feats, x])
        x = adaptive_avg_pool2d(x, 6)
        # Flattened in NHWC order; the converter permutes torch's (NCHW-flattened) classifier_1.
        x = x.reshape(x.shape[0], -1)
        x = Dropout(self.drop_rate, name="classifier_0")(x, train=train)
        x = nn.relu(nn.Dense(self.hidden, name="classifier_1", **kw)(x))
        x = Dropout(self.drop_rate, name="classifier_3")(x, train=train)
        x = nn.relu(nn.Dense(self.hidden, name="classifier_4", **kw)(x))
        if self.num_classes == 0:
            return x
        return nn.Dense(self.num_classes, name="classifier_6", **kw)(x)


_ALEXNET_PAPER = (
    "Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep Convolutional "
    "Neural Networks, NeurIPS 2012"
)
_register = variants(AlexNet, family="alexnet", classifier="classifier.6", first_conv="features.0")

AlexNetTV = _register(
    "alexnet",
    {"convs": ALEXNET_TV},
    sources=("torchvision",),
    paper=_ALEXNET_PAPER + "; widths of Krizhevsky, One weird trick..., arXiv:1404.5997",
)
AlexNetPaper = _register(
    "alexnet_paper",
    {"convs": ALEXNET_PAPER, "lrn": True},
    input_size=(227, 227, 3),
    paper=_ALEXNET_PAPER,
)
ZFNet = _register(
    "zfnet",
    {"convs": ZFNET, "ceil_mode": True},
    paper="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
)
