"""The train step: one device equals eight (both BatchNorm modes), the non-finite guard,
mixed precision (bfloat16; float16 with dynamic loss scaling), EMA, distillation, and the
optimizer's weight-decay mask, frozen backbone and reduce-on-plateau."""

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxcnn
from flaxcnn.layers import BatchNorm2d
from flaxcnn.train import augment, optim, steps

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


def test_given_variables_survive_the_donating_step():
    """create_train_state copies caller-owned variables: training must not delete them."""
    model = _model()
    variables = model.init(jax.random.key(0), jnp.zeros((1, *SHAPE[1:])))
    before = jax.tree.map(np.array, variables)
    mesh = steps.make_mesh(jax.devices()[:1])
    tx = optax.sgd(0.1)
    state = steps.create_train_state(model, tx, jax.random.key(0), SHAPE, mesh, variables=variables)
    step = steps.make_train_step(model, tx, steps.StepConfig(num_classes=10), mesh)
    state, _ = step(state, steps.shard_batch(_batch(), mesh), jax.random.key(1))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(variables))
    chex.assert_trees_all_equal(variables, before)
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), state.params, before["params"])
    assert any(jax.tree.leaves(moved))  # the state did train


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
        chex.assert_trees_all_equal(getattr(after, name), getattr(before, name))


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


# --- Cheap step tests: a minimal conv + BatchNorm classifier, each compiling one small step. ---

SMALL = (16, 8, 8, 1)


class _Tiny(nn.Module):
    """Conv, BatchNorm, ReLU, global average pool, classifier ``fc``: the parts the step
    treats specially (BN statistics, a named head), with a train step that compiles in about
    a second."""

    dtype: Any = None
    torch_bn: bool = False  # flaxcnn's BatchNorm2d (every model's) instead of flax's

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.Conv(4, (3, 3), dtype=self.dtype, name="conv")(x)
        if self.torch_bn:
            x = BatchNorm2d(dtype=self.dtype, name="bn")(x, train=train)
        else:
            x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn")(x)
        return nn.Dense(10, dtype=self.dtype, name="fc")(nn.relu(x).mean(axis=(1, 2)))


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.random(SMALL, dtype=np.float32),
        "label": rng.integers(0, 10, SMALL[0]).astype(np.int32),
    }


def _changed(a, b):
    return jax.tree.map(lambda x, y: bool(np.any(x != y)), a, b)


@pytest.fixture(scope="module")
def fp16_ema_step():
    """The tiny model computing in float16, with EMA (decay 0.5) and dynamic loss scaling
    that doubles after 2 finite steps: one compiled step for the tests below;
    ``state(scale)`` makes a fresh float32 state with that initial loss scale."""
    model, mesh, tx = _Tiny(jnp.float16), steps.make_mesh(), optax.sgd(0.1, momentum=0.9)
    cfg = steps.StepConfig(10, ema_decay=0.5, loss_scale_period=2)
    step = steps.make_train_step(model, tx, cfg, mesh)

    def state(scale):
        return steps.create_train_state(
            model, tx, jax.random.key(0), (1, *SMALL[1:]), mesh, ema=True, loss_scale=scale
        )

    return state, lambda st, batch: step(st, steps.shard_batch(batch, mesh), jax.random.key(1))


def test_float16_step_is_finite_and_keeps_float32_params(fp16_ema_step):
    make_state, step = fp16_ema_step
    state = make_state(2.0**10)
    before = steps.to_host(state)
    state, m = step(state, _images())
    m, after = steps.to_host(m), steps.to_host(state)
    assert np.isfinite(m["loss"]) and m["nonfinite"] == 0 and m["overflow"] == 0
    assert m["loss_scale"] == 2.0**10 and int(after.loss_scale.good_steps) == 1
    assert all(jax.tree.leaves(_changed(after.params, before.params)))
    assert all(jax.tree.leaves(_changed(after.batch_stats, before.batch_stats)))
    for leaf in jax.tree.leaves((after.params, after.batch_stats, after.opt_state)):
        assert leaf.dtype == np.float32, leaf.dtype


