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
    # timm's natural order: digit runs compare as numbers
    assert resnets[:6] == ["resnet18", "resnet20", "resnet32", "resnet34", "resnet44", "resnet50"]
    assert resnets.index("resnet101") > resnets.index("resnet50d")
    assert "resnext50_32x4d" in flaxcnn.list_models("resnext*")
    assert set(flaxcnn.list_models(source="timm")) <= set(flaxcnn.list_models())
    assert flaxcnn.list_models("no_such_*") == []
    assert "resnet50" in flaxcnn.list_models(family="resnet")


def test_list_models_rejects_unknown_source_and_family():
    with pytest.raises(ValueError, match="unknown source 'keras'"):
        flaxcnn.list_models(source="keras")
    with pytest.raises(ValueError, match="unknown family 'resnett'.*did you mean 'resnet'"):
        flaxcnn.list_models(family="resnett")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'resnet05'.*did you mean.*'resnet50'"):
        flaxcnn.create_model("resnet05")


def test_unknown_override_names_accepted_fields():
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['num_class'\].*num_classes"):
        flaxcnn.create_model("resnet18", num_class=10)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        flaxcnn.register_model(
            "resnet50", flaxcnn.models.ResNet, {"stage_sizes": (1, 1, 1, 1)}, family="resnet"
        )


def test_duplicate_source_mapping_raises():
    with pytest.raises(ValueError, match="already mapped"):
        flaxcnn.register_model(
            "resnet50_again",
            flaxcnn.models.ResNet,
            {"stage_sizes": (3, 4, 6, 3)},
            family="resnet",
            sources={"torchvision": "resnet50"},
        )
    assert "resnet50_again" not in flaxcnn.list_models()


def test_register_rejects_unknown_config_field():
    class Tiny(nn.Module):
        num_classes: int = 10

    with pytest.raises(TypeError, match="has no field"):
        flaxcnn.register_model("tiny_bad", Tiny, {"depth": 3}, family="test")
    assert "tiny_bad" not in flaxcnn.list_models()


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations in a test land in a copy of the registry, gone after it."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    monkeypatch.setattr(_registry, "_BY_SOURCE", dict(_registry._BY_SOURCE))


class _Tasked(nn.Module):
    """A module with fields named like registry metadata."""

    task: str = "detect"
    family: int = 0
    num_classes: int = 10


def test_config_is_apart_from_metadata(scratch_registry):
    """Module fields and registry metadata share no namespace: a field named ``task`` is
    set through ``config`` while the spec's ``task`` stays what the metadata says."""
    ctor = flaxcnn.register_model(
        "tasked_net",
        _Tasked,
        {"task": "segment", "family": 3},
        family="test",
        task="segmentation",
        sources=("timm",),
    )
    spec = ctor.spec
    assert ctor().task == "segment" and ctor().family == 3
    assert spec.task == "segmentation" and spec.family == "test"
    assert dict(spec.config) == {"task": "segment", "family": 3}
    assert dict(spec.sources) == {"timm": "tasked_net"}  # a list of libraries: same name
    assert ctor(task="x").task == "x"
    assert ctor.__name__ == "TaskedNet"


def test_register_rejects_unknown_metadata(scratch_registry):
    with pytest.raises(TypeError, match=r"unknown registry metadata \['num_classes'\].*config"):
        flaxcnn.register_model("tasked_bad", _Tasked, family="test", num_classes=3)
    assert "tasked_bad" not in flaxcnn.list_models()
    with pytest.raises(TypeError, match="sources must be a mapping or a list"):
        flaxcnn.register_model("tasked_bad", _Tasked, family="test", sources="timm")
    with pytest.raises(ValueError, match="task must be one of"):
        flaxcnn.register_model("tasked_bad", _Tasked, family="test", task="detection")
    assert "tasked_bad" not in flaxcnn.list_models()


def test_variants_share_metadata(scratch_registry):
    register = _registry.variants(_Tasked, family="test", sources=("timm",), paper="P")
    a = register("tasked_a", {"num_classes": 5})
    b = register("tasked_b", paper="Q", sources={"torchvision": "tb"})
    assert (a.spec.family, a.spec.paper, dict(a.spec.sources)) == (
        "test",
        "P",
        {"timm": "tasked_a"},
    )
    assert (b.spec.paper, dict(b.spec.sources)) == ("Q", {"torchvision": "tb"})
    assert a().num_classes == 5 and b().num_classes == 10
    assert flaxcnn.list_models("tasked_*", family="test") == ["tasked_a", "tasked_b"]


