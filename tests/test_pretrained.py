"""Pretrained weights end to end, offline: random-init torch models stand in for downloads
(the download step is monkeypatched, never the conversion)."""

import json
import logging
import os
import shutil
import socket
import stat
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import chex
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import flaxcnn
import flaxcnn.models.clip  # registers the CLIP variants wherever flaxcnn.models does not
from flaxcnn import pretrained
from flaxcnn.convert import CheckpointError, ConversionError, from_torch, to_torch
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


def test_unknown_tag_lists_the_models_tags_and_the_right_function(cache):
    with pytest.raises(pretrained.UnknownWeightTag) as e:
        flaxcnn.create_model("resnet18", pretrained="IMAGENET1K_V9")
    msg = str(e.value)
    assert "(did you mean 'IMAGENET1K_V1'?)" in msg and "its tags: IMAGENET1K_V1, a1_in1k," in msg
    assert "flaxcnn.list_pretrained('resnet18.*')" in msg and "list_models" not in msg
    assert "pretrained= also takes a local checkpoint file or a folder" in msg
    assert len(msg.splitlines()) == 1
    with pytest.raises(pretrained.UnknownWeightTag, match="no pretrained weights are known"):
        flaxcnn.create_model("lenet5", pretrained=True)


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
    chex.assert_trees_all_equal(variables2, variables)


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


