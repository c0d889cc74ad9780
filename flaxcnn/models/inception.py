"""Inception v3: Szegedy et al., "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016 (arXiv:1512.00567), in torchvision's (and timm's) form.

Factorised convolutions: 5x5 as two 3x3 (InceptionA), 7x7 as 1x7 then 7x1
(InceptionC), expanded 1x3 / 3x1 filter banks (InceptionE), and grid reductions that
pool and convolve in parallel (InceptionB, D). Every conv is a
:class:`~flaxcnn.layers.BasicConv2d` (BN eps 1e-3). The branch average pools count
the zero padding in their divisor (torch's ``count_include_pad=True`` default) -- the
border pixels differ otherwise. 299x299 input; an auxiliary classifier after Mixed_6e
runs in train mode only, where the model returns ``(logits, aux_logits)`` as
torchvision's ``InceptionOutputs``. Names mirror torchvision (``Conv2d_1a_3x3``,
``Mixed_5b/branch5x5_1``, ``AuxLogits``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import register_model
from ..layers import (
    BasicConv2d,
    Dropout,
    FeatureMixin,
    avg_pool2d,
    global_avg_pool,
    max_pool2d,
    smallest_side,
    stage_info,
)
from .googlenet import _check_with_aux, transform_input

__all__ = [
    "Inception3",
    "InceptionA",
    "InceptionAux3",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
]


def _pool3(x: jax.Array) -> jax.Array:
    # F.avg_pool2d(x, 3, stride=1, padding=1): count_include_pad=True, as torch's default.
    return avg_pool2d(x, 3, 1, padding=1, count_include_pad=True)


class InceptionA(nn.Module):
    """35x35 module: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    pool_features: int
    conv: Any = BasicConv2d

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        c = self.conv
        b1 = c(64, 1, name="branch1x1")(x, train=train)
        b5 = c(48, 1, name="branch5x5_1")(x, train=train)
        b5 = c(64, 5, padding=2, name="branch5x5_2")(b5, train=train)
        b3 = c(64, 1, name="branch3x3dbl_1")(x, train=train)
        b3 = c(96, 3, padding=1, name="branch3x3dbl_2")(b3, train=train)
        b3 = c(96, 3, padding=1, name="branch3x3dbl_3")(b3, train=train)
        bp = c(self.pool_features, 1, name="branch_pool")(_pool3(x), train=train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """35 -> 17 grid reduction: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max pool."""

    conv: Any = BasicConv2d

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        c = self.conv
        b3 = c(384, 3, 2, name="branch3x3")(x, train=train)
        bd = c(64, 1, name="branch3x3dbl_1")(x, train=train)
        bd = c(96, 3, padding=1, name="branch3x3dbl_2")(bd, train=train)
        bd = c(96, 3, 2, name="branch3x3dbl_3")(bd, train=train)
        return jnp.concatenate([b3, bd, max_pool2d(x, 3, 2)], axis=-1)


class InceptionC(nn.Module):
    """17x17 module with 7x7 factorised into 1x7 and 7x1."""

    channels_7x7: int
    conv: Any = BasicConv2d

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        c, c7 = self.conv, self.channels_7x7
        b1 = c(192, 1, name="branch1x1")(x, train=train)
        b7 = c(c7, 1, name="branch7x7_1")(x, train=train)
        b7 = c(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7, train=train)
        b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7, train=train)
        bd = c(c7, 1, name="branch7x7dbl_1")(x, train=train)
        bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd, train=train)
        bd = c(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd, train=train)
        bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd, train=train)
        bd = c(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd, train=train)
        bp = c(192, 1, name="branch_pool")(_pool3(x), train=train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17 -> 8 grid reduction: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | 3x3/2 max pool."""

    conv: Any = BasicConv2d

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        c = self.conv
        b3 = c(192, 1, name="branch3x3_1")(x, train=train)
        b3 = c(320, 3, 2, name="branch3x3_2")(b3, train=train)
        b7 = c(192, 1, name="branch7x7x3_1")(x, train=train)
        b7 = c(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7, train=train)
        b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7, train=train)
        b7 = c(192, 3, 2, name="branch7x7x3_4")(b7, train=train)
        return jnp.concatenate([b3, b7, max_pool2d(x, 3, 2)], axis=-1)


class InceptionE(nn.Module):
    """8x8 module with expanded filter banks: 3x3 split into parallel 1x3 and 3x1."""

    conv: Any = BasicConv2d

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        c = self.conv
        b1 = c(320, 1, name="branch1x1")(x, train=train)
        b3 = c(384, 1, name="branch3x3_1")(x, train=train)
        b3 = jnp.concatenate(
            [
                c(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3, train=train),
                c(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3, train=train),
            ],
            axis=-1,
        )
        bd = c(448, 1, name="branch3x3dbl_1")(x, train=train)
        bd = c(384, 3, padding=1, name="branch3x3dbl_2")(bd, train=train)
        bd = jnp.concatenate(
            [
                c(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd, train=train),
                c(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd, train=train),
            ],
            axis=-1,
        )
        bp = c(192, 1, name="branch_pool")(_pool3(x), train=train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux3(nn.Module):
    """Auxiliary classifier: 5x5/3 average pool, 1x1 conv 128, 5x5 conv 768, GAP, FC."""

    num_classes: int
    conv: Any = BasicConv2d
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = avg_pool2d(x, 5, 3)
        x = self.conv(128, 1, name="conv0")(x, train=train)
        x = self.conv(768, 5, name="conv1")(x, train=train)
        x = global_avg_pool(x)
        return nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc"
        )(x)


class Inception3(FeatureMixin, nn.Module):
    """Inception v3, torchvision's ``Inception3`` (= timm's ``InceptionV3``) in NHWC.

    Attributes:
        num_classes: outputs; ``0`` returns the pooled 2048 features (pre-logits, no aux
            head); with ``global_pool=''`` the unpooled ``Mixed_7c`` map (timm's
            ``forward_features``).
        features_only: return timm's maps ``[Conv2d_2b_3x3, Conv2d_4a_3x3, Mixed_5d,
            Mixed_6e, Mixed_7c]`` (strides 2, 4, 8, 16, 32) selected by ``out_indices``
            (``None``: all); no ``fc`` and no aux head.
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (none).
        aux_logits: build the auxiliary head (torchvision's default; timm's is off).
        transform_input: torchvision's input re-normalisation for Google's weights.
        drop_rate: dropout before ``fc`` (torchvision 0.5, timm 0).
        bn_eps: 1e-3, as both libraries.
    """

    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    aux_logits: bool = True
    transform_input: bool = False
    drop_rate: float = 0.5
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        return stage_info(
            [64, 192, 288, 768, 2048],
            [2, 4, 8, 16, 32],
            ["Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"],
        )

    @property
    def _aux(self) -> bool:
        """Whether the aux head is built (at init; computed in train mode)."""
        return self.aux_logits and self.num_classes > 0 and not self.features_only

    def _min_side(self, aux: bool) -> int:
        # The unpadded 3x3 convs and 3x3/2 pools: Conv2d_1a/2a, pool, 4a, pool, Mixed_6a's.
        to_6e = [(3, 2, 0), (3, 1, 0), (3, 2, 0), (3, 1, 0), (3, 2, 0), (3, 2, 0)]
        side = smallest_side([*to_6e, (3, 2, 0)])  # and Mixed_7a's
        if aux:  # the aux head's 5x5/3 pool and 5x5 conv on Mixed_6e's map
            side = max(side, smallest_side([*to_6e, (5, 3, 0), (5, 1, 0)]))
        return side

    @property
    def min_input_size(self) -> int:
        """75 (torchvision's ``min_size``), or with the aux head 299 at init and in train
        mode, where it runs (torch's aux head needs 299 too); eval takes 75."""
        return self._min_side(self._aux)

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False
    ) -> jax.Array | list[jax.Array] | tuple[jax.Array, jax.Array]:
        _check_with_aux(self, x, self._aux and (train or self.is_initializing()))
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = partial(BasicConv2d, bn_eps=self.bn_eps, bn_momentum=self.bn_momentum, **kw)
        aux = self._aux
        if self.transform_input:
            x = transform_input(x)
        x = c(32, 3, 2, name="Conv2d_1a_3x3")(x, train=train)
        x = c(32, 3, name="Conv2d_2a_3x3")(x, train=train)
        x = c(64, 3, padding=1, name="Conv2d_2b_3x3")(x, train=train)
        feats = [x]
        x = max_pool2d(x, 3, 2)
        x = c(80, 1, name="Conv2d_3b_1x1")(x, train=train)
        x = c(192, 3, name="Conv2d_4a_3x3")(x, train=train)
        feats.append(x)
        x = max_pool2d(x, 3, 2)
        x = InceptionA(32, conv=c, name="Mixed_5b")(x, train=train)
        x = InceptionA(64, conv=c, name="Mixed_5c")(x, train=train)
        x = InceptionA(64, conv=c, name="Mixed_5d")(x, train=train)
        feats.append(x)
        x = InceptionB(conv=c, name="Mixed_6a")(x, train=train)
        x = InceptionC(128, conv=c, name="Mixed_6b")(x, train=train)
        x = InceptionC(160, conv=c, name="Mixed_6c")(x, train=train)
        x = InceptionC(160, conv=c, name="Mixed_6d")(x, train=train)
        x = InceptionC(192, conv=c, name="Mixed_6e")(x, train=train)
        feats.append(x)
        aux_out = None
        if aux:
            head = InceptionAux3(self.num_classes, conv=c, name="AuxLogits", **kw)
            # Built at init so the parameters exist; computed only in train mode.
            if train or self.is_initializing():
                aux_out = head(x, train=train)
        x = InceptionD(conv=c, name="Mixed_7a")(x, train=train)
        x = InceptionE(conv=c, name="Mixed_7b")(x, train=train)
        x = InceptionE(conv=c, name="Mixed_7c")(x, train=train)
        if self.features_only:
            return self._select_features([*feats, x])
        x = self._pool(x)
        if self.num_classes == 0:
            return x
        x = Dropout(self.drop_rate, name="dropout")(x, train=train)
        x = nn.Dense(self.num_classes, name="fc", **kw)(x)
        if train and aux:
            return x, aux_out
        return x


InceptionV3 = register_model(
    "inception_v3",
    Inception3,
    family="inception",
    sources=("torchvision", "timm"),
    input_size=(299, 299, 3),
    classifier="fc",
    first_conv="Conv2d_1a_3x3.conv",
    verify_size=(301, 317),
    paper="Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016",
)
