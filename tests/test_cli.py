"""The flaxcnn command, offline: its outputs and its one-line error paths."""

import dataclasses
import json
import os
import stat
from types import SimpleNamespace

import chex
import jax
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import flaxcnn
import flaxcnn.models.clip  # registers the CLIP variants wherever flaxcnn.models does not
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
    assert code == 0 and out.split() == [
        "resnet18",
        "resnet101",
        "resnet101d",
        "resnet110",
        "resnet152",
    ]
    code, out, _ = run(capsys, "list", "resnet50.*", "--pretrained")
    assert "resnet50.IMAGENET1K_V2" in out.split() and "resnet50.a1_in1k" in out.split()


def test_summary(capsys):
    code, out, _ = run(capsys, "summary", "resnet18")
    assert code == 0
    assert "11,689,512" in out and "FLOPs" in out and "activations/image" in out
    assert "receptive field   435x435 px (map 7x7, stride 32x32)" in out
    assert "stage 1: 43x43 px (map 56x56, stride 4x4)" in out


def test_summary_below_the_minimum_is_one_line(capsys):
    code, out, err = run(capsys, "summary", "lenet5", "--size", "28", "28")
    assert code == 2 and not out
    assert err.strip().splitlines() == [
        "flaxcnn: error: lenet5 needs inputs of at least 32x32 (got 28x28); pad the image, "
        "or pass conv1_padding=2, which takes 28x28 digits"
    ]


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
    # Written with the user's permissions, and loadable as a user would try.
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o777 & ~mask
    for f in out_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f
    module2, variables2 = flaxcnn.create_model("resnet18", pretrained=str(out_dir))
    assert module2 == module
    chex.assert_trees_all_equal(variables2, variables)
    Image.new("RGB", (40, 30)).save(tmp_path / "img.png")
    code, out, err = run(
        capsys,
        "predict",
        str(tmp_path / "img.png"),
        "--model",
        "resnet18",
        "--pretrained",
        str(out_dir),
    )
    assert code == 0, err
    assert len(out.splitlines()) == 6 and out.splitlines()[1].split()[1] in map(str, range(10))


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
    # The tag's preprocessing is recorded with the weights, for predict --pretrained o.
    assert pretrained.recorded_cfg(tmp_path / "o") == flaxcnn.get_pretrained_cfg(
        "resnet18.IMAGENET1K_V1"
    )


def test_predict(tmp_path, capsys, offline_weights):
    path = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    code, out, err = run(capsys, "predict", str(path), "--model", "resnet18", "--top", "3")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == str(path) and len(lines) == 4 and "%" in lines[1]


