"""Input pipeline: tfds data sources (ArrayRecord) read by grain, sharded per process.

Every dataset is a random-access source (``tfds.data_source`` over ArrayRecord files, or a
folder of images), read by a ``grain.DataLoader``: a seeded ``IndexSampler`` (the same order
on every run; process ``i`` of ``n`` reads records ``i, i+n, ...`` of each epoch's
permutation, disjoint across processes), per-example preprocessing on the host, then
batching. The loader's iterator state goes into the checkpoint (see ``checkpoint.py``).

Host preprocessing only makes every image float32 in [0, 1] at the model's input size;
augmentation and normalisation run on device (``augment.py``), inside the jitted step.

Segmentation datasets (``task == 'segmentation'``, the embedded ``shapes``) carry a
per-pixel ``mask`` instead of a ``label``: the image is resized bilinearly and the mask by
nearest neighbour to ``size x size``, in training and evaluation alike (no centre crop: the
metrics cover the whole image), and the batch's ``label`` is the ``(B, size, size)`` int32
mask (255 = ignore).

Digits are 8x8: they are resized bilinearly to 28x28 and zero-padded to 32x32, the way
LeNet-5's paper fed 28x28 MNIST digits into its 32x32 input, so strokes stay away from the
border the 5x5 convs cannot centre on. For other sizes the same 7/8 ratio is kept.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grain
import numpy as np
from PIL import Image

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "eval_batches",
    "get_dataset",
    "load_source",
    "preprocess",
    "preprocess_segmentation",
    "train_loader",
]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a named dataset.

    Attributes:
        name: the name configs use (``digits``, ``mnist``, ``cifar10``, ...).
        tfds_name: the tfds builder name (``None`` for an image folder).
        num_classes, in_chans: label count and image channels.
        train_split, eval_split: split names.
        max_value: pixel value that maps to 1.0 (16 for digits, 255 for 8-bit images).
        mean, std: per-channel normalisation on [0, 1] images.
        fit: ``'pad'`` (resize to 7/8 of the side and zero-pad, small digits) or ``'crop'``
            (train: resize; eval: resize to ``size / crop_pct`` and centre-crop).
        needs: how to obtain it, for error messages.
        task: ``'classification'`` (a ``label`` per image) or ``'segmentation'`` (a ``mask``
            per image: a class per pixel, 255 ignored).
    """

    name: str
    tfds_name: str | None
    num_classes: int
    in_chans: int
    train_split: str = "train"
    eval_split: str = "test"
    max_value: float = 255.0
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    fit: str = "crop"
    needs: str = ""
    task: str = "classification"


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_TF_NOTE = (
    "tfds prepares it from the internet into data_dir, which needs TensorFlow for its "
    "Image features (`pip install tensorflow`, once); reading the prepared ArrayRecord "
    "files afterwards does not"
)

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "digits", "flaxcnn_digits", 10, 1, max_value=16.0, mean=(0.13,), std=(0.3,), fit="pad",
            needs="embedded (scikit-learn's bundled digits), prepared offline on first use",
        ),
        # Train split on [0, 1]: per-channel mean 0.496-0.499, std 0.220-0.222 (measured).
        DatasetInfo(
            "shapes", "flaxcnn_shapes", 4, 3, mean=(0.5, 0.5, 0.5), std=(0.22, 0.22, 0.22),
            needs="embedded (synthetic shapes with masks), prepared offline on first use",
            task="segmentation",
        ),
        DatasetInfo(
            "mnist", "mnist", 10, 1, mean=(0.1307,), std=(0.3081,), fit="pad", needs=_TF_NOTE
        ),
        DatasetInfo(
            "cifar10", "cifar10", 10, 3, mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616), needs=_TF_NOTE,
        ),
        DatasetInfo(
            "cifar100", "cifar100", 100, 3, mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762), needs=_TF_NOTE,
        ),
        DatasetInfo(
            "imagenet2012", "imagenet2012", 1000, 3, eval_split="validation",
            mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
            needs="download ILSVRC2012 tars yourself into `manual_dir`; then " + _TF_NOTE,
        ),
        DatasetInfo(
            "folder", None, 0, 3, eval_split="val", mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
            needs="a directory `root/<split>/<label>/*.jpg` given as data_dir",
        ),
    ]
}  # fmt: skip


