"""The embedded default dataset: scikit-learn's handwritten digits as a tfds dataset.

1,797 real 8x8 grayscale images (values 0..16) of the digits 0-9 (the UCI "Optical
Recognition of Handwritten Digits" test set, bundled inside scikit-learn, so preparing it
needs no network). The split is fixed: per class, a seeded permutation puts round(20%) of
the images in ``test``: 1,438 train and 359 test images.

Features are ``tfds.features.Tensor`` (uint8 ``(8, 8, 1)`` image, int64 label) rather than
``tfds.features.Image``: encoding PNGs would need TensorFlow, tensors do not, and the
ArrayRecord files are written and read without it.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["Digits"]

NUM_TRAIN = 1438
NUM_TEST = 359


def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Stratified 80/20 split, the same on every machine."""
    from sklearn.datasets import load_digits

    y = load_digits().target
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(len(idx) * 0.2)
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.array(train)), np.sort(np.array(test))


class Digits(tfds.core.GeneratorBasedBuilder):
    """tfds builder for ``sklearn.datasets.load_digits`` (name ``flaxcnn_digits``)."""

    name = "flaxcnn_digits"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "8x8 uint8 images 0..16, stratified 80/20 split (seed 0)."
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn's bundled handwritten digits (8x8, 0..16 grey levels).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    # Index into sklearn's array: lets tests check shards and order.
                    "id": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
        )

    def _split_generators(self, dl_manager):
        train, test = _split_indices()
        return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

    def _generate_examples(self, indices: np.ndarray):
        from sklearn.datasets import load_digits

        d = load_digits()
        for i in indices:
            image = d.images[i].astype(np.uint8)[:, :, None]
            yield int(i), {"image": image, "label": int(d.target[i]), "id": int(i)}