def test_ema_after_one_step_is_the_decayed_average(fp16_ema_step):
    """EMA arithmetic is on the float32 parameters whatever the compute dtype."""
    make_state, step = fp16_ema_step
    state = make_state(2.0**10)
    old = steps.to_host(state.params)
    state, _ = step(state, _images())
    new, ema = steps.to_host((state.params, state.ema_params))
    want = jax.tree.map(lambda o, n: 0.5 * o + 0.5 * n, old, new)
    chex.assert_trees_all_close(ema, want, rtol=1e-6, atol=1e-8)
    assert all(jax.tree.leaves(_changed(ema, old))) and all(jax.tree.leaves(_changed(ema, new)))


def test_float16_overflow_skips_update_halves_scale_and_is_not_nonfinite(fp16_ema_step):
    """A loss scale of 2**60 overflows float16 in the backward pass: the update is skipped
    (params, BN statistics, optimizer state and EMA bitwise unchanged) and the scale halves,
    reported as ``overflow``, not ``nonfinite`` (the loop's stop counts only the latter)."""
    make_state, step = fp16_ema_step
    state = make_state(2.0**60)
    before = steps.to_host(state)
    after, m = step(state, _images())
    m, after = steps.to_host(m), steps.to_host(after)
    assert np.isfinite(m["loss"]) and m["overflow"] == 1 and m["nonfinite"] == 0
    assert float(after.loss_scale.scale) == 2.0**59 and int(after.loss_scale.good_steps) == 0
    assert int(after.step) == int(before.step) + 1
    for name in ("params", "batch_stats", "opt_state", "ema_params"):
        chex.assert_trees_all_equal(getattr(after, name), getattr(before, name))


def test_float16_loss_scale_doubles_after_period_finite_steps(fp16_ema_step):
    make_state, step = fp16_ema_step
    state, used = make_state(2.0**8), []
    for i in range(3):  # period 2: 256, 256, then doubled: 512
        state, m = step(state, _images(seed=i))
        m = steps.to_host(m)
        assert m["overflow"] == 0 and m["nonfinite"] == 0
        used.append(float(m["loss_scale"]))
    ls = steps.to_host(state.loss_scale)
    assert used == [2.0**8, 2.0**8, 2.0**9]
    assert float(ls.scale) == 2.0**9 and int(ls.good_steps) == 1


def test_float16_nonfinite_loss_counts_and_keeps_the_scale(fp16_ema_step):
    """A NaN input makes the loss itself non-finite: lowering the scale cannot fix that, so
    it counts towards the non-finite stop and the scale stays."""
    make_state, step = fp16_ema_step
    bad = _images()
    bad["image"][0, 0, 0, 0] = np.nan
    state, m = step(make_state(2.0**10), bad)
    m = steps.to_host(m)
    assert m["nonfinite"] == 1 and m["overflow"] == 0
    assert float(steps.to_host(state.loss_scale.scale)) == 2.0**10


@pytest.fixture(scope="module")
def distill_setup():
    """A student state and a sharper teacher (its ``fc`` x100, so that its softened
    distribution is far from the student's near-uniform one), and jitted forwards: the
    student's in train mode (BN on the batch, as in the step), the teacher's in eval mode."""
    model, mesh, tx = _Tiny(), steps.make_mesh(), optax.sgd(0.1)
    state = steps.create_train_state(model, tx, jax.random.key(0), (1, *SMALL[1:]), mesh)
    t = steps.create_train_state(model, tx, jax.random.key(7), (1, *SMALL[1:]), mesh)
    t_vars = steps.to_host({"params": t.params, "batch_stats": t.batch_stats})
    t_vars["params"]["fc"] = {k: v * 100 for k, v in t_vars["params"]["fc"].items()}

    @jax.jit
    def student(v, x):
        return model.apply(v, x, train=True, mutable=["batch_stats"])[0]

    teacher = jax.jit(lambda v, x: model.apply(v, x, train=False))
    return model, mesh, tx, state, t_vars, student, teacher


