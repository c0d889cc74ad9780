"""Fully convolutional networks (FCN) for semantic segmentation, torchvision's form.

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015 (arXiv:1411.4038). torchvision's ``fcn_resnet50`` / ``fcn_resnet101`` replace
the paper's VGG with a ResNet whose last two stages dilate instead of striding (output
stride 8), put a small head (3x3 conv, BN, ReLU, dropout, 1x1 conv) on ``layer4`` and an
auxiliary one on ``layer3``, and resize both logit maps to the input bilinearly.

Submodules are named after torchvision's tree: the ResNet is ``backbone`` (torchvision's
``IntermediateLayerGetter`` keeps the ResNet's own names and drops ``avgpool``/``fc``,
which ``features_only`` does here), the heads are ``classifier_0`` ... ``classifier_4``
and ``aux_classifier_*`` (torch ``classifier.0`` ... of an ``nn.Sequential``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import variants
from ..layers import BatchNorm2d, Conv2d, Dropout, check_image_input, interpolate
from .resnet import ResNet

__all__ = ["FCN"]


class FCN(nn.Module):
    """FCN with a dilated ResNet backbone; returns ``{'out': ..., 'aux': ...}`` NHWC logits.

    Both maps have the input's height and width (bilinear, ``align_corners=False``, as
    torchvision). ``'aux'`` (from ``layer3``) is there when ``aux_loss`` is true, as in
    torchvision's pretrained FCNs; train with ``loss(out) + 0.5 * loss(aux)`` as the
    torchvision reference scripts do, and use ``'out'`` alone for prediction.

    Attributes:
        stage_sizes: the backbone ResNet's blocks per stage (``(3, 4, 6, 3)``: ResNet-50).
        num_classes: classes per pixel (21: Pascal VOC with background, torchvision's default).
        in_chans: input channels.
        aux_loss: build the auxiliary head on ``layer3``.
        replace_stride_with_dilation: the backbone's dilated stages (torchvision: output
            stride 8).
        drop_rate: the heads' dropout (0.1 in torchvision).
        dtype, param_dtype: computation and parameter dtypes (BN statistics stay float32).
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    num_classes: int = 21
    in_chans: int = 3
    aux_loss: bool = True
    replace_stride_with_dilation: Sequence[bool] = (False, True, True)
    drop_rate: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        """Its ResNet backbone's; the heads' convs are padded and the maps are
        resized to the input's size."""
        return ResNet(stage_sizes=self.stage_sizes, parent=None).min_input_size

    def backbone_module(self) -> ResNet:
        """The feature extractor: ``layer3`` and ``layer4`` of a dilated ResNet."""
        return ResNet(
            stage_sizes=self.stage_sizes,
            in_chans=self.in_chans,
            replace_stride_with_dilation=self.replace_stride_with_dilation,
            features_only=True,
            out_indices=(3, 4),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="backbone",
        )

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
        check_image_input(x, self)
        if self.num_classes < 1:
            raise ValueError(f"FCN needs num_classes >= 1, got {self.num_classes}")
        conv = partial(Conv2d, dtype=self.dtype, param_dtype=self.param_dtype)
        norm = partial(BatchNorm2d, dtype=self.dtype, param_dtype=self.param_dtype)
        layer3, layer4 = self.backbone_module()(x, train=train)
        heads = {"out": (layer4, "classifier")}
        if self.aux_loss:
            heads["aux"] = (layer3, "aux_classifier")
        size = x.shape[1:3]
        return {
            key: interpolate(
                _fcn_head(feat, prefix, self.num_classes, conv, norm, self.drop_rate, train),
                size,
                mode="bilinear",
                align_corners=False,
            )
            for key, (feat, prefix) in heads.items()
        }


def _fcn_head(
    x: jax.Array,
    prefix: str,
    num_classes: int,
    conv: Callable[..., nn.Module],
    norm: Callable[..., nn.Module],
    drop_rate: float,
    train: bool,
) -> jax.Array:
    """torchvision's ``FCNHead``: 3x3 conv to in/4 channels, BN, ReLU, dropout, 1x1 conv."""
    x = conv(x.shape[-1] // 4, 3, padding=1, use_bias=False, name=f"{prefix}_0")(x)
    x = nn.relu(norm(name=f"{prefix}_1")(x, train=train))
    x = Dropout(drop_rate, name=f"{prefix}_3")(x, train=train)
    return conv(num_classes, 1, name=f"{prefix}_4")(x)


_PAPER = (
    "Long, Shelhamer & Darrell, Fully Convolutional Networks for Semantic Segmentation, CVPR 2015"
)


_register = variants(
    FCN,
    family="fcn",
    sources=("torchvision",),
    input_size=(224, 224, 3),
    classifier="classifier.4",
    first_conv="backbone.conv1",
    paper=_PAPER,
    task="segmentation",
    # torchvision builds the aux head only for pretrained weights unless asked.
    torch_kwargs={"aux_loss": True},
)
FCN_ResNet50 = _register("fcn_resnet50", {"stage_sizes": (3, 4, 6, 3)})
FCN_ResNet101 = _register("fcn_resnet101", {"stage_sizes": (3, 4, 23, 3)})