# -- Local weights: every form a user has, through pretrained= --


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """A random-init torchvision ResNet-18 in each local form: ``.pth``, torch-named
    ``.safetensors``, a Hugging Face style folder, a converted folder as ``flaxcnn convert
    --out`` writes it, and converted variables alone."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("r18")
    torch.manual_seed(0)
    t = build_torch_model("resnet18", "torchvision")
    sd = t.state_dict()
    torch.save(sd, d / "r18.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "r18.safetensors"))
    (d / "hf").mkdir()
    shutil.copy(d / "r18.safetensors", d / "hf" / "model.safetensors")
    module, variables = from_torch("resnet18", t, source="torchvision")
    config = {"num_classes": 1000, "in_chans": 3}
    pretrained.save_converted(d / "out_r18", "resnet18", config, variables)
    (d / "bare").mkdir()
    shutil.copy(d / "out_r18" / "variables.safetensors", d / "bare" / "weights.safetensors")
    return SimpleNamespace(dir=d, module=module, variables=variables)


@pytest.mark.parametrize(
    "form",
    [
        "r18.pth",  # relative to the working directory, as typed on a command line
        "r18.safetensors",
        "ABS",  # str(absolute path to r18.pth)
        "out_r18",  # a bare folder name: not a tag, and it exists
        "out_r18/variables.safetensors",
        "out_r18/config.json",
        "PATH",  # pathlib.Path of out_r18
        "hf",
        "bare/weights.safetensors",  # converted variables without their config.json
    ],
)
def test_local_weights_in_every_form(r18, cache, monkeypatch, form):
    monkeypatch.chdir(r18.dir)
    arg = {"ABS": str(r18.dir / "r18.pth"), "PATH": r18.dir / "out_r18"}.get(form, form)
    module, variables = flaxcnn.create_model("resnet18", pretrained=arg)
    assert module == r18.module
    chex.assert_trees_all_equal(variables, r18.variables)
    assert not cache.exists()  # local weights are not copied into the cache


def test_local_folder_adapts_head_and_input(r18):
    module, variables = flaxcnn.create_model(
        "resnet18", pretrained=r18.dir / "out_r18", num_classes=10, in_chans=1
    )
    assert (module.num_classes, module.in_chans) == (10, 1)
    assert variables["params"]["fc"]["kernel"].shape == (512, 10)
    np.testing.assert_allclose(
        variables["params"]["conv1"]["kernel"],
        np.asarray(r18.variables["params"]["conv1"]["kernel"]).sum(2, keepdims=True),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    ("name", "arg", "error", "match"),
    [
        ("resnet18", "nothere.pth", CheckpointError, "no such checkpoint file or folder: nothere"),
        ("resnet18", "EMPTY", CheckpointError, "holds neither converted weights"),
        ("resnet18", "out_r19", pretrained.UnknownWeightTag, "unknown weight tag .* 'out_r19'"),
        ("resnet34", "out_r18", ConversionError, "holds converted resnet18 weights, not resnet34"),
        ("resnet18.a1_in1k", "r18.pth", ValueError, "names the weight tag 'a1_in1k'"),
        (
            "resnet18.a1_in1k",
            "IMAGENET1K_V1",
            ValueError,
            "give one: create_model.'resnet18.a1_in1k'. alone",
        ),
        ("resnet18", "TRUNCATED", CheckpointError, r"converted weights\) is unreadable"),
        ("resnet18", "r34.pth", ConversionError, "r34.pth does not fit resnet18 .closest"),
    ],
)
def test_local_weights_errors(r18, tmp_path, monkeypatch, name, arg, error, match):
    monkeypatch.chdir(r18.dir)
    (tmp_path / "empty").mkdir()
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    shutil.copy(r18.dir / "out_r18" / "config.json", trunc)
    (trunc / "variables.safetensors").write_bytes(
        (r18.dir / "out_r18" / "variables.safetensors").read_bytes()[:4000]
    )
    if arg == "r34.pth":
        torch.save(build_torch_model("resnet34", "torchvision").state_dict(), tmp_path / arg)
    arg = {"EMPTY": tmp_path / "empty", "TRUNCATED": trunc, "r34.pth": tmp_path / arg}.get(arg, arg)
    with pytest.raises(error, match=match):
        flaxcnn.create_model(name, pretrained=arg)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_converted_files_get_the_users_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        entry = pretrained.save_converted(
            tmp_path / "entry", "resnet18", {}, {"params": {"b": np.zeros(2, np.float32)}}
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o777 & ~umask
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in entry.iterdir()} == {
        "config.json": 0o666 & ~umask,
        "variables.safetensors": 0o666 & ~umask,
    }


def test_in_chans_export_says_torchvision_has_none(r18):
    """torchvision's models are 3-channel only: a clear error naming the ways out, and each
    way out works (timm's in_chans, or the user's own first conv as the reference)."""
    import timm

    _, variables = flaxcnn.create_model("resnet18", pretrained=r18.dir / "out_r18", in_chans=1)
    with pytest.raises(
        ConversionError,
        match=r"torchvision's resnet18 has no in_chans argument .*source='timm'.*reference=",
    ):
        to_torch("resnet18", variables, source="torchvision")
    timm.create_model("resnet18", in_chans=1).load_state_dict(
        to_torch("resnet18", variables, source="timm")
    )
    tv = build_torch_model("resnet18", "torchvision")
    tv.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    tv.load_state_dict(
        to_torch("resnet18", variables, source="torchvision", reference=tv.state_dict())
    )


# -- Offline: fail within seconds with the way out, and load what is cached --


@pytest.fixture
def offline(monkeypatch):
    """No network: the reachability probe answers False and records what it was asked."""
    probed = []

    def unreachable(url, timeout=None):
        probed.append(url)
        return False

    monkeypatch.setattr(pretrained, "_reachable", unreachable)
    return probed


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, and HF_HUB_OFFLINE unset (the suite sets it)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "hf"


@pytest.fixture
def torch_hub(tmp_path, monkeypatch):
    import torch.hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "hub"


def _never(*args, **kwargs):
    raise AssertionError("timm asked for weights although offline")


def test_offline_timm_fails_fast_and_names_hf_hub_offline(cache, offline, hf_cache, monkeypatch):
    import timm

    monkeypatch.setattr(timm, "create_model", _never)
    t0 = time.perf_counter()
    with pytest.raises(pretrained.PretrainedUnavailable) as e:
        flaxcnn.create_model("resnet18.a1_in1k")
    assert time.perf_counter() - t0 < 3  # not huggingface_hub's ~50 s of retries
    assert offline == ["https://huggingface.co"]
    msg = str(e.value)
    assert "huggingface.co is unreachable" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "https://huggingface.co/timm/resnet18.a1_in1k" in msg
    assert "create_model('resnet18', pretrained='/path/to/model.safetensors')" in msg

    # With HF_HUB_OFFLINE set there is not even a probe.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(pretrained.PretrainedUnavailable, match="HF_HUB_OFFLINE is set"):
        flaxcnn.create_model("resnet18.a1_in1k")
    assert offline == ["https://huggingface.co"]


def test_offline_timm_loads_a_cached_weight(cache, offline, hf_cache):
    """A file in the Hugging Face cache loads through timm with the hub unreachable."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    torch.manual_seed(3)
    t = build_torch_model("resnet18", "timm")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_cache / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in t.state_dict().items()},
        str(repo / "snapshots" / commit / "model.safetensors"),
    )
    _, variables = flaxcnn.create_model("resnet18.a1_in1k")
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], t.fc.bias.detach().numpy())
    assert constants.HF_HUB_OFFLINE is False  # offline only for that call


def test_offline_torchvision_fails_fast(cache, offline, torch_hub):
    t0 = time.perf_counter()
    with pytest.raises(pretrained.PretrainedUnavailable) as e:
        flaxcnn.create_model("resnet18", pretrained=True)
    assert time.perf_counter() - t0 < 3
    assert offline == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert str(e.value) == (
        "could not fetch resnet18.IMAGENET1K_V1: download.pytorch.org is unreachable "
        "(offline?) and it is not cached; download "
        "https://download.pytorch.org/models/resnet18-f37072fd.pth on a connected machine and "
        f"put it at {torch_hub / 'checkpoints' / 'resnet18-f37072fd.pth'} or load it with "
        "create_model('resnet18', pretrained='/path/to/resnet18-f37072fd.pth')"
    )


