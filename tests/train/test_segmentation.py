"""Segmentation in the trainer: a tiny padded U-Net on the embedded shapes trains, resumes
exactly and is evaluated by a confusion matrix equal to numpy's; dict outputs with an
auxiliary map; masks follow the crop and the flip; task mismatches fail at start-up."""

import json

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxcnn.segmentation import IGNORE_INDEX, make_shapes_dataset, segmentation_loss
from flaxcnn.train import augment, data, loop, steps


def _numpy_confusion(preds, labels, num_classes):
    valid = labels != IGNORE_INDEX
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels[valid], preds[valid]), 1)
    return cm


def _numpy_metrics(cm):
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    return np.mean(tp[union > 0] / union[union > 0]), tp.sum() / cm.sum()


def test_unet_trains_resumes_exactly_and_eval_metrics_equal_numpy(seg_config, tmp_path):
    """8 devices, flip on; 2 steps, a checkpoint after each; the test split (200) in eval
    batches of 48 (the last one padded)."""
    overrides = {"num_steps": 2, "checkpoint_every_steps": 1}
    full = loop.train(seg_config(str(tmp_path / "full"), **overrides))
    part = seg_config(str(tmp_path / "part"), **overrides)
    assert loop.train(part, stop_at=1)["step"] == 1
    resumed = loop.train(part, resume=True)
    got, want = (
        steps.to_host((r["state"].params, r["state"].batch_stats, r["state"].opt_state))
        for r in (resumed, full)
    )
    chex.assert_trees_all_equal(got, want)
    rows = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"eval_loss", "miou", "pixel_accuracy", "train_accuracy"} <= set(rows[-1])
    assert "top1" not in rows[-1] and (tmp_path / "full" / "curves.png").is_file()

    # The same predictions, taken batch by batch on the same mesh, counted by numpy.
    s = loop.setup(part)
    state = full["state"]
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    @jax.jit
    def predict(x):
        x = (x - jnp.asarray(s.info.mean)) / jnp.asarray(s.info.std)
        return jnp.argmax(s.model.apply(variables, x), -1)

    preds, labels = [], []
    for b in data.eval_batches(
        s.eval_source, s.info, size=part.image_size, global_batch_size=part.eval_batch_size
    ):
        preds.append(np.asarray(predict(steps.shard_batch({"x": b["image"]}, s.mesh)["x"])))
        labels.append(np.where(b["mask"][:, None, None], b["label"], IGNORE_INDEX))
    cm = _numpy_confusion(np.concatenate(preds), np.concatenate(labels), 4)
    miou, pixel_acc = _numpy_metrics(cm)
    assert full["miou"] == pytest.approx(miou, rel=1e-6, abs=1e-7)
    assert full["pixel_accuracy"] == pytest.approx(pixel_acc, rel=1e-6)
    ev = loop.evaluate_checkpoint(part, str(tmp_path / "full" / "checkpoints"))
    assert (ev["miou"], ev["pixel_accuracy"]) == (full["miou"], full["pixel_accuracy"])


class _TwoHeads(nn.Module):
    """FCN-shaped outputs: ``{'out', 'aux'}`` per-pixel logits, with BatchNorm."""

    num_classes: int = 4

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        h = nn.Conv(4, (3, 3), name="conv")(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(h))
        return {
            "out": nn.Conv(self.num_classes, (1, 1), name="head")(h),
            "aux": nn.Conv(self.num_classes, (1, 1), name="aux")(h),
        }