def get_dataset(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a named dataset; unknown names list the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; set config.dataset to one of {sorted(DATASETS)}"
        ) from None


def default_data_dir() -> str:
    """``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``, as tfds itself."""
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


class FolderSource:
    """Random-access source over ``root/<split>/<label>/*`` image files (labels sorted)."""

    EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

    def __init__(self, root: str | os.PathLike, split: str):
        base = Path(root) / split
        if not base.is_dir():
            raise FileNotFoundError(
                f"image folder {base} not found (expected root/<split>/<label>/*.jpg)"
            )
        self.classes = sorted(p.name for p in base.iterdir() if p.is_dir())
        self.files = [
            (str(f), i)
            for i, c in enumerate(self.classes)
            for f in sorted((base / c).iterdir())
            if f.suffix.lower() in self.EXTENSIONS
        ]
        if not self.files:
            raise FileNotFoundError(f"no images under {base}/<label>/")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, label = self.files[i]
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        return {"image": image, "label": label, "id": i}


def load_source(
    info: DatasetInfo, split: str, data_dir: str | None = None, manual_dir: str | None = None
):
    """The random-access source of a split, preparing the embedded sets on first use."""
    if info.tfds_name is None:
        if not data_dir:
            raise ValueError(
                "the folder dataset needs config.data_dir = root of root/<split>/<label>/*.jpg"
            )
        return FolderSource(data_dir, split)
    import tensorflow_datasets as tfds

    data_dir = data_dir or default_data_dir()
    embedded = _embedded_builder(info.name)
    if embedded is not None:
        tfds.display_progress_bar(False)
        builder = embedded(data_dir=data_dir, file_format="array_record")
    else:
        builder = tfds.builder(info.tfds_name, data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        if embedded is None and not _can_prepare():
            raise RuntimeError(f"dataset {info.name!r} is not prepared in {data_dir}: {info.needs}")
        # The embedded sets are built locally: never ask tfds to look for a copy on GCS.
        config = tfds.download.DownloadConfig(
            manual_dir=manual_dir, try_download_gcs=embedded is None
        )
        builder.download_and_prepare(download_config=config)
    return builder.as_data_source(split=split)


def _embedded_builder(name: str):
    """The tfds builder class of an embedded dataset (prepared offline), else ``None``."""
    if name == "digits":
        from .digits import Digits

        return Digits
    if name == "shapes":
        from .shapes import Shapes

        return Shapes
    return None


def _can_prepare() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 HWC image (PIL, per channel, antialiased on downscale)."""
    if image.shape[:2] == size:
        return image
    chans = [
        np.asarray(Image.fromarray(image[:, :, c], mode="F").resize(size[::-1], Image.BILINEAR))
        for c in range(image.shape[2])
    ]
    return np.stack(chans, axis=-1)


def preprocess(
    image: np.ndarray, info: DatasetInfo, size: int, *, train: bool, crop_pct: float = 0.875
) -> np.ndarray:
    """One image to float32 ``(size, size, C)`` in [0, 1]: pad (digits) or resize/centre-crop."""
    x = image.astype(np.float32) / info.max_value
    if x.ndim == 2:
        x = x[:, :, None]
    if info.fit == "pad":
        inner = round(size * 7 / 8)
        lo = (size - inner) // 2
        out = np.zeros((size, size, x.shape[2]), np.float32)
        out[lo : lo + inner, lo : lo + inner] = _resize(x, (inner, inner))
        return out
    if train:
        return _resize(x, (size, size))
    h, w = x.shape[:2]
    scale = size / crop_pct / min(h, w)
    x = _resize(x, (max(size, round(h * scale)), max(size, round(w * scale))))
    top, left = (x.shape[0] - size) // 2, (x.shape[1] - size) // 2
    return x[top : top + size, left : left + size]


def preprocess_segmentation(
    image: np.ndarray, mask: np.ndarray, info: DatasetInfo, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """An image and its mask at ``(size, size)``: float32 image in [0, 1] (bilinear), int32
    mask (nearest neighbour, so every pixel keeps a real class or the ignore label)."""
    x = image.astype(np.float32) / info.max_value
    if x.ndim == 2:
        x = x[:, :, None]
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.shape != (size, size):
        mask = np.asarray(
            Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.NEAREST)
        )
    return _resize(x, (size, size)), mask.astype(np.int32)


def _loader(source, info: DatasetInfo, size: int, *, train: bool, crop_pct: float = 0.875):
    """Local indices -> a batch dict (images preprocessed on the host). ``label`` is ``(B,)``
    for classification, the ``(B, size, size)`` masks for segmentation."""
    seg = info.task == "segmentation"

    def example(r) -> tuple[np.ndarray, Any]:
        if seg:
            return preprocess_segmentation(np.asarray(r["image"]), r["mask"], info, size)
        image = preprocess(np.asarray(r["image"]), info, size, train=train, crop_pct=crop_pct)
        return image, r["label"]

    def load(indices: np.ndarray) -> dict[str, np.ndarray]:
        records = [source[int(i)] for i in indices]
        pairs = [example(r) for r in records]
        if not pairs:  # a process with no rows left in the last eval batch
            images = np.zeros((0, size, size, info.in_chans), np.float32)
        else:
            images = np.stack([p[0] for p in pairs])
        label_shape = (size, size) if seg else ()
        return {
            "image": images,
            "label": np.array([p[1] for p in pairs], np.int32).reshape(-1, *label_shape),
            "id": np.array([r.get("id", -1) for r in records], np.int64),
        }

    return load


def _process_slice(process_index: int, process_count: int, global_batch: int):
    if global_batch % process_count:
        raise ValueError(f"batch {global_batch} is not divisible by {process_count} processes")
    n = global_batch // process_count
    return lambda idx: idx[process_index * n : (process_index + 1) * n]


def train_loader(
    source,
    info: DatasetInfo,
    *,
    size: int,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """Endless shuffled training batches; this process's rows of every global batch.

    The record order is one seeded permutation per epoch (grain reshuffles each repeat) cut
    into global batches; process ``i`` of ``n`` reads and preprocesses only rows
    ``[i * B/n, (i + 1) * B/n)`` of each. The global batches, hence the training, are the
    same for any number of processes. ``iter(...)`` gives an iterator whose
    ``get_state()``/``set_state()`` the checkpoint saves.
    """
    return (
        grain.MapDataset.range(len(source))
        .shuffle(seed=seed)
        .repeat(None)
        .batch(global_batch_size, drop_remainder=True)
        .map(_process_slice(process_index, process_count, global_batch_size))
        .map(_loader(source, info, size, train=True))
        .to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    )


def eval_batches(
    source,
    info: DatasetInfo,
    *,
    size: int,
    global_batch_size: int,
    crop_pct: float = 0.875,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass over the split as full batches with a ``mask`` (False = padding).

    Every process yields the same number of batches (the last one padded), so the
    collectives in the eval step never wait for a process that has run out.
    """
    n = len(source)
    local = global_batch_size // process_count
    padded = math.ceil(n / global_batch_size) * global_batch_size
    ds = (
        grain.MapDataset.range(padded)
        .batch(global_batch_size)
        .map(_process_slice(process_index, process_count, global_batch_size))
        .map(lambda idx: idx[idx < n])
        .map(_loader(source, info, size, train=False, crop_pct=crop_pct))
    )
    for i in range(len(ds)):
        batch = ds[i]
        k = len(batch["label"])
        yield {
            "image": _pad_rows(batch["image"], local),
            "label": _pad_rows(batch["label"], local),
            "mask": np.arange(local) < k,
        }


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    """Zero rows appended along the batch axis up to ``n``."""
    return np.pad(a, [(0, n - len(a))] + [(0, 0)] * (a.ndim - 1))
