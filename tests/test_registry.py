"""The registry: names, wildcards, errors that say what to do."""

import subprocess
import sys

import flax.linen as nn
import pytest

import flaxcnn
from flaxcnn import _registry


def test_list_models_patterns():
    resnets = flaxcnn.list_models("resnet*")
    assert {"resnet18", "resnet50", "resnet152"} <= set(resnets)
    assert resnets == sorted(resnets)
    assert "resnext50_32x4d" in flaxcnn.list_models("resnext*")
    assert set(flaxcnn.list_models(source="timm")) <= set(flaxcnn.list_models())
    assert flaxcnn.list_models("no_such_*") == []
    assert "resnet50" in flaxcnn.list_models(family="resnet")


def test_list_models_rejects_unknown_source():
    with pytest.raises(ValueError, match="unknown source 'keras'"):
        flaxcnn.list_models(source="keras")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'resnet05'.*did you mean.*'resnet50'"):
        flaxcnn.create_model("resnet05")


def test_unknown_override_names_accepted_fields():
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['num_class'\].*num_classes"):
        flaxcnn.create_model("resnet18", num_class=10)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        flaxcnn.register_model(
            "resnet50", flaxcnn.models.ResNet, family="resnet", stage_sizes=(1, 1, 1, 1)
        )


def test_duplicate_source_mapping_raises():
    with pytest.raises(ValueError, match="already mapped"):
        flaxcnn.register_model(
            "resnet50_again",
            flaxcnn.models.ResNet,
            family="resnet",
            sources={"torchvision": "resnet50"},
            stage_sizes=(3, 4, 6, 3),
        )
    assert "resnet50_again" not in flaxcnn.list_models()


def test_register_rejects_unknown_config_field():
    class Tiny(nn.Module):
        num_classes: int = 10

    with pytest.raises(TypeError, match="has no field"):
        flaxcnn.register_model("tiny_bad", Tiny, family="test", depth=3)
    assert "tiny_bad" not in flaxcnn.list_models()


def test_constructors_match_registry():
    m = flaxcnn.models.ResNet50(num_classes=10)
    assert isinstance(m, flaxcnn.models.ResNet)
    assert m == flaxcnn.create_model("resnet50", num_classes=10)
    assert flaxcnn.models.ResNet50.__name__ == "ResNet50"
    assert "resnet50" in flaxcnn.models.ResNet50.__doc__
    assert flaxcnn.models.ResNeXt50_32x4d.spec.name == "resnext50_32x4d"


def test_find_by_source():
    assert flaxcnn.find_by_source("torchvision", "wide_resnet50_2").name == "wide_resnet50_2"
    with pytest.raises(ValueError, match="unknown timm model 'resnet51'.*'resnet50'"):
        flaxcnn.find_by_source("timm", "resnet51")


def test_every_constructor_is_exported():
    for name in flaxcnn.list_models():
        spec = flaxcnn.get_model_spec(name)
        assert spec.sources is not None
        assert name == name.lower()


def test_import_flaxcnn_does_not_import_torch():
    code = "import sys, flaxcnn, flaxcnn.models; print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_is_private_state():
    assert _registry.get_model_spec("resnet50").family == "resnet"
