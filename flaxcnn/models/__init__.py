"""Model families. Importing a family module registers its variants.

``flaxcnn.models.ResNet50(num_classes=10)`` builds a module; ``flaxcnn.create_model``
does the same by name.
"""

from .alexnet import AlexNet, AlexNetPaper, AlexNetTV, ZFNet
from .convnext import ConvNeXt, ConvNeXtBase, ConvNeXtLarge, ConvNeXtSmall, ConvNeXtTiny
from .densenet import DenseNet, DenseNet121, DenseNet161, DenseNet169, DenseNet201
from .fcn import FCN, FCN_ResNet50, FCN_ResNet101
from .googlenet import GoogLeNet, InceptionV1
from .inception import Inception3, InceptionV3
from .lenet import LeNet, LeNet5, LeNet5D2L
from .nin import NetworkInNetwork, NiN
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
from .unet import UNet, UNetBlock, UNetOriginal, UNetPadded
from .vgg import VGG, VGG11, VGG11_BN, VGG13, VGG13_BN, VGG16, VGG16_BN, VGG19, VGG19_BN
from .xception import LegacyXception, Xception, Xception41, Xception65, Xception71, XceptionAligned

__all__ = [
    "AlexNet",
    "AlexNetPaper",
    "AlexNetTV",
    "BasicBlock",
    "Bottleneck",
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
    "FCN",
    "FCN_ResNet101",
    "FCN_ResNet50",
    "GoogLeNet",
    "Inception3",
    "InceptionV1",
    "InceptionV3",
    "LeNet",
    "LeNet5",
    "LeNet5D2L",
    "LegacyXception",
    "NetworkInNetwork",
    "NiN",
    "ResNeXt101_32x8d",
    "ResNeXt101_64x4d",
    "ResNeXt50_32x4d",
    "ResNet",
    "ResNet101",
    "ResNet101d",
    "ResNet152",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet50d",
    "ResNetV2",
    "ResNetV2_101",
    "ResNetV2_50",
    "SEBottleneck",
    "SENet",
    "SENet154",
    "SEResNeXt50_32x4d",
    "SEResNet101",
    "SEResNet152",
    "SEResNet50",
    "UNet",
    "UNetBlock",
    "UNetOriginal",
    "UNetPadded",
    "VGG",
    "VGG11",
    "VGG11_BN",
    "VGG13",
    "VGG13_BN",
    "VGG16",
    "VGG16_BN",
    "VGG19",
    "VGG19_BN",
    "WideResNet101_2",
    "WideResNet50_2",
    "Xception",
    "Xception41",
    "Xception65",
    "Xception71",
    "XceptionAligned",
    "ZFNet",
]
