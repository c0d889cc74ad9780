"""Eval preprocessing matches torchvision's and timm's transforms on real photos."""

import numpy as np
import pytest
import skimage.data
import timm
import torchvision
from PIL import Image

from flaxcnn.preprocess import decode_predictions, preprocess

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
