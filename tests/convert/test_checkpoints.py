"""Reading weights: files, wrappers, and every way a checkpoint can be wrong."""

import numpy as np
import pytest
import torch
import torchvision

import flaxcnn
from flaxcnn.convert import (
    CheckpointError,
    ConversionError,
    Rules,
    from_torch,
    load_checkpoint,
    load_torch_weights,
    torch_key_to_flax,
)


@pytest.fixture(scope="module")
def tv_resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10)


def test_key_rule():
    assert torch_key_to_flax("layer1.0.downsample.1.running_var") == (
        "batch_stats",
        ("layer1_0", "downsample_1"),
        "var",
    )
    assert torch_key_to_flax("fc.weight") == ("params", ("fc",), "weight")
    assert torch_key_to_flax("features.0.weight") == ("params", ("features_0",), "weight")


def test_from_module_and_state_dict_agree(tv_resnet18):
    m1, v1 = from_torch("resnet18", tv_resnet18, source="torchvision")
    m2, v2 = from_torch("resnet18", tv_resnet18.state_dict(), source="torchvision")
    assert m1 == m2 and m1.num_classes == 10
    np.testing.assert_array_equal(
        v1["params"]["fc"]["kernel"], tv_resnet18.fc.weight.detach().numpy().T
    )
    np.testing.assert_array_equal(
        v2["batch_stats"]["layer2_0"]["downsample_1"]["var"],
        tv_resnet18.layer2[0].downsample[1].running_var.numpy(),
    )
    np.testing.assert_array_equal(
        v1["params"]["conv1"]["kernel"],
        tv_resnet18.conv1.weight.detach().numpy().transpose(2, 3, 1, 0),
    )


def test_converted_weights_do_not_alias_torch_memory(tv_resnet18):
    _, v = from_torch("resnet18", tv_resnet18, source="torchvision")
    before = np.array(v["batch_stats"]["bn1"]["mean"])
    with torch.no_grad():
        tv_resnet18.bn1.running_mean.add_(1.0)
    try:
        np.testing.assert_array_equal(v["batch_stats"]["bn1"]["mean"], before)
    finally:
        with torch.no_grad():
            tv_resnet18.bn1.running_mean.sub_(1.0)


def test_pth_file_and_wrappers(tmp_path, tv_resnet18):
    sd = tv_resnet18.state_dict()
    plain, wrapped, ddp = tmp_path / "w.pth", tmp_path / "ckpt.pth", tmp_path / "ddp.pt"
    torch.save(sd, plain)
    torch.save({"epoch": 3, "state_dict": sd}, wrapped)
    torch.save({f"module.{k}": v for k, v in sd.items()}, ddp)
    ref = load_checkpoint(plain)
    for path in (wrapped, ddp):
        got = load_checkpoint(path)
        assert got.keys() == ref.keys()
    _, v = from_torch("resnet18", str(ddp), source="torchvision")
    np.testing.assert_array_equal(v["params"]["bn1"]["scale"], sd["bn1.weight"].numpy())


def test_safetensors_file(tmp_path, tv_resnet18):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tv_resnet18.state_dict().items()}, str(path))
    _, v = from_torch("resnet18", path, source="torchvision")
    np.testing.assert_array_equal(v["params"]["fc"]["bias"], tv_resnet18.fc.bias.detach().numpy())


def test_bf16_weights_convert_to_param_dtype(tv_resnet18):
    sd = {
        k: (v.to(torch.bfloat16) if v.is_floating_point() else v)
        for k, v in tv_resnet18.state_dict().items()
    }
    _, v = from_torch("resnet18", sd, source="torchvision")
    assert v["params"]["fc"]["kernel"].dtype == np.float32


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"this is not a checkpoint at all\n" * 10, "could not be read as a PyTorch checkpoint"),
    ],
)
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        from_torch("resnet18", path, source="torchvision")