def _distill(distill_setup, *, temperature, hard):
    """The step's loss with ``distill_alpha = 1``, and the student's and teacher's logits."""
    model, mesh, tx, state, t_vars, student, teacher = distill_setup
    cfg = steps.StepConfig(
        10, distill_alpha=1.0, distill_temperature=temperature, distill_hard=hard
    )
    step = steps.make_train_step(model, tx, cfg, mesh, teacher=(model, t_vars))
    batch = _images()
    x = (batch["image"] - 0.5) / 0.5  # StepConfig's default mean and std
    s_vars = steps.to_host({"params": state.params, "batch_stats": state.batch_stats})
    s_logits = np.asarray(student(s_vars, x), np.float64)
    t_logits = np.asarray(teacher(t_vars, x), np.float64)
    # The step donates its input state: give it a copy so the fixture's state survives.
    _, m = step(jax.tree.map(jnp.copy, state), steps.shard_batch(batch, mesh), jax.random.key(1))
    return float(steps.to_host(m["loss"])), s_logits, t_logits


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_distillation_soft_targets_equal_hand_computed_kl(distill_setup):
    t = 2.0
    loss, s, te = _distill(distill_setup, temperature=t, hard=False)
    log_pt, log_ps = _log_softmax(te / t), _log_softmax(s / t)
    kl = t * t * np.mean(np.sum(np.exp(log_pt) * (log_pt - log_ps), -1))
    reverse = t * t * np.mean(np.sum(np.exp(log_ps) * (log_ps - log_pt), -1))
    assert loss == pytest.approx(kl, rel=1e-5)
    assert abs(kl - reverse) > 0.05 * kl  # the check tells KL(teacher || student) apart


def test_distillation_hard_pseudo_labels_equal_hand_computed_ce(distill_setup):
    loss, s, te = _distill(distill_setup, temperature=4.0, hard=True)
    rows = np.arange(len(s))
    ce = -np.mean(_log_softmax(s)[rows, np.argmax(te, -1)])
    assert loss == pytest.approx(ce, rel=1e-5)
    ce_labels = -np.mean(_log_softmax(s)[rows, _images()["label"]])
    assert abs(ce - ce_labels) > 1e-3  # the check tells pseudo-labels from the true labels


def test_freeze_backbone_changes_only_the_classifier():
    """Only ``fc`` moves (weight decay and momentum included). With the step told the head
    (``frozen_head``) the backbone's BN runs in eval mode, so its running statistics stay;
    without, they update (a plain train step)."""
    from ml_collections import ConfigDict

    model, mesh = _Tiny(torch_bn=True), steps.make_mesh()
    cfg = ConfigDict(
        {"optimizer": "sgd", "learning_rate": 0.1, "schedule": "constant", "momentum": 0.9,
         "weight_decay": 0.1, "freeze_backbone": True}
    )  # fmt: skip
    tx = optim.build_optimizer(cfg, 10, head="fc")
    state = steps.create_train_state(model, tx, jax.random.key(0), (1, *SMALL[1:]), mesh)
    before = steps.to_host((state.params, state.batch_stats))
    batch = steps.shard_batch(_images(), mesh)
    for frozen_head in ("fc", ""):
        step = steps.make_train_step(model, tx, steps.StepConfig(10, frozen_head=frozen_head), mesh)
        fresh = steps.create_train_state(model, tx, jax.random.key(0), (1, *SMALL[1:]), mesh)
        new, _ = step(fresh, batch, jax.random.key(1))  # the step donates its state
        after = steps.to_host((new.params, new.batch_stats))
        assert set(after[0]) == {"conv", "bn", "fc"}
        assert all(jax.tree.leaves(_changed(after[0]["fc"], before[0]["fc"])))
        for name in ("conv", "bn"):
            chex.assert_trees_all_equal(after[0][name], before[0][name])
        stats_moved = jax.tree.leaves(_changed(after[1], before[1]))
        assert all(stats_moved) if not frozen_head else not any(stats_moved)


def test_freeze_backbone_finds_nested_and_flattened_heads():
    """Registry classifier names are dotted; modules are nested (``head`` / ``fc``, ConvNeXt)
    or flattened (``classifier_6``, AlexNet). A head that matches nothing is an error."""
    leaf = jnp.zeros(1)
    nested = {"stem": {"w": leaf}, "head": {"fc": {"w": leaf}, "norm": {"w": leaf}}}
    assert optim._head_labels(nested, "head.fc") == {
        "stem": {"w": "freeze"},
        "head": {"fc": {"w": "train"}, "norm": {"w": "freeze"}},
    }
    flat = {"features_0": {"w": leaf}, "classifier_6": {"w": leaf}, "classifier_1": {"w": leaf}}
    assert optim._head_labels(flat, "classifier.6") == {
        "features_0": {"w": "freeze"},
        "classifier_6": {"w": "train"},
        "classifier_1": {"w": "freeze"},
    }
    with pytest.raises(ValueError, match="nothing would train"):
        optim._head_labels(flat, "fc")


