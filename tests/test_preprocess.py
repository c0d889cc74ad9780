"""Eval preprocessing matches torchvision's and timm's transforms on real photos."""

import numpy as np
import pytest
import skimage.data
import timm
import torchvision
from PIL import Image

from flaxcnn.preprocess import CLIP_MEAN, CLIP_STD, clip_cfg, decode_predictions, preprocess

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("tag", ["IMAGENET1K_V1", "IMAGENET1K_V2"])
def test_matches_torchvision(photo, tag):
    img = getattr(skimage.data, photo)()
    ref = torchvision.models.get_model_weights("resnet50")[tag].transforms()(Image.fromarray(img))
    got = preprocess(img, f"resnet50.{tag}")
    assert got.shape == (224, 224, 3) and got.dtype == np.float32
    assert np.abs(got - ref.numpy().transpose(1, 2, 0)).max() <= 1e-3


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize(
    "tag", ["a1_in1k", "fb_ssl_yfcc100m_ft_in1k"]
)  # bicubic 0.95 / bilinear 0.875
def test_matches_timm(photo, tag):
    img = getattr(skimage.data, photo)()
    model = timm.create_model(f"resnet50.{tag}", pretrained=False)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    ref = transform(Image.fromarray(img)).numpy().transpose(1, 2, 0)
    assert np.abs(preprocess(img, f"resnet50.{tag}") - ref).max() <= 1e-3


def test_grayscale_and_float_inputs():
    gray = skimage.data.camera()  # 512 x 512 uint8, one channel
    out = preprocess(gray, "resnet18")
    assert out.shape == (224, 224, 3)
    np.testing.assert_allclose(
        preprocess(skimage.data.chelsea() / 255.0, "resnet18"),
        preprocess(skimage.data.chelsea(), "resnet18"),
        atol=1e-6,
    )


def test_bad_image():
    with pytest.raises(ValueError, match="H x W x 3"):
        preprocess(np.zeros((3, 224, 224, 2)), "resnet18")


def test_decode_predictions():
    logits = np.full((2, 1000), -5.0)
    logits[0, 281] = 10  # tabby cat
    logits[1, 504] = 8  # coffee mug
    top = decode_predictions(logits, k=3)
    assert top[0][0][:2] == (281, "tabby") and top[1][0][:2] == (504, "coffee mug")
    assert len(top[0]) == 3 and top[0][0][2] > 0.99
    assert abs(sum(p for _, _, p in decode_predictions(logits, k=1000)[0]) - 1) < 1e-9
    with pytest.raises(ValueError, match="labels for"):
        decode_predictions(np.zeros((1, 10)), labels=["a"])


# -- CLIP: OpenAI's clip.clip._transform(n_px), the `preprocess` that clip.load returns --

CLIP_SIZES = [("clip_vit_b32", 224), ("clip_rn50x4", 288), ("clip_vit_l14_336", 336)]


def _clip_transform(n_px):
    import warnings

    with warnings.catch_warnings():  # clip imports pkg_resources, deprecated in setuptools
        warnings.simplefilter("ignore")
        from clip.clip import _transform
    return _transform(n_px)


@pytest.mark.parametrize("photo", [*PHOTOS, "page"])  # page: 191 x 384 grey, upsampled
@pytest.mark.parametrize(("name", "n_px"), CLIP_SIZES)
def test_matches_openai_clip(photo, name, n_px):
    img = getattr(skimage.data, photo)()
    ref = _clip_transform(n_px)(Image.fromarray(img)).numpy().transpose(1, 2, 0)
    got = preprocess(img, name)
    assert got.shape == (n_px, n_px, 3) and got.dtype == np.float32
    # Same Pillow resize and crop, same float32 arithmetic (x / 255 - mean) / std: identical.
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(preprocess(Image.fromarray(img), clip_cfg(n_px)), ref)


def test_clip_pil_modes_convert_after_the_crop():
    """CLIP converts to RGB after resizing: Pillow resizes RGBA premultiplied and palette
    images with nearest neighbour, so converting first would not be CLIP's transform."""
    cat = Image.fromarray(skimage.data.chelsea())
    rgba = cat.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(cat.size))
    ref = _clip_transform(224)
    for img in (rgba, cat.quantize(64), cat.convert("L"), cat.convert("CMYK")):
        want = ref(img).numpy().transpose(1, 2, 0)
        np.testing.assert_array_equal(preprocess(img, "clip_rn50"), want, err_msg=img.mode)
    assert (
        np.abs(
            preprocess(rgba.convert("RGB"), "clip_rn50") - ref(rgba).numpy().transpose(1, 2, 0)
        ).max()
        > 0.1
    )


def test_clip_cfg():
    cfg = clip_cfg("clip_rn50x64")
    assert cfg.input_size == (448, 448, 3) and cfg.resize_size == 448 and cfg.crop_pct == 1.0
    assert cfg.interpolation == "bicubic" and cfg.mean == CLIP_MEAN and cfg.std == CLIP_STD
    assert clip_cfg(336).input_size == clip_cfg("clip_vit_l14_336").input_size
    with pytest.raises(ValueError, match="did you mean clip_vit_b32"):
        clip_cfg("clip_vit_b23")
    with pytest.raises(ValueError, match="positive input size, got 0"):
        clip_cfg(0)