def test_offline_torchvision_loads_a_cached_weight(cache, offline, torch_hub):
    (torch_hub / "checkpoints").mkdir(parents=True)
    t = build_torch_model("resnet18", "torchvision")
    torch.save(t.state_dict(), torch_hub / "checkpoints" / "resnet18-f37072fd.pth")
    _, variables = flaxcnn.create_model("resnet18", pretrained=True)
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], t.fc.bias.detach().numpy())
    assert offline == []  # cached: no probe


def test_reachability_probe(monkeypatch):
    for var in ("https", "http", "all", "no"):
        monkeypatch.delenv(f"{var}_proxy", raising=False)
        monkeypatch.delenv(f"{var.upper()}_PROXY", raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert pretrained._reachable(f"http://127.0.0.1:{port}/x", timeout=2)
        # Through the proxy the environment sets, whatever the host.
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
        assert pretrained._reachable("https://unresolvable.invalid/x", timeout=2)
    monkeypatch.delenv("https_proxy")
    t0 = time.perf_counter()
    assert not pretrained._reachable(f"http://127.0.0.1:{port}/x", timeout=2)  # closed
    assert not pretrained._reachable("https://unresolvable.invalid/x", timeout=2)
    assert time.perf_counter() - t0 < 4.5


def test_torch_hub_dir_without_torch_is_torchs(tmp_path, monkeypatch):
    """Where torch hub keeps downloads, found without importing torch, is torch's own rule."""
    import torch.hub

    for env in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "x")}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        with monkeypatch.context() as m:
            m.delitem(sys.modules, "torch.hub")
            without = pretrained._torch_hub_dir()
        assert without == pretrained._torch_hub_dir() == Path(torch.hub.get_dir())


# -- CLIP: OpenAI's checkpoints through the `clip` package, open_clip's through the hub --


@pytest.fixture(scope="module")
def clip_b32(tmp_path_factory):
    """A random-init OpenAI CLIP ViT-B/32 stored as OpenAI ships ``ViT-B-32.pt``: a
    TorchScript archive, weights in half precision where ``clip.model.convert_weights``
    puts them, with the ``input_resolution``/``context_length``/``vocab_size`` scalars;
    and its conversion by :func:`from_torch`."""
    from clip.model import convert_weights

    from flaxcnn.convert.clip import build_clip

    torch.manual_seed(0)
    model = build_clip("ViT-B/32", "openai", flaxcnn.get_model_spec("clip_vit_b32"))
    convert_weights(model)

    class Archive(torch.nn.Module):  # the model's tensors, as a traced module holds them
        def __init__(self):
            super().__init__()
            for k, v in model.named_children():
                self.add_module(k, v)
            for k, v in model.named_parameters(recurse=False):
                self.register_parameter(k, v)
            for k, v in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
                self.register_buffer(k, torch.tensor(v))

        def forward(self, x):
            return x

    path = tmp_path_factory.mktemp("clip") / "ViT-B-32.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates TorchScript
        torch.jit.trace(Archive(), torch.zeros(1)).save(str(path))
    sd = model.state_dict()
    module, variables = from_torch("ViT-B/32", sd, source="openai")
    return SimpleNamespace(path=path, sd=sd, module=module, variables=variables)


def _assert_is_clip_b32(clip_b32, module, variables):
    assert module == clip_b32.module
    chex.assert_trees_all_equal(variables, clip_b32.variables)
    # And against the torch tensors themselves (half precision widened exactly).
    conv = clip_b32.sd["visual.conv1.weight"].float().numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(variables["params"]["visual"]["conv1"]["kernel"], conv)
    np.testing.assert_array_equal(
        variables["params"]["text_projection"], clip_b32.sd["text_projection"].float().numpy()
    )


