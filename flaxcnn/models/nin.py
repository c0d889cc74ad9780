"""Network in Network: Lin, Chen & Yan, "Network In Network", ICLR 2014 (arXiv:1312.4400).

Each "mlpconv" block is a kxk conv followed by two 1x1 convs (a small MLP slid over the
image), all with ReLU. The last block outputs one channel per class and global average
pooling turns the maps into logits: no fully connected layer, the origin of the GAP head.
This is the ImageNet layout of d2l ("Dive into Deep Learning", ch. 8.3): 96-256-384
blocks with 3x3/2 max pools, dropout 0.5, a class block. No torch counterpart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import register_model
from ..layers import (
    Conv2d,
    Dropout,
    FeatureMixin,
    check_image_input,
    max_pool2d,
    smallest_side,
    stage_info,
)

__all__ = ["MlpConv", "NiN"]


class MlpConv(nn.Module):
    """kxk conv (``conv``), then two 1x1 convs (``mlp1``, ``mlp2``), each followed by ReLU."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = Conv2d(self.features, self.kernel_size, self.stride, self.padding, name="conv", **kw)
        x = nn.relu(conv(x))
        x = nn.relu(Conv2d(self.features, 1, name="mlp1", **kw)(x))
        return nn.relu(Conv2d(self.features, 1, name="mlp2", **kw)(x))


class NiN(FeatureMixin, nn.Module):
    """Network in Network: mlpconv blocks with max pools, a class mlpconv block, GAP.

    Attributes:
        blocks: ``(out_channels, kernel, stride, padding)`` of each mlpconv block before the
            class block; a 3x3/2 max pool follows each.
        num_classes: channels of the class block; ``0`` returns the pooled features of the
            last max pool instead (pre-logits); with ``global_pool=''`` that unpooled map
            (what timm would call ``forward_features``).
        features_only: return the maps ``[block1, block2, block3, pool3]`` (strides 4, 8, 16,
            32: each block before its max pool, then the last pool's output; named after
            the Flax modules, as NiN has no torch twin) selected by ``out_indices``
            (``None``: all), and build no class block.
        global_pool: pools the class maps into logits (or the features for
            ``num_classes=0``): ``'avg'`` (the paper's GAP), ``'max'``, ``'avgmax'`` or ``''``.
        drop_rate: dropout before the class block.
    """

    blocks: Sequence[tuple[int, int, int, int]] = ((96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1))
    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    drop_rate: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        chans, reds, r = [], [], 1
        for c, _, s, _ in self.blocks:
            r *= s
            chans.append(c)
            reds.append(r)
            r *= 2  # the 3x3/2 max pool after each block
        n = len(self.blocks)
        mods = [f"block{i + 1}" for i in range(n)]
        return stage_info([*chans, chans[-1]], [*reds, r], [*mods, f"pool{n}"])

    @property
    def min_input_size(self) -> int:
        """The smallest side each block's conv and 3x3/2 max pool leave a pixel of (67, as
        AlexNet's paper layout)."""
        return smallest_side(w for _, k, s, p in self.blocks for w in ((k, s, p), (3, 2, 0)))

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        check_image_input(x, self)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feats = []
        for i, (c, k, s, p) in enumerate(self.blocks):
            x = MlpConv(c, k, s, p, name=f"block{i + 1}", **kw)(x)
            feats.append(x)
            x = max_pool2d(x, 3, 2)
        if self.features_only:
            return self._select_features([*feats, x])
        if self.num_classes == 0:
            return self._pool(x)
        x = Dropout(self.drop_rate, name="drop")(x, train=train)
        x = MlpConv(self.num_classes, 3, 1, 1, name=f"block{len(self.blocks) + 1}", **kw)(x)
        return self._pool(x)


NetworkInNetwork = register_model(
    "nin",
    NiN,
    family="nin",
    classifier=None,
    first_conv="block1.conv",
    paper="Lin, Chen & Yan, Network In Network, ICLR 2014",
)
