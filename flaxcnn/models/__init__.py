"""Model families. Importing a family module registers its variants.

``flaxcnn.models.ResNet50(num_classes=10)`` builds a module; ``flaxcnn.create_model``
does the same by name.
"""

from .alexnet import AlexNet, AlexNetPaper, AlexNetTV, ZFNet
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
    ResNet101,
    ResNet152,
    ResNeXt50_32x4d,
    ResNeXt101_32x8d,
    ResNeXt101_64x4d,
    WideResNet50_2,
    WideResNet101_2,
)
from .vgg import VGG, VGG11, VGG11_BN, VGG13, VGG13_BN, VGG16, VGG16_BN, VGG19, VGG19_BN

__all__ = [
    "VGG",
    "VGG11",
    "VGG11_BN",
    "VGG13",
    "VGG13_BN",
    "VGG16",
    "VGG16_BN",
    "VGG19",
    "VGG19_BN",
    "AlexNet",
    "AlexNetPaper",
    "AlexNetTV",
    "BasicBlock",
    "Bottleneck",
    "GoogLeNet",
    "Inception3",
    "InceptionV1",
    "InceptionV3",
    "LeNet",
    "LeNet5",
    "LeNet5D2L",
    "NetworkInNetwork",
    "NiN",
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
    "ZFNet",
]