def test_spec_is_read_only():
    spec = flaxcnn.get_model_spec("resnet50")
    with pytest.raises(TypeError):
        spec.config["stage_sizes"] = (1, 1, 1, 1)  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.sources["timm"] = "x"  # type: ignore[index]


# Every constructor name as it was when names became derived (#30): the rule must keep
# producing exactly these, so that nothing exported is silently renamed.
PINNED_CONSTRUCTOR_NAMES = {
    "alexnet": "AlexNetTV",
    "alexnet_paper": "AlexNetPaper",
    "convnext_base": "ConvNeXtBase",
    "convnext_large": "ConvNeXtLarge",
    "convnext_small": "ConvNeXtSmall",
    "convnext_tiny": "ConvNeXtTiny",
    "densenet121": "DenseNet121",
    "densenet161": "DenseNet161",
    "densenet169": "DenseNet169",
    "densenet201": "DenseNet201",
    "efficientnet_b0": "EfficientNetB0",
    "efficientnet_b1": "EfficientNetB1",
    "efficientnet_b2": "EfficientNetB2",
    "efficientnet_b3": "EfficientNetB3",
    "efficientnet_b4": "EfficientNetB4",
    "efficientnet_b5": "EfficientNetB5",
    "efficientnet_b6": "EfficientNetB6",
    "efficientnet_b7": "EfficientNetB7",
    "efficientnet_lite0": "EfficientNetLite0",
    "efficientnet_lite1": "EfficientNetLite1",
    "efficientnet_lite2": "EfficientNetLite2",
    "efficientnet_lite3": "EfficientNetLite3",
    "efficientnet_lite4": "EfficientNetLite4",
    "efficientnet_v2_l": "EfficientNetV2L",
    "efficientnet_v2_m": "EfficientNetV2M",
    "efficientnet_v2_s": "EfficientNetV2S",
    "fcn_resnet101": "FCN_ResNet101",
    "fcn_resnet50": "FCN_ResNet50",
    "googlenet": "InceptionV1",
    "inception_v3": "InceptionV3",
    "legacy_senet154": "SENet154",
    "legacy_seresnext26_32x4d": "LegacySEResNeXt26_32x4d",
    "legacy_xception": "LegacyXception",
    "lenet5": "LeNet5",
    "lenet5_d2l": "LeNet5D2L",
    "mobilenet_v3_large": "MobileNetV3Large",
    "mobilenet_v3_small": "MobileNetV3Small",
    "mobilenetv1_100": "MobileNetV1_100",
    "mobilenetv1_125": "MobileNetV1_125",
    "mobilenetv2_100": "MobileNetV2_100",
    "mobilenetv3_large_100": "MobileNetV3Large100",
    "mobilenetv3_small_100": "MobileNetV3Small100",
    "nin": "NetworkInNetwork",
    "resnet101": "ResNet101",
    "resnet101d": "ResNet101d",
    "resnet152": "ResNet152",
    "resnet18": "ResNet18",
    "resnet34": "ResNet34",
    "resnet50": "ResNet50",
    "resnet50d": "ResNet50d",
    "resnetv2_101": "ResNetV2_101",
    "resnetv2_50": "ResNetV2_50",
    "resnext101_32x8d": "ResNeXt101_32x8d",
    "resnext101_64x4d": "ResNeXt101_64x4d",
    "resnext50_32x4d": "ResNeXt50_32x4d",
    "seresnet101": "SEResNet101",
    "seresnet152": "SEResNet152",
    "seresnet50": "SEResNet50",
    "seresnext50_32x4d": "SEResNeXt50_32x4d",
    "tf_efficientnet_b0": "TFEfficientNetB0",
    "tf_efficientnet_b1": "TFEfficientNetB1",
    "tf_efficientnet_b2": "TFEfficientNetB2",
    "tf_efficientnet_b3": "TFEfficientNetB3",
    "tf_efficientnet_b4": "TFEfficientNetB4",
    "tf_efficientnet_b5": "TFEfficientNetB5",
    "tf_efficientnet_b6": "TFEfficientNetB6",
    "tf_efficientnet_b7": "TFEfficientNetB7",
    "tf_efficientnet_lite0": "TFEfficientNetLite0",
    "tf_efficientnet_lite1": "TFEfficientNetLite1",
    "tf_efficientnet_lite2": "TFEfficientNetLite2",
    "tf_efficientnet_lite3": "TFEfficientNetLite3",
    "tf_efficientnet_lite4": "TFEfficientNetLite4",
    "tf_efficientnetv2_b0": "TFEfficientNetV2B0",
    "tf_efficientnetv2_l": "TFEfficientNetV2L",
    "tf_efficientnetv2_m": "TFEfficientNetV2M",
    "tf_efficientnetv2_s": "TFEfficientNetV2S",
    "tv_efficientnet_b5": "TVEfficientNetB5",
    "tv_efficientnet_b6": "TVEfficientNetB6",
    "tv_efficientnet_b7": "TVEfficientNetB7",
    "unet_original": "UNetOriginal",
    "unet_padded": "UNetPadded",
    "vgg11": "VGG11",
    "vgg11_bn": "VGG11_BN",
    "vgg13": "VGG13",
    "vgg13_bn": "VGG13_BN",
    "vgg16": "VGG16",
    "vgg16_bn": "VGG16_BN",
    "vgg19": "VGG19",
    "vgg19_bn": "VGG19_BN",
    "wide_resnet101_2": "WideResNet101_2",
    "wide_resnet50_2": "WideResNet50_2",
    "xception41": "Xception41",
    "xception65": "Xception65",
    "xception71": "Xception71",
    "zfnet": "ZFNet",
    "clip_rn50": "CLIPRN50",
    "clip_rn101": "CLIPRN101",
    "clip_rn50x4": "CLIPRN50x4",
    "clip_rn50x16": "CLIPRN50x16",
    "clip_rn50x64": "CLIPRN50x64",
    "clip_vit_b32": "CLIPViTB32",
    "clip_vit_b16": "CLIPViTB16",
    "clip_vit_l14": "CLIPViTL14",
    "clip_vit_l14_336": "CLIPViTL14_336",
    "vit_tiny_patch16_224": "ViTTinyPatch16_224",
    "vit_small_patch16_224": "ViTSmallPatch16_224",
    "vit_small_patch32_224": "ViTSmallPatch32_224",
    "vit_base_patch16_224": "ViTBasePatch16_224",
    "vit_base_patch32_224": "ViTBasePatch32_224",
    "vit_large_patch16_224": "ViTLargePatch16_224",
    "resnet20": "ResNet20",
    "resnet110": "ResNet110",
    "plain56": "Plain56",
    "resnet50_v1": "ResNet50V1",
    "googlenet_paper": "GoogLeNetPaper",
}


