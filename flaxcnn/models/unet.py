"""U-Net: the original (unpadded, crop-and-concatenate) and the common padded variant.

Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (arXiv:1505.04597). A contracting path of double 3x3 convs
and 2x2 max pools (channels doubling), an expanding path of 2x2 up-convolutions that
halve the channels, each followed by concatenation with the contracting path's map at
that scale and a double 3x3 conv, and a 1x1 conv to the classes.

* ``padded=False`` is the paper: unpadded convs shrink every map, so the skip is
  centre-cropped before concatenation and the output is smaller than the input
  (572x572 -> 388x388; the output tile is the centre of the input tile).
* ``padded=True`` is the variant most code uses: ``padding=1`` convs, output size =
  input size, usually with BatchNorm after each conv (``use_bn``) and optionally
  bilinear upsampling + 1x1 conv instead of the transposed conv (``upsample``).

There is no torchvision/timm U-Net, so nothing converts to it; submodules are still
named explicitly (``enc0/conv1``, ``up3``, ``dec3/conv2``, ``head``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import variants
from ..layers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    check_image_input,
    interpolate,
    max_pool2d,
)

__all__ = ["UNet", "UNetBlock"]

UPSAMPLE = ("transposed", "bilinear")


class UNetBlock(nn.Module):
    """Two 3x3 convs, each followed by BN (optional) and ReLU."""

    features: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module] | None
    padding: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        for i in (1, 2):
            # With BN the conv's bias is redundant (BN's shift replaces it).
            x = self.conv(
                self.features, 3, padding=self.padding, use_bias=self.norm is None, name=f"conv{i}"
            )(x)
            if self.norm is not None:
                x = self.norm(name=f"bn{i}")(x, train=train)
            x = nn.relu(x)
        return x


def _center_crop(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
    dh, dw = (x.shape[1] - hw[0]) // 2, (x.shape[2] - hw[1]) // 2
    return x[:, dh : dh + hw[0], dw : dw + hw[1]]


def _output_side(n: int, depth: int, padded: bool) -> int | None:
    """Output length along one axis, or ``None`` if the net cannot take ``n``."""
    shrink = 0 if padded else 4  # two unpadded 3x3 convs per block
    for _ in range(depth):
        n -= shrink
        if n < 2 or n % 2:
            return None
        n //= 2
    n -= shrink
    for _ in range(depth):
        n = 2 * n - shrink
    return n if n >= 1 else None


class UNet(nn.Module):
    """U-Net, NHWC in, per-pixel NHWC logits out (see :meth:`output_size`).

    Attributes:
        num_classes: output channels of the final 1x1 conv; ``0`` returns the last
            decoder features (``base_width`` channels) instead.
        in_chans: input channels (1 in the paper).
        depth: number of 2x2 poolings (4 in the paper); the bottom has
            ``base_width * 2**depth`` channels.
        base_width: channels of the first block (64 in the paper).
        padded: ``padding=1`` convs (output size = input size, input sides divisible by
            ``2**depth``) instead of the paper's unpadded convs.
        use_bn: BatchNorm after every 3x3 conv (the convs then have no bias).
        upsample: ``'transposed'`` (the paper's 2x2 up-convolution, stride 2) or
            ``'bilinear'`` (x2 bilinear resize, then a 1x1 conv that halves the channels).
        drop_rate: dropout at the end of the contracting path (the paper uses dropout
            there without giving the rate).
        dtype, param_dtype: computation and parameter dtypes (BN statistics stay float32).
    """

    num_classes: int = 2
    in_chans: int = 1
    depth: int = 4
    base_width: int = 64
    padded: bool = False
    use_bn: bool = False
    upsample: str = "transposed"
    drop_rate: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The output's ``(H, W)`` for an input of ``(height, width)``.

        Raises ``ValueError`` when a pooling would meet an odd side (so the skip and the
        upsampled map could not be aligned) or a map would vanish, naming valid sizes.
        """
        out = []
        for n, axis in ((height, "height"), (width, "width")):
            side = _output_side(n, self.depth, self.padded)
            if side is None:
                near = sorted(
                    (
                        m
                        for m in range(max(1, n - 64), n + 65)
                        if _output_side(m, self.depth, self.padded)
                    ),
                    key=lambda m: abs(m - n),
                )[:2]
                kind = "padded" if self.padded else "unpadded (original)"
                raise ValueError(
                    f"{kind} U-Net of depth {self.depth} cannot take input {axis} {n}: every "
                    f"pooling needs an even side{'' if self.padded else ' after two unpadded convs'}"
                    f"; nearest valid sizes: {sorted(near)}"
                )
            out.append(side)
        return tuple(out)

    @property
    def min_input_size(self) -> int:
        """The smallest side the net takes (every pooling needs an even side): at depth 4,
        16 padded, 188 unpadded (a 4x4 output). Larger sides must also be valid
        (:meth:`output_size` names the nearest)."""
        return next(n for n in itertools.count(1) if _output_side(n, self.depth, self.padded))

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        check_image_input(x, self)
        if self.upsample not in UPSAMPLE:
            raise ValueError(f"upsample must be one of {UPSAMPLE}, got {self.upsample!r}")
        self.output_size(*x.shape[1:3])  # a clear error for sizes the net cannot take
        conv = partial(Conv2d, dtype=self.dtype, param_dtype=self.param_dtype)
        norm = (
            partial(BatchNorm2d, dtype=self.dtype, param_dtype=self.param_dtype)
            if self.use_bn
            else None
        )
        block = partial(UNetBlock, conv=conv, norm=norm, padding=1 if self.padded else 0)

        skips = []
        for i in range(self.depth):
            x = block(self.base_width * 2**i, name=f"enc{i}")(x, train=train)
            skips.append(x)
            x = max_pool2d(x, 2, 2)
        x = block(self.base_width * 2**self.depth, name=f"enc{self.depth}")(x, train=train)
        x = Dropout(self.drop_rate, name="drop")(x, train=train)

        for i in reversed(range(self.depth)):
            width = self.base_width * 2**i
            if self.upsample == "transposed":
                x = ConvTranspose2d(
                    width, 2, 2, dtype=self.dtype, param_dtype=self.param_dtype, name=f"up{i}"
                )(x)
            else:
                x = interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                x = conv(width, 1, name=f"up{i}")(x)
            x = jnp.concatenate([_center_crop(skips[i], x.shape[1:3]), x], axis=-1)
            x = block(width, name=f"dec{i}")(x, train=train)

        if self.num_classes == 0:
            return x
        return conv(self.num_classes, 1, name="head")(x)


_PAPER = (
    "Ronneberger, Fischer & Brox, U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation, MICCAI 2015"
)

_register = variants(
    UNet, family="unet", classifier=None, first_conv=None, paper=_PAPER, task="segmentation"
)
# The paper's network: 1-channel 572x572 tiles -> 2-class 388x388 maps.
UNetOriginal = _register(
    "unet_original",
    input_size=(572, 572, 1),
)
# The common padded variant (output size = input size) with BatchNorm, on RGB images.
UNetPadded = _register(
    "unet_padded",
    {"in_chans": 3, "padded": True, "use_bn": True},
    input_size=(256, 256, 3),
)