def test_dict_outputs_aux_weight_and_eval_confusion_over_eight_devices():
    images, masks = make_shapes_dataset(16, 16, seed=5)
    images = np.clip(images * 0.3 + 0.5, 0, 1).astype(np.float32)
    batch = {"image": images, "label": masks.astype(np.int32)}
    model, mesh = _TwoHeads(), steps.make_mesh()
    tx = optax.sgd(0.1)
    cfg = steps.StepConfig(num_classes=4, aux_loss_weight=0.7, task="segmentation")
    state = steps.create_train_state(model, tx, jax.random.key(0), (1, 16, 16, 3), mesh)
    v0 = steps.to_host({"params": state.params, "batch_stats": state.batch_stats})
    x = (images - 0.5) / 0.5
    out, _ = model.apply(v0, x, train=True, mutable=["batch_stats"])
    want = segmentation_loss(out, batch["label"], aux_weight=0.7)
    train_step = steps.make_train_step(model, tx, cfg, mesh)
    state, m = train_step(state, steps.shard_batch(batch, mesh), jax.random.key(1))
    assert float(m["loss"]) == pytest.approx(float(want), rel=1e-5)

    # Eval: rows 13-15 are padding; the confusion matrix is numpy's, exactly.
    eval_step = steps.make_eval_step(model, cfg, mesh)
    keep = np.arange(16) < 13
    res = steps.to_host(eval_step(state, steps.shard_batch({**batch, "mask": keep}, mesh)))
    v1 = steps.to_host({"params": state.params, "batch_stats": state.batch_stats})
    preds = np.asarray(jnp.argmax(model.apply(v1, x)["out"], -1))
    labels = np.where(keep[:, None, None], masks, IGNORE_INDEX)
    np.testing.assert_array_equal(res["confusion"], _numpy_confusion(preds, labels, 4))
    assert int(res["count"]) == np.sum(labels != IGNORE_INDEX)


def test_crop_and_flip_move_masks_with_images():
    _, masks = make_shapes_dataset(8, 32, seed=2)
    masks = np.where(masks == IGNORE_INDEX, 0, masks).astype(np.int32)
    x = jnp.asarray(masks[..., None], jnp.float32)  # an image that shows its own mask
    key = jax.random.key(3)
    fx, fm = augment.hflip(key, x, mask=masks)
    np.testing.assert_array_equal(fx[..., 0], fm)
    assert not np.array_equal(fm, masks)
    # The crop box of the identity leaves the mask alone; a real crop resamples the image
    # bilinearly and the mask by nearest neighbour: they agree off the shapes' edges.
    _, same = augment.random_resized_crop(key, x, (1.0, 1.0), (1.0, 1.0), mask=masks)
    np.testing.assert_array_equal(same, masks)
    cx, cm = augment.random_resized_crop(key, x, (0.3, 0.6), mask=masks)
    assert cm.dtype == masks.dtype
    agree = np.mean(np.round(np.asarray(cx[..., 0])) == np.asarray(cm))
    shuffled = np.mean(np.round(np.asarray(cx[..., 0])) == np.asarray(cm)[::-1, ::-1])
    assert agree > 0.95 > shuffled + 0.05, (agree, shuffled)
    with pytest.raises(ValueError, match="erasing"):
        augment.augment_batch(key, x, {"erase_prob": 0.5}, mask=masks)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"model": "resnet18", "model_kwargs": {}}, "'resnet18' is a classification model but "
         "config.dataset='shapes' is a segmentation dataset"),
        ({"dataset": "digits"}, "'unet_padded' is a segmentation model but "
         "config.dataset='digits' is a classification dataset"),
        ({"mixup_alpha": 0.2, "label_smoothing": 0.1}, "mixup_alpha=0.2, config.label_smooth"),
        ({"augment.erase_prob": 0.25}, "erase_prob"),
        ({"image_size": 30}, "image_size=30.*nearest valid sizes: \\[28, 32\\]"),
        ({"model": "unet_original", "model_kwargs": {"depth": 1}}, "maps 32x32 images to 16x16"),
    ],
)  # fmt: skip
def test_bad_segmentation_config_fails_at_start(seg_config, tmp_path, override, message):
    cfg = seg_config(str(tmp_path), **override)
    with pytest.raises(loop.ConfigError, match=message):
        loop.setup(cfg)
