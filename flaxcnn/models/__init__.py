"""Model families. Importing a family module registers its variants.

``flaxcnn.models.ResNet50(num_classes=10)`` builds a module; ``flaxcnn.create_model``
does the same by name.
"""

from .fcn import FCN, FCN_ResNet50, FCN_ResNet101
from .resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
    ResNeXt50_32x4d,
    ResNeXt101_32x8d,
    ResNeXt101_64x4d,
    WideResNet50_2,
    WideResNet101_2,
)
from .unet import UNet, UNetBlock, UNetOriginal, UNetPadded

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNeXt50_32x4d",
    "ResNeXt101_32x8d",
    "ResNeXt101_64x4d",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "WideResNet50_2",
    "WideResNet101_2",
    "FCN",
    "FCN_ResNet50",
    "FCN_ResNet101",
    "UNet",
    "UNetBlock",
    "UNetOriginal",
    "UNetPadded",
]