def test_constructor_names_are_derived_and_pinned():
    for name, camel in PINNED_CONSTRUCTOR_NAMES.items():
        assert _registry.constructor_name(name) == camel, name
        assert flaxcnn.get_model_spec(name).name == name
    # Each exported constructor is named by the rule and builds its own registry entry.
    exported = {
        attr: getattr(flaxcnn.models, attr)
        for attr in flaxcnn.models.__all__
        if hasattr(getattr(flaxcnn.models, attr), "spec")
    }
    for attr, ctor in exported.items():
        assert ctor.__name__ == attr == _registry.constructor_name(ctor.spec.name)
        assert ctor() == flaxcnn.create_model(ctor.spec.name)
    pinned_exports = set(PINNED_CONSTRUCTOR_NAMES.values()) - {"TFEfficientNetV2B0"}
    assert pinned_exports <= set(exported)


@pytest.mark.parametrize(
    "name, camel",
    [
        ("resnet50d", "ResNet50d"),  # letters after the number stay as written
        ("wide_resnet50_2", "WideResNet50_2"),  # digit next to digit keeps its "_"
        ("mobilenetv3_large_100", "MobileNetV3Large100"),
        ("tf_efficientnetv2_s", "TFEfficientNetV2S"),
        ("legacy_seresnext26_32x4d", "LegacySEResNeXt26_32x4d"),  # spelled word by word
        ("convnext_base", "ConvNeXtBase"),  # a word that is not in the table: capitalised
        ("some_net", "SomeNet"),
    ],
)
def test_constructor_name_rule(name, camel):
    assert _registry.constructor_name(name) == camel


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


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_classes": -1}, "num_classes must be an integer >= 0, got -1"),
        ({"num_classes": "10"}, "num_classes must be an integer >= 0, got '10'"),
        ({"num_classes": True}, "num_classes must be an integer >= 0"),
        ({"in_chans": 0}, "in_chans must be an integer >= 1, got 0"),
        ({"out_indices": (1, 2)}, "out_indices selects the maps of features_only=True"),
    ],
)
def test_common_arguments_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        flaxcnn.create_model("resnet18", **kw)
    flaxcnn.create_model("resnet18", features_only=True, out_indices=(1, 2))  # fine together


