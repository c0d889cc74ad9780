"""Per-pixel training pieces: loss with an ignore label, confusion-matrix metrics, toy data.

* :func:`cross_entropy` is ``torch.nn.functional.cross_entropy(..., ignore_index=255)``
  on NHWC logits: the mean over labelled pixels only (Pascal VOC marks object
  boundaries 255).
* :func:`segmentation_loss` adds an auxiliary map's loss with weight 0.5, as the
  torchvision reference scripts train FCN/DeepLab (``{'out', 'aux'}`` outputs).
* :func:`confusion_matrix` accumulates over batches (jit-friendly); :func:`mean_iou` and
  :func:`pixel_accuracy` read it, as the torchvision references' ``ConfusionMatrix`` does.
* :func:`make_shapes_dataset` draws a small synthetic set (discs, squares, triangles on
  textured backgrounds, with an ignore band on object outlines), deterministic from a
  seed, for training a segmentation net in CPU minutes.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "IGNORE_INDEX",
    "SHAPE_CLASSES",
    "confusion_matrix",
    "cross_entropy",
    "make_shapes_dataset",
    "mean_iou",
    "pixel_accuracy",
    "segmentation_loss",
]

IGNORE_INDEX = 255
SHAPE_CLASSES = ("background", "disc", "square", "triangle")


def cross_entropy(
    logits: jax.Array, labels: jax.Array, *, ignore_index: int = IGNORE_INDEX
) -> jax.Array:
    """Mean softmax cross-entropy over the pixels whose label is not ``ignore_index``.

    Args:
        logits: ``(N, H, W, C)``; computed in float32 whatever their dtype.
        labels: ``(N, H, W)`` integer classes in ``[0, C)`` or ``ignore_index``.

    Returns:
        A scalar; 0 when every pixel is ignored (torch returns nan there).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree: expected "
            "logits (N, H, W, C) and labels (N, H, W)"
        )
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0).astype(jnp.int32)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def segmentation_loss(
    outputs: jax.Array | Mapping[str, jax.Array],
    labels: jax.Array,
    *,
    aux_weight: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> jax.Array:
    """Cross-entropy of a model's per-pixel output: ``loss(out) + aux_weight * loss(aux)``.

    ``outputs`` is an NHWC logit map (U-Net) or a dict with ``'out'`` and optionally
    ``'aux'`` (FCN), at the labels' resolution.
    """
    if not isinstance(outputs, Mapping):
        return cross_entropy(outputs, labels, ignore_index=ignore_index)
    loss = cross_entropy(outputs["out"], labels, ignore_index=ignore_index)
    if "aux" in outputs:
        loss = loss + aux_weight * cross_entropy(outputs["aux"], labels, ignore_index=ignore_index)
    return loss


def confusion_matrix(
    preds: jax.Array, labels: jax.Array, num_classes: int, *, ignore_index: int = IGNORE_INDEX
) -> jax.Array:
    """``(num_classes, num_classes)`` int32 counts, rows true class, columns predicted.

    Pixels labelled ``ignore_index`` (or outside ``[0, num_classes)``) are not counted.
    Sum the matrices of several batches, then read :func:`mean_iou` / :func:`pixel_accuracy`.
    """
    labels = labels.reshape(-1).astype(jnp.int32)
    preds = preds.reshape(-1).astype(jnp.int32)
    valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    index = jnp.where(valid, labels * num_classes + preds, num_classes * num_classes)
    counts = jnp.bincount(index, length=num_classes * num_classes + 1)[:-1]
    return counts.reshape(num_classes, num_classes).astype(jnp.int32)


def mean_iou(confusion: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(mean IoU, per-class IoU)``; classes absent from labels and predictions are
    left out of the mean (their IoU is nan)."""
    c = confusion.astype(jnp.float32)
    tp = jnp.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    iou = jnp.where(union > 0, tp / jnp.maximum(union, 1.0), jnp.nan)
    return jnp.nanmean(iou), iou


def pixel_accuracy(confusion: jax.Array) -> jax.Array:
    """Fraction of counted pixels predicted correctly."""
    c = confusion.astype(jnp.float32)
    return jnp.trace(c) / jnp.maximum(c.sum(), 1.0)


def make_shapes_dataset(
    n: int, size: int = 64, *, seed: int = 0, ignore_band: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic segmentation set: ``(images (n, size, size, 3) float32, masks (n, size, size) uint8)``.

    Each image holds 1-3 shapes (classes of :data:`SHAPE_CLASSES`: disc, square, triangle) of
    random colour and size on a random-gradient background, plus Gaussian noise; images
    are roughly standardised (zero mean, unit variance). Later shapes occlude earlier
    ones. With ``ignore_band``, pixels within one pixel of a shape's outline are labelled
    :data:`IGNORE_INDEX`, as Pascal VOC marks object boundaries. Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = np.empty((n, size, size, 3), np.float32)
    masks = np.empty((n, size, size), np.uint8)
    for i in range(n):
        g = rng.uniform(-1, 1, 2)
        base = rng.uniform(0.2, 0.8, 3)
        ramp = (g[0] * (yy / size - 0.5) + g[1] * (xx / size - 0.5))[..., None] * 0.4
        img = base + ramp
        mask = np.zeros((size, size), np.uint8)
        band = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 4)):
            cls = int(rng.integers(1, len(SHAPE_CLASSES)))
            r = rng.uniform(0.12, 0.25) * size
            cy, cx = rng.uniform(r, size - r, 2)
            dist = _signed_distance(cls, yy - cy, xx - cx, r)
            inside = dist < 0
            img = np.where(inside[..., None], rng.uniform(0, 1, 3), img)
            mask[inside] = cls
            band = (band & ~inside) | (np.abs(dist) < 1.0)
        img = img + rng.normal(0, 0.05, img.shape)
        images[i] = (img - 0.5) / 0.3
        masks[i] = np.where(band & ignore_band, IGNORE_INDEX, mask)
    return images, masks


def _signed_distance(cls: int, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """Negative inside the shape, roughly the distance to its outline in pixels."""
    if cls == 1:  # disc
        return np.hypot(dy, dx) - r
    if cls == 2:  # axis-aligned square of half-side r * 0.85
        return np.maximum(np.abs(dy), np.abs(dx)) - 0.85 * r
    # upward equilateral triangle inscribed in the circle of radius 1.3 r (about a disc's area)
    r, s = 1.3 * r, np.sqrt(3.0) / 2
    edges = [dy - r / 2, -s * dx - dy / 2 - r / 2, s * dx - dy / 2 - r / 2]
    return np.max(edges, axis=0)