def test_reduce_on_plateau_scales_updates_after_patience():
    from ml_collections import ConfigDict

    cfg = ConfigDict(
        {"optimizer": "sgd", "learning_rate": 1.0, "schedule": "plateau", "momentum": 0.0,
         "plateau_factor": 0.5, "plateau_patience": 2, "plateau_accumulation": 2}
    )  # fmt: skip
    tx = optim.build_optimizer(cfg, 100)
    params, grads = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
    update = jax.jit(lambda state, v: tx.update(grads, state, params, value=v))

    def lr_scales(values):
        state, out = tx.init(params), []
        for v in values:
            updates, state = update(state, jnp.float32(v))
            out.append(-float(updates["w"][0]))
        return out

    # A flat loss: the first accumulation (2 values) sets the best, the next two do not
    # improve on it; at the second (= patience) the scale drops, from the 6th update on.
    assert lr_scales([1.0] * 8) == [1.0] * 5 + [0.5] * 3
    assert lr_scales([8.0 - i for i in range(8)]) == [1.0] * 8  # improving: no drop


# --- The step's parts: pure functions, each checked on its own with tiny inputs. ---


def _mix_inputs():
    batch = _images()
    return jnp.asarray(batch["image"]), jax.nn.one_hot(batch["label"], 10)


def test_mix_batch_computes_only_the_mix_it_applies():
    """With no alpha set, the batch unchanged; with one, exactly that mix (the same program
    as calling it with the step's key split as the step splits it); with both, Mixup or
    CutMix with probability 1/2 each (timm's switch), exactly the chosen one, both chosen
    over a few keys, and the choice a ``cond`` (one branch runs) rather than both computed
    and one selected."""
    x, y = _mix_inputs()
    key = jax.random.key(3)
    chex.assert_trees_all_equal(steps.mix_batch(key, x, y, 0.0, 0.0), (x, y))

    def program(f):
        return str(jax.make_jaxpr(f)(key))

    def sub(k):
        _, k_mix = jax.random.split(k)
        return k_mix

    assert program(lambda k: steps.mix_batch(k, x, y, 0.2, 0.0)) == program(
        lambda k: augment.mixup(sub(k), x, y, 0.2)
    )
    assert program(lambda k: steps.mix_batch(k, x, y, 0.0, 1.0)) == program(
        lambda k: augment.cutmix(sub(k), x, y, 1.0)
    )
    eqns = jax.make_jaxpr(lambda k: steps.mix_batch(k, x, y, 0.2, 1.0))(key).eqns
    assert [e.primitive.name for e in eqns].count("cond") == 1

    @jax.jit
    def both(k):
        k_choice, k_mix = jax.random.split(k)
        want = (augment.mixup(k_mix, x, y, 0.2), augment.cutmix(k_mix, x, y, 1.0))
        return steps.mix_batch(k, x, y, 0.2, 1.0), want, jax.random.bernoulli(k_choice)

    chose = []
    for k in jax.random.split(key, 6):
        got, want, cut = jax.device_get(both(k))
        chex.assert_trees_all_close(got, want[int(cut)], rtol=1e-6, atol=1e-7)
        chose.append(bool(cut))
    assert any(chose) and not all(chose)


def test_distillation_loss_is_scaled_kl_or_hard_cross_entropy():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(4, 5)).astype(np.float32)
    t = 3 * rng.normal(size=(4, 5)).astype(np.float32)
    temp = 2.0
    log_pt, log_ps = _log_softmax(t / temp), _log_softmax(s / temp)
    kl = temp * temp * np.mean(np.sum(np.exp(log_pt) * (log_pt - log_ps), -1))
    soft = steps.distillation_loss(jnp.asarray(s), jnp.asarray(t), temperature=temp, hard=False)
    assert float(soft) == pytest.approx(kl, rel=1e-5)
    same = steps.distillation_loss(jnp.asarray(t), jnp.asarray(t), temperature=temp, hard=False)
    assert abs(float(same)) < 1e-6
    ce = -np.mean(_log_softmax(s)[np.arange(4), t.argmax(-1)])
    hard = steps.distillation_loss(jnp.asarray(s), jnp.asarray(t), temperature=temp, hard=True)
    assert float(hard) == pytest.approx(ce, rel=1e-5)


