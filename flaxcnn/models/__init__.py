"""Model families. Importing a family module registers its variants.

``flaxcnn.models.ResNet50(num_classes=10)`` builds a module; ``flaxcnn.create_model``
does the same by name.
"""

from .convnext import ConvNeXt, ConvNeXtBase, ConvNeXtLarge, ConvNeXtSmall, ConvNeXtTiny
from .densenet import DenseNet, DenseNet121, DenseNet161, DenseNet169, DenseNet201
from .resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet50d,
    ResNet101,
    ResNet101d,
    ResNet152,
    ResNeXt50_32x4d,
    ResNeXt101_32x8d,
    ResNeXt101_64x4d,
    SEResNet50,
    SEResNet101,
    SEResNet152,
    SEResNeXt50_32x4d,
    WideResNet50_2,
    WideResNet101_2,
)
from .resnetv2 import ResNetV2, ResNetV2_50, ResNetV2_101
from .senet import SEBottleneck, SENet, SENet154
from .xception import LegacyXception, Xception, Xception41, Xception65, Xception71, XceptionAligned

__all__ = [
    "ConvNeXt",
    "ConvNeXtBase",
    "ConvNeXtLarge",
    "ConvNeXtSmall",
    "ConvNeXtTiny",
    "DenseNet",
    "DenseNet121",
    "DenseNet161",
    "DenseNet169",
    "DenseNet201",
    "LegacyXception",
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
    "ResNet50d",
    "ResNet101d",
    "ResNetV2",
    "ResNetV2_50",
    "ResNetV2_101",
    "SEBottleneck",
    "SENet",
    "SENet154",
    "SEResNeXt50_32x4d",
    "SEResNet50",
    "SEResNet101",
    "SEResNet152",
    "WideResNet50_2",
    "WideResNet101_2",
    "Xception",
    "Xception41",
    "Xception65",
    "Xception71",
    "XceptionAligned",
]