@pytest.fixture(scope="module")
def local_r18(tmp_path_factory):
    """A random-init torchvision ResNet-18 as .pth and as torch-named .safetensors, and an image."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("local")
    sd = build_torch_model("resnet18", "torchvision").state_dict()
    torch.save(sd, d / "r18.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "r18.safetensors"))
    Image.fromarray(skimage.data.chelsea()).save(d / "chelsea.jpg")
    return d


@pytest.mark.parametrize("form", ["r18.pth", "ABSOLUTE.safetensors"])
def test_predict_with_a_local_checkpoint(local_r18, capsys, monkeypatch, form):
    """The issue's command, ``flaxcnn predict chelsea.jpg --model resnet18 --pretrained
    r18.pth``, relative to the working directory, and with an absolute path."""
    monkeypatch.chdir(local_r18)
    path = str(local_r18 / "r18.safetensors") if form.startswith("ABSOLUTE") else form
    code, out, err = run(
        capsys, "predict", "chelsea.jpg", "--model", "resnet18", "--pretrained", path, "--top", "2"
    )
    assert code == 0, err
    assert out.splitlines()[0] == "chelsea.jpg" and len(out.splitlines()) == 3
    assert (
        err == f"flaxcnn: note: {path} records no preprocessing; using resnet18.IMAGENET1K_V1's\n"
    )


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """Offline with empty caches: the probe answers False, nothing may download."""
    import torch.hub
    from huggingface_hub import constants

    monkeypatch.setenv("FLAXCNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "_reachable", lambda url, timeout=None: False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # OpenAI's clip caches in ~/.cache/clip


@pytest.mark.parametrize(
    ("argv", "matches"),
    [
        (
            ["predict", "IMG", "--model", "resnet18", "--pretrained", "V9"],
            (
                "unknown weight tag for resnet18 'V9'; its tags: IMAGENET1K_V1, a1_in1k,",
                "(flaxcnn list 'resnet18.*' --pretrained lists them); --pretrained also takes a "
                "local checkpoint file or a folder written by `flaxcnn convert`",
            ),
        ),
        (
            ["predict", "IMG", "--model", "resnet18", "--pretrained", "missing.pth"],
            ("no such checkpoint file or folder: missing.pth",),
        ),
        (
            ["predict", "IMG", "--model", "resnet18", "--pretrained", "EMPTY"],
            ("holds neither converted weights",),
        ),
        (
            ["predict", "IMG", "--model", "resnet18.a1_in1k", "--pretrained", "r18.pth"],
            ("give one: --model resnet18.a1_in1k alone, or --model resnet18 --pretrained r18.pth",),
        ),
        (
            ["predict", "IMG", "--model", "resnet18.a1_in1k"],
            (
                "huggingface.co is unreachable",
                "pass --model resnet18 --pretrained /path/to/model.safetensors; or copy a Hugging "
                "Face cache (HF_HOME) that holds it here; HF_HUB_OFFLINE=1 skips the network check",
            ),
        ),
        (
            ["predict", "IMG", "--model", "resnet18"],
            ("pass --model resnet18 --pretrained /path/to/resnet18-f37072fd.pth",),
        ),
        (
            ["convert", "torchvision:resnet18", "--weights", "IMAGENET1K_V1", "--out", "OUT"],
            (
                "download.pytorch.org is unreachable (offline?) and it is not cached; download "
                "https://download.pytorch.org/models/resnet18-f37072fd.pth on a connected machine",
                "or pass --checkpoint /path/to/resnet18-f37072fd.pth",
            ),
        ),
        (
            ["convert", "torchvision:resnet18", "--weights", "V9", "--out", "OUT"],
            ("--checkpoint takes a local checkpoint file",),
        ),
        (
            ["predict", "IMG", "--model", "clip_vit_b32", "--labels", "a cat,a dog"],
            (
                "could not fetch clip_vit_b32.openai: openaipublic.azureedge.net is unreachable",
                "/home/.cache/clip/ViT-B-32.pt or pass --model clip_vit_b32 --pretrained "
                "/path/to/ViT-B-32.pt",
            ),
        ),
    ],
    ids=[
        "unknown-tag",
        "missing-file",
        "empty-folder",
        "tag-and-path",
        "offline-timm",
        "offline-torchvision",
        "convert-offline",
        "convert-unknown-tag",
        "offline-clip",
    ],
)
def test_pretrained_errors_speak_cli(tmp_path, capsys, no_network, argv, matches):
    """Weights errors on the command line: one line, in the command's own syntax."""
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    (tmp_path / "empty").mkdir()
    subst = {"IMG": str(tmp_path / "img.png"), "OUT": str(tmp_path / "out")}
    subst["EMPTY"] = str(tmp_path / "empty")
    code, out, err = run(capsys, *[subst.get(a, a) for a in argv])
    assert code == 2 and not out
    assert err.startswith("flaxcnn: error: ") and len(err.strip().splitlines()) == 1
    for match in matches:
        assert match in err
    assert "pretrained=" not in err and "list_models" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


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
        (
            ["convert", "openai:ViT-B/32", "--out", "OUT"],
            "CLIP weights convert on first use and are cached in",
        ),
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


def test_predict_preprocessing_for_local_weights(tmp_path, capsys):
    """Recorded with the weights, else the model's default tag's, else ImageNet's usual."""
    cfg = flaxcnn.get_pretrained_cfg("resnet18.a1_in1k")
    pretrained.save_converted(
        tmp_path / "o", "resnet18", {}, {}, {"pretrained_cfg": dataclasses.asdict(cfg)}
    )
    assert cli._preprocessing("resnet18", tmp_path / "o", 1000) == cfg
    assert capsys.readouterr().err == ""
    assert cli._preprocessing("resnet18", tmp_path / "r18.pth", 1000) == (
        flaxcnn.get_pretrained_cfg("resnet18")
    )
    assert "using resnet18.IMAGENET1K_V1's" in capsys.readouterr().err
    lite = cli._preprocessing("efficientnet_lite1", tmp_path / "lite1.pth", 1000)
    assert (lite.input_size, lite.resize_size, lite.interpolation) == (
        (240, 240, 3),
        274,
        "bilinear",
    )
    assert lite.mean == (0.485, 0.456, 0.406) and lite.std == (0.229, 0.224, 0.225)
    assert "using ImageNet's usual (274 px, crop 240x240, bilinear)" in capsys.readouterr().err