def test_supervised_loss_adds_weighted_aux_and_ignores_unlabelled_pixels():
    rng = np.random.default_rng(1)
    logits, aux = (jnp.asarray(rng.normal(size=(3, 4)), jnp.float32) for _ in range(2))
    targets = jax.nn.one_hot(jnp.array([0, 2, 3]), 4)
    cfg = steps.StepConfig(4, aux_loss_weight=0.3)
    main = steps.supervised_loss(logits, [], targets, cfg)
    want = -np.mean(np.sum(np.asarray(targets) * _log_softmax(np.asarray(logits)), -1))
    assert float(main) == pytest.approx(want, rel=1e-6)
    both = steps.supervised_loss(logits, [aux], targets, cfg)
    assert float(both) == pytest.approx(
        float(main) + 0.3 * float(steps.supervised_loss(aux, [], targets, cfg)), rel=1e-6
    )
    seg = steps.StepConfig(2, task="segmentation")
    pix = jnp.asarray(rng.normal(size=(1, 2, 2, 2)), jnp.float32)
    labels = jnp.array([[[0, 1], [255, 1]]])
    keep = np.asarray(labels) != 255
    nll = -np.take_along_axis(
        _log_softmax(np.asarray(pix)), np.where(keep, labels, 0)[..., None], -1
    )
    got = steps.supervised_loss(pix, [], labels, seg)
    assert float(got) == pytest.approx(float(nll[..., 0][keep].mean()), rel=1e-6)


def test_scaled_value_and_grad_returns_unscaled_loss_and_gradients():
    def loss_fn(p):
        return jnp.sum(p["w"] ** 2), p["w"]

    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    plain = steps.scaled_value_and_grad(loss_fn, params, None)
    scaled = steps.scaled_value_and_grad(loss_fn, params, steps.LossScale.create(2.0**10))
    chex.assert_trees_all_close(scaled, plain, rtol=0, atol=0)
    chex.assert_trees_all_equal(plain[1], {"w": 2 * params["w"]})


@pytest.mark.parametrize(
    "scale, good, loss_ok, grads_ok, want_scale, want_good, overflow",
    [
        (8.0, 0, True, True, 8.0, 1, False),  # finite, below the period: count it
        (8.0, 2, True, True, 16.0, 0, False),  # the period-th finite step in a row doubles
        (8.0, 2, True, False, 4.0, 0, True),  # gradients overflow: halve
        (1.5, 0, True, False, 1.0, 0, True),  # ... not below the floor
        (1.0, 2, True, False, 1.0, 0, False),  # at the floor: no overflow, a non-finite step
        (8.0, 2, False, False, 8.0, 0, False),  # non-finite loss: the scale cannot help
    ],
)
def test_next_loss_scale(scale, good, loss_ok, grads_ok, want_scale, want_good, overflow):
    ls = steps.LossScale(jnp.float32(scale), jnp.int32(good))
    new, got_overflow = steps.next_loss_scale(
        ls, loss_ok=jnp.bool_(loss_ok), grads_ok=jnp.bool_(grads_ok), period=3
    )
    assert (float(new.scale), int(new.good_steps), bool(got_overflow)) == (
        want_scale,
        want_good,
        overflow,
    )
    assert new.scale.dtype == jnp.float32 and new.good_steps.dtype == jnp.int32


def test_keep_if_finite_and_ema_update_over_a_state():
    old = steps.TrainState(
        step=jnp.int32(3),
        params={"w": jnp.ones(3)},
        batch_stats={"mean": jnp.zeros(2)},
        opt_state=(optax.EmptyState(), {"w": jnp.full(3, 0.5)}),
        ema_params={"w": jnp.ones(3)},
        loss_scale=steps.LossScale.create(4.0),
    )
    new = jax.tree.map(lambda a: a + 1, old)
    chex.assert_trees_all_equal(steps.keep_if_finite(jnp.bool_(True), new, old), new)
    chex.assert_trees_all_equal(steps.keep_if_finite(jnp.bool_(False), new, old), old)
    no_ema = old.replace(ema_params=None)
    kept = steps.keep_if_finite(jnp.bool_(False), no_ema.replace(step=jnp.int32(9)), no_ema)
    assert kept.ema_params is None and int(kept.step) == 3
    ema = steps.ema_update({"w": jnp.zeros(2)}, {"w": jnp.array([1.0, 2.0])}, 0.75)
    chex.assert_trees_all_close(ema, {"w": jnp.array([0.25, 0.5])})
    assert steps.ema_update(None, {"w": jnp.ones(2)}, 0.75) is None