def test_train_mode_without_mutable_batch_stats_says_what_to_pass():
    import jax
    import jax.numpy as jnp

    model = flaxcnn.create_model("resnet18", num_classes=3, stem_type="cifar", stage_sizes=(1,))
    x = jnp.zeros((2, 8, 8, 3))
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"mutable=\['batch_stats'\]"):
        jax.eval_shape(lambda v: model.apply(v, x, train=True), v)


def test_too_small_inputs_are_refused_clearly():
    import jax
    import jax.numpy as jnp

    with pytest.raises(ValueError, match=r"at least 32x32 .*got 28x28"):
        jax.eval_shape(
            flaxcnn.create_model("lenet5").init, jax.random.key(0), jnp.zeros((1, 28, 28, 1))
        )
    with pytest.raises(ValueError, match=r"at least 16x16 \(got 15x64\)"):
        jax.eval_shape(
            flaxcnn.create_model("vit_tiny_patch16_224").init,
            jax.random.key(0),
            jnp.zeros((1, 15, 64, 3)),
        )


def test_aux_heads_raise_the_minimum_only_where_they_run():
    """Inception v3's aux head needs 299 px and runs at init and in train mode; eval takes
    75 px (torchvision's min_size), as torch's model does."""
    import jax
    import jax.numpy as jnp

    model = flaxcnn.create_model("inception_v3", num_classes=3)
    key = jax.random.key(0)
    with pytest.raises(
        ValueError,
        match=r"^inception_v3 needs inputs of at least 299x299 \(got 298x299\) at init and in "
        r"train mode, where its aux heads run; eval takes 75x75 \(aux_logits=False drops",
    ):
        model.init(key, jnp.zeros((1, 298, 299, 3)))
    variables = jax.eval_shape(model.init, key, jnp.zeros((1, 299, 299, 3)))
    assert jax.eval_shape(model.apply, variables, jnp.zeros((1, 75, 75, 3))).shape == (1, 3)
    with pytest.raises(ValueError, match=r"at least 75x75 \(got 74x75\)") as eval_error:
        jax.eval_shape(model.apply, variables, jnp.zeros((1, 74, 75, 3)))
    assert "aux" not in str(eval_error.value)
    with pytest.raises(ValueError, match=r"at least 299x299 \(got 298x299\) at init and in train"):
        jax.eval_shape(
            lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
            variables,
            jnp.zeros((1, 298, 299, 3)),
        )


def test_errors_name_the_model_not_the_class_that_builds_it():
    """EfficientNet's class builds the MobileNets too: errors name the registered variant
    (or the closest one, for a variant with a field changed)."""
    import jax
    import jax.numpy as jnp

    model = flaxcnn.create_model("mobilenet_v3_small", num_classes=3)
    nchw = jnp.zeros((1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"^mobilenet_v3_small expects NHWC input with 3 ch"):
        model.init(jax.random.key(0), nchw)
    with pytest.raises(ValueError, match=r"^mobilenet_v3_small needs inputs of at least 1x1"):
        model.init(jax.random.key(0), jnp.zeros((1, 0, 8, 3)))
    with pytest.raises(
        TypeError, match=r"^mobilenet_v3_small: unknown argument\(s\) \['widht'\]"
    ) as bad_field:
        flaxcnn.create_model("mobilenet_v3_small", widht=2)
    assert "EfficientNet" not in str(bad_field.value)
    tweaked = flaxcnn.create_model("mobilenet_v3_small", drop_rate=0.0)  # a config field
    with pytest.raises(ValueError, match=r"^mobilenet_v3_small expects NHWC"):
        tweaked.init(jax.random.key(0), nchw)