def test_clip_tags_use_clips_preprocessing():
    from flaxcnn.preprocess import clip_cfg

    fields = ("input_size", "resize_size", "crop_pct", "interpolation", "mean", "std")
    names = flaxcnn.list_pretrained("clip_*")
    assert {"clip_vit_b32.openai", "clip_rn50x64.openai", "clip_vit_b32.laion400m_e32"} <= set(
        names
    )
    for full in names:
        cfg = flaxcnn.get_pretrained_cfg(full)
        want = clip_cfg(cfg.name)
        assert [getattr(cfg, f) for f in fields] == [getattr(want, f) for f in fields], full
    default = flaxcnn.get_pretrained_cfg("clip_vit_l14_336")
    assert (default.tag, default.source, default.source_name) == (
        "openai",
        "openai",
        "ViT-L/14@336px",
    )
    with pytest.raises(TypeError, match="clip_vit_b32 has no num_classes to adapt"):
        flaxcnn.create_model("clip_vit_b32", pretrained=True, num_classes=10)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home folder: OpenAI's `clip` keeps its downloads in ~/.cache/clip."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_offline_clip_fails_fast_and_names_clips_cache(cache, offline, hf_cache, home, monkeypatch):
    import clip.clip

    monkeypatch.setattr(clip.clip, "_download", _never)
    t0 = time.perf_counter()
    with pytest.raises(pretrained.PretrainedUnavailable) as e:
        flaxcnn.create_model("clip_vit_b32", pretrained=True)
    assert time.perf_counter() - t0 < 3
    url = clip.clip._MODELS["ViT-B/32"]
    assert offline == [url]
    where = home / ".cache" / "clip"
    assert str(e.value) == (
        "could not fetch clip_vit_b32.openai: openaipublic.azureedge.net is unreachable "
        f"(offline?) and it is not cached in {where}; download {url} on a connected machine "
        f"and put it at {where / 'ViT-B-32.pt'} or load it with "
        "create_model('clip_vit_b32', pretrained='/path/to/ViT-B-32.pt')"
    )
    # open_clip's weights for the same architecture: the hub, probed the same way.
    with pytest.raises(pretrained.PretrainedUnavailable) as e:
        flaxcnn.create_model("clip_vit_b32.laion400m_e32")
    assert "huggingface.co is unreachable" in str(e.value)
    assert "open_clip_model.safetensors from https://huggingface.co/timm/" in str(e.value)
    assert not cache.exists()


def test_open_clip_weights_load_through_open_clip_offline(cache, offline, hf_cache, monkeypatch):
    """open_clip's tags: a file in the Hugging Face cache under open_clip's file name loads
    through open_clip in offline mode, with open_clip required to load it (never its silent
    random init)."""
    import open_clip
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_cache / "models--timm--vit_base_patch32_clip_224.laion400m_e32"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "open_clip_model.safetensors").write_bytes(b"")
    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs, constants.HF_HUB_OFFLINE))
        raise RuntimeError("stop here: the conversion is tested with OpenAI's weights")

    monkeypatch.setattr(open_clip, "create_model", create_model)
    with pytest.raises(pretrained.PretrainedUnavailable, match="RuntimeError: stop here"):
        flaxcnn.create_model("clip_vit_b32.laion400m_e32")
    kwargs = {"pretrained": "laion400m_e32", "require_pretrained": True}
    assert calls == [("ViT-B-32-quickgelu", kwargs, True)]
    assert offline == ["https://huggingface.co"] and constants.HF_HUB_OFFLINE is False


def test_clip_openai_through_clips_download(clip_b32, cache, offline, home, monkeypatch):
    """A checkpoint in clip's cache: fetched by clip's own `_download` (which would check its
    SHA-256 and download if needed), read as the TorchScript archive it is, converted,
    cached with CLIP's preprocessing; the next call needs neither clip nor torch."""
    import clip.clip

    where = home / ".cache" / "clip"
    where.mkdir(parents=True)
    (where / "ViT-B-32.pt").symlink_to(clip_b32.path)
    calls = []

    def download(url, root):
        calls.append((url, root))
        return str(where / "ViT-B-32.pt")

    monkeypatch.setattr(clip.clip, "_download", download)
    module, variables = flaxcnn.create_model("clip_vit_b32", pretrained=True)
    assert calls == [(clip.clip._MODELS["ViT-B/32"], str(where))] and offline == []
    _assert_is_clip_b32(clip_b32, module, variables)
    entry = cache / "clip_vit_b32.openai"
    cfg = pretrained.recorded_cfg(entry)
    assert cfg == flaxcnn.get_pretrained_cfg("clip_vit_b32.openai") and cfg.crop_pct == 1.0

    monkeypatch.setattr(clip.clip, "_download", _never)
    module2, variables2 = flaxcnn.create_model("clip_vit_b32.openai")
    assert module2 == module
    chex.assert_trees_all_equal_structs(variables2, variables)
    for leaf in (("visual", "conv1", "kernel"), ("logit_scale",), ("ln_final", "scale")):
        a, b = variables2["params"], variables["params"]
        for k in leaf:
            a, b = a[k], b[k]
        np.testing.assert_array_equal(a, b)


def test_clip_local_torchscript_file(clip_b32, cache):
    """OpenAI's ``ViT-B-32.pt`` passed as a file, as `clip.load(path)` takes it."""
    module, variables = flaxcnn.create_model("clip_vit_b32", pretrained=str(clip_b32.path))
    _assert_is_clip_b32(clip_b32, module, variables)
    assert not cache.exists()
