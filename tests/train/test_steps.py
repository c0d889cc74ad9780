"""The train step: one device equals eight (both BatchNorm modes), the non-finite guard,
mixed precision and the optimizer's weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxcnn
from flaxcnn.train import optim, steps

TINY = {"stem_type": "cifar", "stage_sizes": (1,)}  # as conftest's tiny model
SHAPE = (16, 12, 12, 1)


def _model(**kw):
    return flaxcnn.create_model("resnet18", num_classes=10, in_chans=1, **TINY, **kw)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.random(SHAPE, dtype=np.float32),
        "label": rng.integers(0, 10, SHAPE[0]).astype(np.int32),
    }


def _run(n_devices, bn_groups, batch, *, model=None, n_steps=2):
    model = model or _model()
    mesh = steps.make_mesh(jax.devices()[:n_devices])
    tx = optax.sgd(0.1, momentum=0.9)
    cfg = steps.StepConfig(num_classes=10, bn_groups=bn_groups, augment=(("hflip", True),))
    state = steps.create_train_state(model, tx, jax.random.key(0), (1, *SHAPE[1:]), mesh)
    step = steps.make_train_step(model, tx, cfg, mesh)
    for _ in range(n_steps):
        state, m = step(state, steps.shard_batch(batch, mesh), jax.random.key(1))
    return state, steps.to_host(m), step, mesh


def _max_rel(a, b):
    def rel(x, y):
        return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-12))

    return max(jax.tree.leaves(jax.tree.map(rel, steps.to_host(a), steps.to_host(b))))


@pytest.mark.parametrize("bn_groups", [1, 8], ids=["sync_bn", "per_device_bn"])
def test_one_device_equals_eight(bn_groups):
    assert len(jax.devices()) == 8
    batch = _batch()
    s1, m1, _, _ = _run(1, bn_groups, batch)
    s8, m8, _, _ = _run(8, bn_groups, batch)
    assert _max_rel(s1.params, s8.params) <= 1e-5
    assert _max_rel(s1.batch_stats, s8.batch_stats) <= 1e-5
    assert abs(m1["loss"] - m8["loss"]) <= 1e-5 * abs(m1["loss"])


def test_bn_modes_differ_and_per_device_stats_are_per_group():
    """Guards the test above against comparing two identical code paths."""
    model = _model()
    v = model.init(jax.random.key(0), jnp.zeros((1, *SHAPE[1:])))
    x = jnp.asarray(_batch()["image"])
    sync, grouped = jax.jit(
        lambda v, x: [steps._apply(model, v, x, jax.random.key(0), g)[1] for g in (1, 8)]
    )(v, x)
    mean_sync = sync["batch_stats"]["bn1"]["mean"]
    mean_grouped = grouped["batch_stats"]["bn1"]["mean"]
    # Means average the same either way; variances differ (within- vs. whole-batch spread).
    np.testing.assert_allclose(mean_sync, mean_grouped, rtol=1e-5, atol=1e-7)
    var_sync, var_grouped = sync["batch_stats"]["bn1"]["var"], grouped["batch_stats"]["bn1"]["var"]
    assert float(jnp.max(jnp.abs(var_sync - var_grouped))) > 1e-6


def test_nonfinite_step_changes_nothing():
    batch = _batch()
    state, _, step, mesh = _run(8, 1, batch, n_steps=1)
    before = steps.to_host(state)
    bad = dict(
        batch, image=np.where(np.arange(SHAPE[0])[:, None, None, None] == 3, np.nan, batch["image"])
    )
    after, m = step(state, steps.shard_batch(bad, mesh), jax.random.key(1))
    m = steps.to_host(m)
    assert m["nonfinite"] == 1
    after = steps.to_host(after)
    assert int(after.step) == int(before.step) + 1
    for name in ("params", "batch_stats", "opt_state"):
        jax.tree.map(np.testing.assert_array_equal, getattr(after, name), getattr(before, name))


def test_mixed_precision_keeps_float32_params_and_stats():
    state, m, _, _ = _run(8, 1, _batch(), model=_model(dtype=jnp.bfloat16), n_steps=1)
    assert np.isfinite(m["loss"])
    for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype


def test_weight_decay_mask_skips_bn_and_biases():
    params = jax.eval_shape(_model().init, jax.random.key(0), jnp.zeros((1, *SHAPE[1:])))["params"]
    mask = optim.decay_mask(params)
    assert mask["conv1"]["kernel"] and mask["fc"]["kernel"]
    assert not mask["bn1"]["scale"] and not mask["bn1"]["bias"] and not mask["fc"]["bias"]


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "plateau"])
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_optimizers_and_schedules_build_and_update(name, schedule):
    from ml_collections import ConfigDict

    cfg = ConfigDict(
        {
            "optimizer": name,
            "learning_rate": 0.1,
            "schedule": schedule,
            "warmup_steps": 2,
            "weight_decay": 0.1,
            "grad_clip_norm": 1.0,
            "freeze_backbone": True,
        }
    )
    params = {
        "body": {"kernel": jnp.ones((2, 2))},
        "fc": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
    }
    tx = optim.build_optimizer(cfg, 10, head="fc")
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params, value=jnp.float32(1.0))
    assert float(jnp.abs(updates["body"]["kernel"]).max()) == 0.0  # frozen backbone
    sched = optim.build_schedule(cfg, 100)
    assert float(sched(0)) == 0.0 and float(sched(2)) == pytest.approx(0.1)  # linear warm-up
    if schedule == "step":
        assert float(sched(60)) == pytest.approx(0.01) and float(sched(80)) == pytest.approx(0.001)
