"""FCN: the auxiliary head option and conversion details beyond the registry-wide checks."""

import jax
import jax.numpy as jnp
import pytest
import torchvision

import flaxcnn
from flaxcnn.convert import ConversionError, from_torch


def test_fcn_outputs_and_aux_option():
    model = flaxcnn.create_model("fcn_resnet50", num_classes=4)
    x = jnp.zeros((1, 35, 50, 3))
    out, variables = jax.eval_shape(lambda a: model.init_with_output(jax.random.key(0), a), x)
    assert sorted(out) == ["aux", "out"]
    assert out["out"].shape == out["aux"].shape == (1, 35, 50, 4)
    params = variables["params"]
    assert sorted(params) == [
        "aux_classifier_0",
        "aux_classifier_1",
        "aux_classifier_4",
        "backbone",
        "classifier_0",
        "classifier_1",
        "classifier_4",
    ]
    assert "fc" not in params["backbone"]  # torchvision's IntermediateLayerGetter drops it
    assert params["classifier_0"]["kernel"].shape == (3, 3, 2048, 512)
    assert params["aux_classifier_0"]["kernel"].shape == (3, 3, 1024, 256)

    no_aux = model.clone(aux_loss=False)
    out, variables = jax.eval_shape(lambda a: no_aux.init_with_output(jax.random.key(0), a), x)
    assert list(out) == ["out"]
    assert not any(k.startswith("aux") for k in variables["params"])


def test_from_torch_reads_classes_and_needs_aux_flag_for_headless_aux():
    tv = torchvision.models.segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=False
    )
    with pytest.raises(ConversionError, match="aux_classifier_0"):
        from_torch("fcn_resnet50", tv, source="torchvision")
    module, variables = from_torch("fcn_resnet50", tv, source="torchvision", aux_loss=False)
    assert module.num_classes == 3 and not module.aux_loss
    assert variables["params"]["classifier_4"]["kernel"].shape == (1, 1, 512, 3)