def test_truncated_file(tmp_path, tv_resnet18):
    full = tmp_path / "full.pth"
    torch.save(tv_resnet18.state_dict(), full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth could not be read.*truncated") as e:
        load_checkpoint(cut)
    assert e.value.__cause__ is None  # no torch traceback chained under ours


def test_truncated_safetensors(tmp_path, tv_resnet18):
    from safetensors.torch import save_file

    full = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in tv_resnet18.state_dict().items()}, str(full))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(cut)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "obj.pth"
    torch.save({"fn": print}, path)  # needs full unpickling: refused by weights_only
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(path)
    path2 = tmp_path / "mixed.pth"
    torch.save({"a": torch.zeros(3), "lr": 0.1}, path2)
    with pytest.raises(CheckpointError, match=r"lr \(float\)"):
        load_checkpoint(path2)


def test_mismatched_checkpoint_lists_all_three_groups(tv_resnet18):
    sd = dict(tv_resnet18.state_dict())
    del sd["layer1.0.conv1.weight"]  # missing
    sd["extra.weight"] = torch.zeros(3, 3)  # unexpected
    sd["layer2.0.conv2.weight"] = torch.zeros(128, 128, 5, 5)  # wrong shape
    with pytest.raises(ConversionError) as e:
        from_torch("resnet18", sd, source="torchvision")
    msg = str(e.value)
    assert "missing" in msg and "params/layer1_0/conv1/kernel" in msg
    assert "unexpected" in msg and "extra.weight" in msg
    assert "shape mismatch" in msg and "layer2.0.conv2.weight" in msg and "(5, 5, 128, 128)" in msg
    report = e.value.report
    assert len(report.missing) == 1 and len(report.unexpected) == 1 and len(report.mismatched) == 1
    # The mis-shaped tensor is a record, not a string to parse: its variable is not also
    # reported missing.
    (m,) = report.mismatched
    assert (m.key, m.target) == ("layer2.0.conv2.weight", "params/layer2_0/conv2/kernel")
    assert (m.got, m.want) == ((5, 5, 128, 128), (3, 3, 128, 128))
    assert m.target not in report.missing


def test_rules_take_transform_records():
    with pytest.raises(TypeError, match="Transform records"):
        Rules(transforms=[(r"/gamma$", lambda a: a)])


def test_non_strict_returns_report_and_keeps_init(tv_resnet18):
    sd = dict(tv_resnet18.state_dict())
    del sd["layer1.0.conv1.weight"]
    _, variables, report = from_torch("resnet18", sd, source="torchvision", strict=False)
    assert report.missing == ["params/layer1_0/conv1/kernel"]
    assert variables["params"]["layer1_0"]["conv1"]["kernel"].shape == (3, 3, 64, 64)
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], sd["fc.bias"].numpy())


def test_wrong_architecture_is_an_error(tv_resnet18):
    with pytest.raises(ConversionError, match="shape mismatch|missing"):
        from_torch("resnet34", tv_resnet18, source="torchvision")


def test_load_into_user_module(tv_resnet18):
    module = flaxcnn.models.ResNet18(num_classes=10)
    variables = load_torch_weights(module, tv_resnet18)
    assert variables["params"]["fc"]["kernel"].shape == (512, 10)
    with pytest.raises(ConversionError, match="shape mismatch"):
        load_torch_weights(flaxcnn.models.ResNet18(num_classes=1000), tv_resnet18)


def test_unknown_source_and_name(tv_resnet18):
    with pytest.raises(ValueError, match="source must be one of"):
        from_torch("resnet18", tv_resnet18, source="keras")
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet19'.*did you mean"):
        from_torch("resnet19", tv_resnet18, source="torchvision")


def test_headless_and_in_chans_read_from_weights():
    import timm

    t = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=1)
    module, variables = from_torch("resnet18", t, source="timm")
    assert module.num_classes == 0 and module.in_chans == 1
    assert "fc" not in variables["params"]
