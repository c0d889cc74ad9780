"""torch -> Flax weight conversion for torchvision and timm models (``pip install flaxcnn[convert]``).

>>> import torchvision, flaxcnn.convert
>>> tv = torchvision.models.resnet50(weights="IMAGENET1K_V2")
>>> module, variables = flaxcnn.convert.from_torch("resnet50", tv, source="torchvision")

Conversion is a rename table plus transposes (:mod:`flaxcnn.convert.core`), strict by
default; :func:`verify` proves numerical equivalence against the torch model.
torch is imported only when a function here needs it.
"""

# Importing a family's module registers its conversion rules and verify hooks.
from . import (  # noqa: F401
    alexnet,
    clip,
    convnext,
    efficientnet,
    fcn,
    googlenet,
    inception,
    resnet,
    resnetv2,
    senet,
    vgg,
    vit,
)
from .api import from_torch, load_torch_weights, read_state_dict
from .checkpoint import load_checkpoint
from .core import (
    ConversionReport,
    Mismatch,
    Rules,
    Transform,
    convert_state_dict,
    register_rules,
    torch_key_to_flax,
)
from .errors import CheckpointError, ConversionError
from .export import to_torch
from .verify import VerifyResult, register_verify_hook, verify

__all__ = [
    "CheckpointError",
    "ConversionError",
    "ConversionReport",
    "Mismatch",
    "Rules",
    "Transform",
    "VerifyResult",
    "convert_state_dict",
    "from_torch",
    "load_checkpoint",
    "load_torch_weights",
    "read_state_dict",
    "register_verify_hook",
    "register_rules",
    "to_torch",
    "torch_key_to_flax",
    "verify",
]
