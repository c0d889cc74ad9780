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
from ..layers import Conv2d, check_image_input, global_avg_pool, max_pool2d

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


class NiN(nn.Module):
    """Network in Network: mlpconv blocks with max pools, a class mlpconv block, GAP.

    Attributes:
        blocks: ``(out_channels, kernel, stride, padding)`` of each mlpconv block before the
            class block; a 3x3/2 max pool follows each.
        num_classes: channels of the class block; ``0`` returns the pooled features of the
            last block instead.
        drop_rate: dropout before the class block.
    """

    blocks: Sequence[tuple[int, int, int, int]] = ((96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1))
    num_classes: int = 1000
    in_chans: int = 3
    drop_rate: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        check_image_input(x, self.in_chans, type(self).__name__)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i, (c, k, s, p) in enumerate(self.blocks):
            x = MlpConv(c, k, s, p, name=f"block{i + 1}", **kw)(x)
            x = max_pool2d(x, 3, 2)
        if self.num_classes == 0:
            return global_avg_pool(x)
        x = nn.Dropout(self.drop_rate, deterministic=not train or self.drop_rate == 0.0)(x)
        x = MlpConv(self.num_classes, 3, 1, 1, name=f"block{len(self.blocks) + 1}", **kw)(x)
        return global_avg_pool(x)


NetworkInNetwork = register_model(
    "nin",
    NiN,
    family="nin",
    camel="NetworkInNetwork",
    classifier=None,
    first_conv="block1.conv",
    min_size=67,
    paper="Lin, Chen & Yan, Network In Network, ICLR 2014",
)
