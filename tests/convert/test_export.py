"""Export back to PyTorch. The round trip of every (source, model) pair is proven by
verify()'s export check in test_equivalence.py; these are the unit-level properties."""

import chex
import jax.numpy as jnp
import pytest

from flaxcnn.convert import ConversionError, from_torch, to_torch
from flaxcnn.convert.verify import build_torch_model


def test_export_reads_head_and_channels():
    import timm

    t = timm.create_model("resnet18", num_classes=10, in_chans=1)
    _, v = from_torch("resnet18", t, source="timm")
    sd = to_torch("resnet18", v, source="timm")
    assert sd["fc.weight"].shape == (10, 512) and sd["conv1.weight"].shape == (64, 1, 7, 7)
    chex.assert_trees_all_equal(sd, dict(t.state_dict()), strict=True)  # every key, exactly


def test_export_reports_what_does_not_fit():
    t = build_torch_model("resnet18", "torchvision")
    _, v = from_torch("resnet18", t, source="torchvision")
    del v["params"]["layer1_0"]["conv1"]
    v["params"]["extra"] = {"kernel": jnp.zeros(3)}
    with pytest.raises(ConversionError) as e:
        to_torch("resnet18", v, source="torchvision")
    msg = str(e.value)
    assert "layer1.0.conv1.weight" in msg and "params/extra/kernel" in msg
    sd, report = to_torch("resnet18", v, source="torchvision", strict=False)
    assert len(report.missing) == 1 and report.unexpected == ["params/extra/kernel"]
    assert "layer1.0.conv1.weight" not in sd
