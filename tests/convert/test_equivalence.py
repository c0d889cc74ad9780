"""The heart of the suite: every (source, model) pair the registry claims is numerically
equivalent to the torch model it converts from, and exports back to it
(see flaxcnn.convert.verify).

One test per flaxcnn model runs all its sources, so a model that converts from both
torchvision and timm into the same module compiles once for both comparisons.

Those run on the kernel paths this machine takes by default (XLA:CPU's lowerings). GPUs and
TPUs run other implementations (``flaxcnn.kernels('portable')``: grouped ``lax`` convs,
``reduce_window`` pooling, no barriers); one pair per family is proven on those too.
"""

import pytest

import flaxcnn
from flaxcnn.convert import verify
from flaxcnn.convert.verify import ODD_SIZE

MODELS = [n for n in flaxcnn.list_models() if flaxcnn.get_model_spec(n).sources]

# The pair that stands for its family on the portable paths: the cheapest one that has
# every CPU-specific layer of the family (grouped convs: ResNeXt, SE-ResNeXt; depthwise:
# the MobileNets, EfficientNets, ConvNeXt, Xception; max pooling: the rest).
FAMILY_PAIRS = {
    "resnet": ("torchvision", "resnext50_32x4d"),
    "senet": ("timm", "legacy_seresnext26_32x4d"),
    "efficientnet": ("torchvision", "efficientnet_b0"),
    "efficientnet_v2": ("timm", "tf_efficientnetv2_b0"),
    "mobilenet_v3": ("torchvision", "mobilenet_v3_large"),
    "mobilenet_v2": ("torchvision", "mobilenet_v2"),
    "vgg": ("torchvision", "vgg11_bn"),
    "densenet": ("torchvision", "densenet121"),
    "convnext": ("timm", "convnext_tiny"),
    "inception": ("torchvision", "inception_v3"),
    "fcn": ("torchvision", "fcn_resnet50"),
    "resnetv2": ("timm", "resnetv2_50"),
    "vit": ("timm", "vit_tiny_patch16_224"),
    "clip": ("openai", "RN50"),  # the ResNet tower: BatchNorm, pooling, strided convs
}


def _expected_modes(spec) -> list[str]:
    """The checks verify runs: eval and train at the default and the odd size, then export;
    CLIP at its one resolution, train mode only where its image tower has BatchNorm."""
    if spec.task == "clip":
        has_bn = not isinstance(spec.config["vision_layers"], int)
        return ["eval", "train", "export"] if has_bn else ["eval", "export"]
    return ["eval", "eval", "train", "train", "export"]


def _family_pairs() -> dict[str, tuple[str, str]]:
    """One (source, source name) per family with a torch source; a family missing from
    FAMILY_PAIRS is represented by its first model, so no family is skipped."""
    pairs = {}
    for name in MODELS:
        spec = flaxcnn.get_model_spec(name)
        if spec.family not in pairs:
            pairs[spec.family] = FAMILY_PAIRS.get(spec.family, next(iter(spec.sources.items())))
    return pairs


@pytest.mark.parametrize("name", MODELS)
def test_equivalent_to_torch(name):
    failures = []
    for source, src_name in flaxcnn.get_model_spec(name).sources.items():
        result = verify(src_name, source=source)
        print(result)
        # eval/train x default/odd non-square size, and the export back to torch
        modes = [c.mode for c in result.checks]
        if modes != _expected_modes(flaxcnn.get_model_spec(name)) or not result.ok:
            failures.append(f"{result}\n  checks run: {modes}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("source", "name"), sorted(_family_pairs().values()))
def test_equivalent_on_portable_kernels(source, name):
    """The implementations GPUs and TPUs run, proven on CPU: eval, train (running
    statistics) and export, at the odd non-square size, where windows and strides meet the
    edges unevenly; ``python -m flaxcnn.convert verify --kernels portable`` runs both sizes
    (docs/conversion.md records it)."""
    spec = flaxcnn.find_by_source(source, name)
    sizes = None if spec.task == "clip" else [spec.verify_size or ODD_SIZE]
    result = verify(name, source=source, sizes=sizes, kernels="portable")
    print(result)
    assert result.kernels == "portable"
    assert [c.mode for c in result.checks] == (
        _expected_modes(spec) if spec.task == "clip" else ["eval", "train", "export"]
    )
    assert result.ok, str(result)
