"""The embedded segmentation set: synthetic shapes with per-pixel masks, as a tfds dataset.

:func:`flaxcnn.segmentation.make_shapes_dataset` draws 64x64 RGB images of 1-3 discs,
squares and triangles on gradient backgrounds; the mask gives each pixel its class
(0 background, 1 disc, 2 square, 3 triangle) or 255 (ignored) on a one-pixel band along
every outline. The splits are fixed: ``train`` is the first 1,000 images drawn with seed 0,
``test`` 200 drawn with seed 1, so preparing needs no network and gives the same files on
every machine.

Features are ``tfds.features.Tensor`` (uint8 ``(64, 64, 3)`` image, uint8 ``(64, 64)``
mask, int64 id), which tfds writes and reads without TensorFlow, as for the digits.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from flaxcnn.segmentation import SHAPE_CLASSES, make_shapes_dataset

__all__ = ["SIZE", "SPLITS", "Shapes"]

SIZE = 64
SPLITS = {"train": (1000, 0), "test": (200, 1)}  # split -> (images, seed)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """``make_shapes_dataset``'s standardised images ``(x - 0.5) / 0.3`` back to 8-bit RGB
    (the trainer normalises on device, from [0, 1], as for every other dataset)."""
    return np.round(np.clip(images * 0.3 + 0.5, 0.0, 1.0) * 255).astype(np.uint8)


class Shapes(tfds.core.GeneratorBasedBuilder):
    """tfds builder for the synthetic shapes (name ``flaxcnn_shapes``)."""

    name = "flaxcnn_shapes"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "64x64 RGB, 4 classes + ignore band; train 1,000 (seed 0), test 200 (seed 1)."
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Synthetic shapes with masks (classes: " + ", ".join(SHAPE_CLASSES) + "; "
                "255 = ignore), from flaxcnn.segmentation.make_shapes_dataset."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(SIZE, SIZE, 3), dtype=np.uint8),
                    "mask": tfds.features.Tensor(shape=(SIZE, SIZE), dtype=np.uint8),
                    "id": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "mask"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(n, seed) for split, (n, seed) in SPLITS.items()}

    def _generate_examples(self, n: int, seed: int):
        images, masks = make_shapes_dataset(n, SIZE, seed=seed)
        images = to_uint8(images)
        for i in range(n):
            yield i, {"image": images[i], "mask": masks[i], "id": i}