def test_all_finite_sees_a_nan_or_inf_in_any_leaf():
    tree = {"a": jnp.ones(3), "b": {"c": jnp.zeros((2, 2))}}
    assert bool(steps.all_finite(tree))
    for bad in (jnp.nan, jnp.inf):
        assert not bool(steps.all_finite({**tree, "b": {"c": jnp.zeros((2, 2)).at[1, 0].set(bad)}}))


def test_train_metrics_accuracy_grad_norm_and_flags():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])  # predicts 0, 1, 0
    grads = {"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}
    m = steps.train_metrics(
        jnp.float32(0.5), logits, jnp.array([0, 0, 0]), grads, jnp.bool_(True), segmentation=False
    )
    assert float(m["accuracy"]) == pytest.approx(2 / 3) and float(m["grad_norm"]) == 5.0
    assert m["nonfinite"].dtype == jnp.int32 and int(m["nonfinite"]) == 1 and m["loss"] == 0.5
    pix = jnp.array([[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]]])  # predicts 0 1 / 0 0
    labels = jnp.array([[[0, 0], [255, 0]]])  # one right, one wrong, one unlabelled, one right
    seg = steps.train_metrics(
        jnp.float32(0.1), pix, labels, grads, jnp.bool_(False), segmentation=True
    )
    assert float(seg["accuracy"]) == pytest.approx(2 / 3) and int(seg["nonfinite"]) == 0


def test_inputs_and_targets_normalise_one_hot_and_smooth():
    batch = {"image": jnp.full((2, 4, 4, 1), 0.75), "label": jnp.array([1, 3])}
    cfg = steps.StepConfig(4, mean=(0.5,), std=(0.25,), label_smoothing=0.2)
    key, prepare = jax.random.key(0), jax.jit(steps.inputs_and_targets)
    x, targets, labels = prepare(key, key, batch, cfg)
    chex.assert_trees_all_close(x, jnp.ones((2, 4, 4, 1)))
    chex.assert_trees_all_close(targets[0], jnp.array([0.05, 0.85, 0.05, 0.05]), atol=1e-7)
    chex.assert_trees_all_equal(labels, batch["label"])
    seg = steps.StepConfig(4, task="segmentation")
    masks = jnp.arange(32).reshape(2, 4, 4) % 4
    images = masks[..., None].astype(jnp.float32) / 4
    x, targets, labels = prepare(key, key, {"image": images, "label": masks}, seg)
    chex.assert_trees_all_equal((targets, labels), (masks, masks))  # the class map, not one-hot
    chex.assert_trees_all_close(x, (images - 0.5) / 0.5)


# --- The losses inside the jitted step, against targets and losses computed by hand. ---


def _partner_and_lam(mixed, x):
    """For each mixed image, the batch image ``j`` it was mixed with and the weight ``lam``
    of its own image, read off the pixels alone: Mixup's ``lam x_i + (1 - lam) x_j`` (least
    squares over the candidates ``j``), or CutMix's box of ``x_j`` pasted into ``x_i``."""
    found = []
    for i, m in enumerate(mixed):
        if np.array_equal(m, x[i]):
            found.append((i, 1.0))
            continue
        box = np.any(m != x[i], axis=-1)
        pasted = [j for j in range(len(x)) if j != i and np.array_equal(m[box], x[j][box])]
        if pasted and np.array_equal(m[~box], x[i][~box]):  # CutMix: lam is the area kept
            found.append((pasted[0], 1.0 - box.mean()))
            continue
        fits = []
        for j in range(len(x)):
            d = (x[i] - x[j]).ravel()
            lam = float(np.dot((m - x[j]).ravel(), d) / np.dot(d, d)) if d.any() else 1.0
            fits.append((np.abs(lam * x[i] + (1 - lam) * x[j] - m).max(), j, lam))
        err, j, lam = min(fits)
        assert err < 1e-5, f"image {i} is neither a blend nor a pasted box ({err})"
        found.append((j, lam))
    return found


