"""The flaxcnn command, offline: its outputs and its one-line error paths."""

import json

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from flaxcnn import cli, pretrained
from flaxcnn.convert.verify import build_torch_model


@pytest.fixture
def offline_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAXCNN_CACHE", str(tmp_path / "cache"))

    def fetch(cfg):  # stands in for the download; the conversion is real
        torch.manual_seed(0)
        return build_torch_model(cfg.source_name, cfg.source).state_dict()

    monkeypatch.setattr(pretrained, "_fetch_state_dict", fetch)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys):
    code, out, _ = run(capsys, "list", "resnet1*")
    assert code == 0 and out.split() == ["resnet101", "resnet101d", "resnet152", "resnet18"]
    code, out, _ = run(capsys, "list", "resnet50.*", "--pretrained")
    assert "resnet50.IMAGENET1K_V2" in out.split() and "resnet50.a1_in1k" in out.split()


def test_summary(capsys):
    code, out, _ = run(capsys, "summary", "resnet18")
    assert code == 0
    assert "11,689,512" in out and "FLOPs" in out and "activations/image" in out
    assert "receptive field   435x435 px (map 7x7, stride 32x32)" in out
    assert "stage 1: 43x43 px (map 56x56, stride 4x4)" in out


def test_convert_checkpoint(tmp_path, capsys):
    t = build_torch_model("resnet18", "timm", num_classes=10)
    torch.save(t.state_dict(), tmp_path / "w.pth")
    out_dir = tmp_path / "out"
    code, out, err = run(
        capsys,
        "convert",
        "timm:resnet18",
        "--checkpoint",
        str(tmp_path / "w.pth"),
        "--out",
        str(out_dir),
    )
    assert code == 0, err
    assert "parity: max|Δ|=" in out and "OK" in out
    meta = json.loads((out_dir / "config.json").read_text())
    assert meta["model"] == "resnet18" and meta["config"]["num_classes"] == 10
    module, variables = pretrained.load_converted(out_dir)
    assert module.num_classes == 10
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], t.fc.bias.detach().numpy())


def test_convert_weight_tag(tmp_path, capsys, offline_weights):
    code, _out, err = run(
        capsys,
        "convert",
        "torchvision:resnet18",
        "--weights",
        "IMAGENET1K_V1",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 0, err
    assert (tmp_path / "o" / "variables.safetensors").is_file()


def test_predict(tmp_path, capsys, offline_weights):
    path = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    code, out, err = run(capsys, "predict", str(path), "--model", "resnet18", "--top", "3")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == str(path) and len(lines) == 4 and "%" in lines[1]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["summary", "resnet05"], "unknown model 'resnet05'; did you mean"),
        (["convert", "resnet18", "--out", "OUT"], "expected <source>:<name>"),
        (
            ["convert", "torchvision:resnet18", "--weights", "V9", "--out", "OUT"],
            "unknown weight tag",
        ),
        (
            ["convert", "timm:resnet18", "--checkpoint", "NOTCKPT", "--out", "OUT"],
            "could not be read as a PyTorch checkpoint",
        ),
        (["convert", "torchvision:resnet34", "--checkpoint", "R18", "--out", "OUT"], "missing"),
        (["predict", "NOTIMG", "--model", "resnet18"], "cannot read image"),
    ],
)
def test_errors_are_one_line_and_write_nothing(tmp_path, capsys, offline_weights, argv, match):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint" * 100)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    torch.save(build_torch_model("resnet18", "torchvision").state_dict(), tmp_path / "r18.pth")
    subst = {
        "OUT": str(tmp_path / "out"),
        "NOTCKPT": str(tmp_path / "junk.pth"),
        "NOTIMG": str(tmp_path / "junk.png"),
        "R18": str(tmp_path / "r18.pth"),
    }
    code, _out, err = run(capsys, *[subst.get(a, a) for a in argv])
    assert code == 2
    assert err.startswith("flaxcnn: error: ") and len(err.strip().splitlines()) == 1
    assert match in err
    assert not (tmp_path / "out").exists()