# -- Zero-shot with a CLIP model: predict --labels --


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    """A converted folder of a random, narrow two-block CLIP ViT-B/32 (its config.json
    records the narrower fields, so ``--pretrained`` rebuilds that module) and two images."""
    d = tmp_path_factory.mktemp("clip")
    config = dict(
        vision_layers=2, vision_width=64, transformer_layers=2, transformer_width=64,
        transformer_heads=1, embed_dim=32,
    )  # fmt: skip
    module = flaxcnn.create_model("clip_vit_b32", **config)
    shapes = jax.eval_shape(module.init, jax.random.key(0), *module.example_inputs())
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        if path[-1].key == "logit_scale":
            return np.float32(np.log(100.0))  # OpenAI's released value
        return (rng.standard_normal(leaf.shape) * 0.05).astype(np.float32)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    pretrained.save_converted(d / "clip", "clip_vit_b32", config, variables)
    Image.fromarray(skimage.data.chelsea()).save(d / "cat.jpg")
    Image.fromarray(skimage.data.astronaut()).save(d / "astronaut.png")
    return SimpleNamespace(dir=d, module=module, variables=variables)


def _ranked(out: str) -> dict[str, list[tuple[str, float]]]:
    """``{image: [(label, probability), ...]}`` from predict's output."""
    ranked, image = {}, None
    for line in out.splitlines():
        if not line.startswith("  "):
            image = line
            ranked[image] = []
            continue
        pct, _index, label = line.split(maxsplit=2)
        ranked[image].append((label, float(pct.rstrip("%")) / 100))
    return ranked


def test_predict_zero_shot(small_clip, capsys, monkeypatch):
    """The issue's command: every label ranked by CLIP's zero-shot probability, exactly as
    the softmax of the model's own logits_per_image."""
    from flaxcnn.clip import tokenize
    from flaxcnn.preprocess import preprocess

    monkeypatch.chdir(small_clip.dir)
    labels = ["a cat", "a dog", "a chainsaw"]
    images = ["cat.jpg", "astronaut.png"]
    code, out, err = run(
        capsys, "predict", *images, "--model", "clip_vit_b32", "--labels", "a cat, a dog,a chainsaw",
        "--pretrained", "clip",
    )  # fmt: skip
    assert code == 0, err
    assert err == "flaxcnn: note: clip records no preprocessing; using clip_vit_b32.openai's\n"

    batch = np.stack([preprocess(Image.open(small_clip.dir / i), "clip_vit_b32") for i in images])
    logits, _ = jax.jit(small_clip.module.apply)(small_clip.variables, batch, tokenize(labels))
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    ranked = _ranked(out)
    assert list(ranked) == images
    for image, row in zip(images, probs, strict=True):
        got = ranked[image]
        assert [label for label, _ in got] == [labels[i] for i in np.argsort(-row)]
        assert sum(p for _, p in got) == pytest.approx(1, abs=1e-4 * len(labels))
        np.testing.assert_allclose([p for _, p in got], np.sort(row)[::-1], atol=6e-5)
    # The ranking is unambiguous at the printed precision (no near-ties in this model).
    assert (np.diff(np.sort(probs, axis=1)) > 1e-3).all()


def test_labels_file(tmp_path):
    """One label per line, commas allowed, blank lines skipped; the same checks as --labels."""
    f = tmp_path / "labels.txt"
    f.write_text("a cat\n\n  an astronaut, in space \nsushi\n\n", encoding="utf-8")
    args = cli.argparse.Namespace(labels=None, labels_file=str(f))
    assert cli._read_labels(args) == ["a cat", "an astronaut, in space", "sushi"]
    f.write_text("a cat\nsushi\na cat\n")
    with pytest.raises(cli.CliError, match=f"{f} repeats 'a cat'"):
        cli._read_labels(args)
    f.write_text("\n\n")
    with pytest.raises(cli.CliError, match="holds no labels"):
        cli._read_labels(args)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (
            ["--model", "resnet18", "--labels", "a cat,a dog"],
            "--labels needs a CLIP model (clip_rn50, clip_rn50x4,",
        ),
        (
            ["--model", "clip_vit_b32"],
            "clip_vit_b32 classifies zero-shot among texts: pass --labels",
        ),
        (["--model", "clip_vit_b32", "--labels", "a cat,,a dog"], "empty label (position 2)"),
        (["--model", "clip_vit_b32", "--labels", "a cat,a cat"], "repeats 'a cat'"),
        (["--model", "clip_vit_b32", "--labels-file", "nothere.txt"], "cannot read --labels-file"),
        (
            ["--model", "clip_vit_b32", "--labels", "a cat", "--pretrained", "IMAGENET1K_V1"],
            "unknown weight tag for clip_vit_b32 'IMAGENET1K_V1'; its tags: openai,",
        ),
    ],
)
def test_predict_zero_shot_errors(tmp_path, capsys, no_network, argv, match):
    """Refused in one line before any weights are fetched or converted."""
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    code, out, err = run(capsys, "predict", str(tmp_path / "img.png"), *argv)
    assert code == 2 and not out
    assert err.startswith("flaxcnn: error: ") and len(err.strip().splitlines()) == 1
    assert match in err
    assert not (tmp_path / "cache").exists()