def _hand_targets(mixed, x, labels, num_classes, smoothing=0.0):
    eye = np.eye(num_classes)
    t = np.stack(
        [
            lam * eye[labels[i]] + (1 - lam) * eye[labels[j]]
            for i, (j, lam) in enumerate(_partner_and_lam(mixed, x))
        ]
    )
    return t * (1 - smoothing) + smoothing / num_classes


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_mixed_targets_are_the_pixels_mixing_weights(mix):
    """Mixup's and CutMix's targets equal the label mix read off the mixed pixels (CutMix: the
    box's true area after clipping at the border, not the drawn ``lam``)."""
    x, y = _mix_inputs()
    labels = np.asarray(jnp.argmax(y, -1))
    fn = augment.mixup if mix == "mixup" else augment.cutmix
    alpha = 0.2 if mix == "mixup" else 1.0
    for k in jax.random.split(jax.random.key(5), 3):
        mixed, targets = jax.device_get(fn(k, x, y, alpha))
        want = _hand_targets(mixed, np.asarray(x), labels, 10)
        np.testing.assert_allclose(targets, want, rtol=0, atol=1e-5)


class _AuxNet(nn.Module):
    """A linear classifier with two auxiliary linear heads in train mode, as GoogLeNet's
    ``(logits, aux2, aux1)`` (no BatchNorm: the loss is then a closed form in numpy)."""

    @nn.compact
    def __call__(self, x, *, train=False):
        f = x.reshape(x.shape[0], -1)
        out = tuple(nn.Dense(10, name=n)(f) for n in ("fc", "aux2", "aux1"))
        return out if train else out[0]


def test_step_loss_is_smoothed_mixed_cross_entropy_plus_03_per_aux_head():
    """Inside the jitted step: the batch is mixed (Mixup or CutMix, both met over the steps),
    the targets are the pixels' mix then smoothed by 0.1, and the loss is the main head's
    cross-entropy plus 0.3 times each auxiliary head's, as computed here in numpy from the
    step's own input and the parameters; the update is SGD's on that loss's gradient."""
    model, lr = _AuxNet(), 0.5
    mesh = steps.make_mesh(jax.devices()[:1])
    tx = optax.sgd(lr)
    cfg = steps.StepConfig(
        10, mixup_alpha=0.2, cutmix_alpha=1.0, label_smoothing=0.1, aux_loss_weight=0.3
    )
    step = steps.make_train_step(model, tx, cfg, mesh)
    batch = _batch(2)
    x0 = (batch["image"] - 0.5) / 0.5  # the step's normalisation (StepConfig's mean, std)

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def xent(z, t):
        return -np.mean(np.sum(t * np.log(softmax(z)), -1))

    state = steps.create_train_state(model, tx, jax.random.key(0), (1, *SHAPE[1:]), mesh)
    kinds = set()
    for i in range(4):
        p = jax.device_get(state.params)
        rng = jax.random.key(10 + i)
        new, m = step(jax.tree.map(jnp.copy, state), steps.shard_batch(batch, mesh), rng)
        k_aug, k_mix, _ = jax.random.split(jax.random.fold_in(rng, i), 3)
        x, _, _ = jax.device_get(steps.inputs_and_targets(k_aug, k_mix, batch, cfg))
        t = _hand_targets(x, x0, batch["label"], 10, smoothing=0.1)
        kinds.add("box" if all(np.isin(x, x0).all(axis=(1, 2, 3))) else "blend")
        f = x.reshape(len(x), -1)
        z = {h: f @ p[h]["kernel"] + p[h]["bias"] for h in ("fc", "aux2", "aux1")}
        want = xent(z["fc"], t) + 0.3 * (xent(z["aux2"], t) + xent(z["aux1"], t))
        assert float(m["loss"]) == pytest.approx(want, rel=1e-5)
        # SGD on that loss: each head's bias moves by -lr * weight * mean(softmax - targets).
        heads = (("fc", 1.0), ("aux2", 0.3), ("aux1", 0.3))
        grad_b = {h: w * np.mean(softmax(z[h]) - t, 0) for h, w in heads}
        got = jax.device_get(new.params)
        for h, g in grad_b.items():
            np.testing.assert_allclose(got[h]["bias"], p[h]["bias"] - lr * g, rtol=0, atol=1e-6)
        state = new
    assert int(state.step) == 4 and kinds == {"box", "blend"}, kinds
