"""flaxcnn: classic convolutional networks in JAX/Flax, equivalent to torchvision and timm.

>>> import flaxcnn
>>> model = flaxcnn.models.ResNet50()             # or flaxcnn.create_model("resnet50")
>>> flaxcnn.list_models("resnet*")

Weight conversion lives in :mod:`flaxcnn.convert` (needs the ``[convert]`` extra);
importing :mod:`flaxcnn` never imports torch.
"""

from . import layers, models
from ._registry import (
    ModelSpec,
    create_model,
    find_by_source,
    get_model_spec,
    list_models,
    register_model,
)
from .extract import create_feature_extractor, get_graph_node_names
from .fold import fold_batchnorm
from .heads import get_classifier, reset_classifier
from .pretrained import get_pretrained_cfg, list_pretrained
from .xla import compiler_options, kernels, set_kernels

__version__ = "0.1.0"

__all__ = [
    "ModelSpec",
    "__version__",
    "compiler_options",
    "create_feature_extractor",
    "create_model",
    "find_by_source",
    "fold_batchnorm",
    "get_classifier",
    "get_graph_node_names",
    "get_model_spec",
    "get_pretrained_cfg",
    "kernels",
    "layers",
    "list_models",
    "list_pretrained",
    "models",
    "register_model",
    "reset_classifier",
    "set_kernels",
]
