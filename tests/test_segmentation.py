"""Segmentation loss and metrics against torch / hand counts; the synthetic shapes set."""

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from flaxcnn.segmentation import (
    IGNORE_INDEX,
    SHAPE_CLASSES,
    confusion_matrix,
    cross_entropy,
    make_shapes_dataset,
    mean_iou,
    pixel_accuracy,
    segmentation_loss,
)


def _batch(seed=0, n=2, h=9, w=13, c=5):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, h, w, c), dtype=np.float32) * 3
    labels = rng.integers(0, c, (n, h, w))
    labels[rng.random((n, h, w)) < 0.3] = IGNORE_INDEX
    return logits, labels


def test_cross_entropy_matches_torch_with_ignore_index():
    logits, labels = _batch()
    ref = F.cross_entropy(
        torch.from_numpy(logits).permute(0, 3, 1, 2), torch.from_numpy(labels), ignore_index=255
    )
    got = jax.jit(cross_entropy)(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
    # bf16 logits are promoted: the loss stays float32 and close.
    got16 = cross_entropy(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(labels))
    assert got16.dtype == jnp.float32
    np.testing.assert_allclose(float(got16), float(ref), rtol=2e-2)
    assert float(cross_entropy(jnp.asarray(logits), jnp.full(labels.shape, IGNORE_INDEX))) == 0.0


def test_segmentation_loss_adds_half_the_aux_loss():
    logits, labels = _batch(1)
    aux = logits[..., ::-1].copy()
    out = segmentation_loss({"out": jnp.asarray(logits), "aux": jnp.asarray(aux)}, labels)
    expected = cross_entropy(logits, labels) + 0.5 * cross_entropy(aux, labels)
    np.testing.assert_allclose(float(out), float(expected), rtol=1e-6)
    np.testing.assert_allclose(
        float(segmentation_loss(jnp.asarray(logits), labels)), float(cross_entropy(logits, labels))
    )


def test_confusion_matrix_and_metrics_match_hand_counts():
    logits, labels = _batch(2, c=4)
    preds = logits.argmax(-1)
    cm = np.asarray(jax.jit(confusion_matrix, static_argnums=2)(preds, labels, 4))
    ref = np.zeros((4, 4), np.int64)
    for t, p in zip(labels.ravel(), preds.ravel(), strict=True):
        if t != IGNORE_INDEX:
            ref[t, p] += 1
    np.testing.assert_array_equal(cm, ref)
    miou, iou = mean_iou(cm)
    ref_iou = np.diag(ref) / (ref.sum(0) + ref.sum(1) - np.diag(ref))
    np.testing.assert_allclose(np.asarray(iou), ref_iou, rtol=1e-6)
    np.testing.assert_allclose(float(miou), ref_iou.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(pixel_accuracy(cm)), np.trace(ref) / ref.sum(), rtol=1e-6)
    # A class absent from both labels and predictions does not drag the mean down.
    miou5, iou5 = mean_iou(np.pad(cm, ((0, 1), (0, 1))))
    assert np.isnan(iou5[4]) and np.isclose(float(miou5), float(miou))


def test_shapes_dataset_is_deterministic_and_labelled():
    x, y = make_shapes_dataset(6, 48, seed=3)
    x2, y2 = make_shapes_dataset(6, 48, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.shape == (6, 48, 48, 3) and x.dtype == np.float32
    assert y.shape == (6, 48, 48) and y.dtype == np.uint8
    assert set(np.unique(y)) <= {*range(len(SHAPE_CLASSES)), IGNORE_INDEX}
    assert set(np.unique(y)) >= {0, IGNORE_INDEX}
    assert abs(float(x.mean())) < 1.0 and 0.5 < float(x.std()) < 2.0
    _, y_no_band = make_shapes_dataset(6, 48, seed=3, ignore_band=False)
    assert IGNORE_INDEX not in y_no_band
    assert 0.02 < float((y == IGNORE_INDEX).mean()) < 0.3
