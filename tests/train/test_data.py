"""The input pipeline: the embedded digits, determinism, per-process shards, eval
padding, host preprocessing and every augmentation's shape and range."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcnn.train import augment, data
from flaxcnn.train.digits import NUM_TEST, NUM_TRAIN

INFO = data.get_dataset("digits")


@pytest.fixture(scope="module")
def sources(data_dir):
    return data.load_source(INFO, "train", data_dir), data.load_source(INFO, "test", data_dir)


def test_digits_split_is_fixed_and_disjoint(sources):
    train, test = sources
    assert (len(train), len(test)) == (NUM_TRAIN, NUM_TEST) == (1438, 359)
    ids_train = {int(train[i]["id"]) for i in range(len(train))}
    ids_test = {int(test[i]["id"]) for i in range(len(test))}
    assert not ids_train & ids_test and len(ids_train | ids_test) == 1797
    r = train[0]
    assert r["image"].shape == (8, 8, 1) and r["image"].dtype == np.uint8 and r["image"].max() <= 16


def _ids(loader, steps):
    it = iter(loader)
    return np.concatenate([next(it)["id"] for _ in range(steps)])


def test_train_order_is_deterministic_and_shards_partition_the_set(sources):
    train, _ = sources
    kw = dict(size=8, global_batch_size=2, seed=3)
    a = _ids(data.train_loader(train, INFO, **kw), 50)
    b = _ids(data.train_loader(train, INFO, **kw), 50)
    c = _ids(data.train_loader(train, INFO, **{**kw, "seed": 4}), 50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Two processes, one record each per global batch of 2: over one epoch (719 steps)
    # the shards are disjoint, cover the whole split, and interleave to the 1-process order.
    steps = NUM_TRAIN // 2
    p0 = _ids(data.train_loader(train, INFO, **kw, process_index=0, process_count=2), steps)
    p1 = _ids(data.train_loader(train, INFO, **kw, process_index=1, process_count=2), steps)
    assert not set(p0) & set(p1)
    assert set(p0) | set(p1) == {int(train[i]["id"]) for i in range(len(train))}
    one = _ids(data.train_loader(train, INFO, **kw), steps)
    np.testing.assert_array_equal(np.stack([p0, p1], 1).ravel(), one)


def test_iterator_state_resumes_exactly(sources):
    train, _ = sources
    it = iter(data.train_loader(train, INFO, size=8, global_batch_size=16, seed=0))
    for _ in range(3):
        next(it)
    state = it.get_state()
    want = next(it)["id"]
    it2 = iter(data.train_loader(train, INFO, size=8, global_batch_size=16, seed=0))
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["id"], want)


def test_eval_batches_cover_the_split_once_with_padding_masked(sources):
    _, test = sources
    for count in (1, 2):
        n = 0
        for pid in range(count):
            batches = list(
                data.eval_batches(
                    test,
                    INFO,
                    size=32,
                    global_batch_size=48,
                    process_index=pid,
                    process_count=count,
                )
            )
            assert len(batches) == 8  # ceil(359 / 48) for every process
            for b in batches:
                assert b["image"].shape == (48 // count, 32, 32, 1)
                n += int(b["mask"].sum())
        assert n == NUM_TEST


def test_preprocess_pads_digits_and_centre_crops_others():
    img = np.full((8, 8, 1), 16, np.uint8)
    out = data.preprocess(img, INFO, 32, train=False)
    assert out.shape == (32, 32, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[2:30, 2:30], 1.0, atol=1e-6)  # 8 -> 28, padded by 2
    assert out[:2].max() == 0 and out[:, 30:].max() == 0
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    cifar = data.get_dataset("cifar10")
    ev = data.preprocess(rgb, cifar, 32, train=False, crop_pct=0.875)
    tr = data.preprocess(rgb, cifar, 32, train=True)
    assert ev.shape == tr.shape == (32, 32, 3)
    assert ev.min() >= 0 and ev.max() <= 1


def test_folder_dataset(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / split / label / "a.png")
    src = data.load_source(data.get_dataset("folder"), "train", str(tmp_path))
    assert len(src) == 2 and src.classes == ["cat", "dog"]
    assert src[1]["label"] == 1 and src[1]["image"].shape == (10, 20, 3)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"cifar10.*digits"):
        data.get_dataset("svhn")


X = jax.random.uniform(jax.random.key(0), (6, 12, 10, 3))
Y = jax.nn.one_hot(jnp.arange(6) % 3, 3)
KEY = jax.random.key(1)


@pytest.mark.parametrize(
    "fn",
    [
        augment.random_resized_crop,
        augment.hflip,
        augment.color_jitter,
        augment.gaussian_noise,
        lambda k, x: augment.random_erasing(k, x, p=1.0),
        lambda k, x: augment.augment_batch(
            k,
            x,
            {
                "crop_scale_min": 0.3,
                "hflip": True,
                "color_jitter": 0.4,
                "noise_std": 0.1,
                "erase_prob": 0.5,
            },
        ),
    ],
    ids=["rrc", "hflip", "jitter", "noise", "erasing", "all"],
)
def test_augmentation_shape_and_range(fn):
    out = fn(KEY, X)
    assert out.shape == X.shape and out.dtype == X.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6
    assert not np.allclose(out, X)


def test_hflip_mirrors_and_full_crop_is_identity():
    flipped = augment.hflip(KEY, X, p=1.0)
    np.testing.assert_array_equal(flipped, X[:, :, ::-1])
    same = augment.random_resized_crop(KEY, X, scale=(1.0, 1.0), ratio=(1.2, 1.2))
    assert same.shape == X.shape


@pytest.mark.parametrize("pad", [1, 4])
def test_translate_is_torchvisions_pad_and_crop(pad):
    """He et al.'s CIFAR augmentation: zero-pad by ``pad``, crop back at (top, left) --
    torchvision.transforms.v2.functional's ``crop(pad(img, pad), top, left, h, w)`` at the
    same offsets, exactly; and the random offsets differ per image and are reproducible
    from the key."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    b, h, w = X.shape[:3]
    offsets = np.stack([np.arange(b) % (2 * pad + 1), (3 * np.arange(b)) % (2 * pad + 1)], 1)
    out = augment.translate(X, jnp.asarray(offsets), pad)
    for i, (top, left) in enumerate(offsets):
        img = torch.from_numpy(np.asarray(X[i]).transpose(2, 0, 1).copy())
        ref = TF.crop(TF.pad(img, [pad]), int(top), int(left), h, w)
        np.testing.assert_array_equal(out[i], ref.numpy().transpose(1, 2, 0))
    np.testing.assert_array_equal(augment.translate(X, jnp.full((b, 2), pad), pad), X)
    big = jnp.tile(X, (8, 1, 1, 1))
    moved = augment.random_translate(KEY, big, pad)
    assert moved.shape == big.shape
    seen = set()
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            shifted = augment.translate(big, jnp.tile(jnp.array([[dy, dx]]), (len(big), 1)), pad)
            hits = np.all(np.asarray(shifted) == np.asarray(moved), axis=(1, 2, 3))
            seen |= {(dy, dx)} if hits.any() else set()
    assert len(seen) > 2
    np.testing.assert_array_equal(augment.random_translate(KEY, big, pad)[:4], moved[:4])


@pytest.mark.parametrize("fn", [augment.mixup, augment.cutmix])
def test_mixup_cutmix_targets_stay_distributions(fn):
    x, y = fn(KEY, X, Y)
    assert x.shape == X.shape and y.shape == Y.shape
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)


def test_import_flaxcnn_does_not_load_the_trainer():
    import subprocess
    import sys

    heavy = [
        "tensorflow_datasets",
        "grain",
        "orbax",
        "optax",
        "torch",
        "matplotlib",
        "flaxcnn.train",
    ]
    code = f"import sys, flaxcnn; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
