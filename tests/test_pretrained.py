"""Pretrained weights end to end, offline: random-init torch models stand in for downloads
(the download step is monkeypatched, never the conversion)."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import flaxcnn
from flaxcnn import pretrained
from flaxcnn.convert import CheckpointError, ConversionError
from flaxcnn.convert.verify import build_torch_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAXCNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_download(monkeypatch):
    """Replace the network fetch by a random-init torch model of the right architecture."""
    calls = []

    def fetch(cfg):
        calls.append(cfg.full_name)
        torch.manual_seed(len(calls))
        return build_torch_model(cfg.source_name, cfg.source).state_dict()

    monkeypatch.setattr(pretrained, "_fetch_state_dict", fetch)
    return calls


def test_metadata_matches_the_installed_libraries():
    from flaxcnn.convert.pretrained_meta import PRETRAINED_JSON, generate

    shipped = json.loads(PRETRAINED_JSON.read_text())
    assert shipped == json.loads(json.dumps(generate())), (
        "run: python -m flaxcnn.convert meta --write"
    )


def test_labels_are_torchvisions():
    from torchvision.models import ResNet50_Weights

    assert pretrained.imagenet_labels() == ResNet50_Weights.IMAGENET1K_V2.meta["categories"]


def test_tags_and_defaults():
    assert "resnet50.IMAGENET1K_V2" in flaxcnn.list_pretrained("resnet50.*")
    assert "resnet50.a1_in1k" in flaxcnn.list_pretrained()
    cfg = flaxcnn.get_pretrained_cfg("resnet50")
    assert (cfg.source, cfg.tag, cfg.resize_size, cfg.input_size) == (
        "torchvision",
        "IMAGENET1K_V2",
        232,
        (224, 224, 3),
    )
    assert cfg.top1 == pytest.approx(80.858)
    assert flaxcnn.get_pretrained_cfg("resnet50", "DEFAULT") == cfg
    timm_cfg = flaxcnn.get_pretrained_cfg("resnet50.a1_in1k")
    assert (timm_cfg.source, timm_cfg.interpolation, timm_cfg.crop_pct) == ("timm", "bicubic", 0.95)
    assert len(cfg.labels) == 1000


def test_unknown_tag_suggests():
    with pytest.raises(ValueError, match=r"unknown weight tag for resnet50 'a1_in1K'.*'a1_in1k'"):
        flaxcnn.get_pretrained_cfg("resnet50", "a1_in1K")


def test_create_model_pretrained_through_the_cache(cache, fake_download):
    module, variables = flaxcnn.create_model("resnet18", pretrained=True)
    assert fake_download == ["resnet18.IMAGENET1K_V1"]
    entry = cache / "resnet18.IMAGENET1K_V1"
    assert (entry / "variables.safetensors").is_file() and (entry / "config.json").is_file()
    assert (
        json.loads((entry / "config.json").read_text())["pretrained_cfg"]["source"] == "torchvision"
    )

    # The converted weights are those of the (stand-in) download.
    torch.manual_seed(1)
    ref = build_torch_model("resnet18", "torchvision").eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 80), dtype=np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    got = module.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1, np.abs(expected).max()))

    # Second time: from the cache, no download, no torch conversion.
    module2, variables2 = flaxcnn.create_model("resnet18.IMAGENET1K_V1")
    assert fake_download == ["resnet18.IMAGENET1K_V1"]
    assert module2 == module
    jax.tree.map(np.testing.assert_array_equal, variables2, variables)


def test_timm_tag(cache, fake_download):
    module, _variables = flaxcnn.create_model("resnet18", pretrained="a1_in1k")
    assert fake_download == ["resnet18.a1_in1k"] and module.num_classes == 1000
    assert (cache / "resnet18.a1_in1k" / "variables.safetensors").is_file()


def test_new_head_and_input_channels(cache, fake_download, caplog):
    _, base = flaxcnn.create_model("resnet18", pretrained=True)
    with caplog.at_level(logging.INFO, logger="flaxcnn"):
        module, variables = flaxcnn.create_model(
            "resnet18", pretrained=True, num_classes=10, in_chans=1
        )
    assert (
        "re-initialised the classifier 'fc' for 10 classes (the weights have 1000)" in caplog.text
    )
    assert "adapted the first conv 'conv1' from 3 to 1 input channels" in caplog.text
    assert module.num_classes == 10 and module.in_chans == 1
    assert variables["params"]["fc"]["kernel"].shape == (512, 10)
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], 0)
    # Everything else is loaded.
    np.testing.assert_array_equal(
        variables["params"]["layer4_1"]["conv2"]["kernel"],
        base["params"]["layer4_1"]["conv2"]["kernel"],
    )
    # timm's adapt_input_conv on the same weights.
    from timm.models._manipulate import adapt_input_conv

    w = torch.from_numpy(np.asarray(base["params"]["conv1"]["kernel"]).transpose(3, 2, 0, 1).copy())
    for c in (1, 4, 7):
        ref = adapt_input_conv(c, w.clone()).numpy().transpose(2, 3, 1, 0)
        np.testing.assert_allclose(
            pretrained.adapt_input_conv(base["params"]["conv1"]["kernel"], c), ref, rtol=1e-6
        )
    out = module.apply(variables, jnp.zeros((2, 64, 64, 1)))
    assert out.shape == (2, 10)


def test_local_checkpoint_file(tmp_path, cache):
    t = build_torch_model("resnet18", "timm")
    path = tmp_path / "mine.pth"
    torch.save(t.state_dict(), path)
    _module, variables = flaxcnn.create_model("resnet18", pretrained=str(path))
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], t.fc.bias.detach().numpy())
    wrong = tmp_path / "wrong.pth"
    torch.save(build_torch_model("resnet34", "torchvision").state_dict(), wrong)
    with pytest.raises(ConversionError, match="does not fit resnet18"):
        flaxcnn.create_model("resnet18", pretrained=str(wrong))


def test_local_checkpoint_of_an_unregistered_configuration(tmp_path, cache):
    """Overrides shape the module before a local checkpoint converts into it."""
    import torchvision

    t = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    path = tmp_path / "small.pth"
    torch.save(t.state_dict(), path)
    module, variables = flaxcnn.create_model(
        "resnet18", pretrained=str(path), stage_sizes=(1, 1, 1, 1)
    )
    assert module.stage_sizes == (1, 1, 1, 1)
    np.testing.assert_array_equal(
        variables["params"]["layer4_0"]["conv2"]["kernel"],
        t.layer4[0].conv2.weight.detach().numpy().transpose(2, 3, 1, 0),
    )
    with pytest.raises(ConversionError, match="does not fit resnet18"):
        flaxcnn.create_model("resnet18", pretrained=str(path))


def test_architecture_override_that_does_not_fit_the_weights(cache, fake_download):
    """Registered weights under an override that changes the architecture: a clear error
    naming the tensors, not a silently truncated or re-initialised model."""
    with pytest.raises(ConversionError, match=r"unexpected params/layer1_1/conv1/kernel") as e:
        flaxcnn.create_model("resnet18", pretrained=True, stage_sizes=(1, 1, 1, 1))
    report = e.value.report  # the same ConversionReport a failed conversion carries
    assert not report.missing and not report.mismatched
    assert "params/layer1_1/conv1/kernel" in report.unexpected
    with pytest.raises(ConversionError, match=r"mis-shaped params/conv1/kernel"):
        flaxcnn.create_model("resnet18", pretrained=True, stem_type="cifar")
    with pytest.raises(ConversionError, match=r"missing params/layer1_0/se/fc1/kernel"):
        flaxcnn.create_model("resnet18", pretrained=True, attn_layer="se")


def test_offline_with_nothing_cached_names_the_file(cache, monkeypatch, tmp_path):
    import torch.hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(url, dst, *args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(pretrained.PretrainedUnavailable) as e:
        flaxcnn.create_model("resnet18", pretrained=True)
    msg = str(e.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert not (cache / "resnet18.IMAGENET1K_V1").exists()


def test_offline_timm_names_the_hub_repo(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise OSError("offline: no cached file for timm/resnet18.a1_in1k")

    monkeypatch.setattr(builder, "load_pretrained", offline)
    with pytest.raises(
        pretrained.PretrainedUnavailable, match=r"huggingface.co/timm/resnet18.a1_in1k"
    ):
        flaxcnn.create_model("resnet18", pretrained="a1_in1k")


def test_corrupt_cache_entry_is_a_clear_error(cache, fake_download):
    flaxcnn.create_model("resnet18", pretrained=True)
    f = cache / "resnet18.IMAGENET1K_V1" / "variables.safetensors"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(
        CheckpointError, match="cached weights in .* are unreadable.*delete that folder"
    ):
        flaxcnn.create_model("resnet18", pretrained=True)


def test_unknown_override_with_pretrained(cache, fake_download):
    with pytest.raises(TypeError, match="unknown argument"):
        flaxcnn.create_model("resnet18", pretrained=True, num_class=3)
    assert fake_download == []
