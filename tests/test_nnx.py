"""flaxcnn.nnx: every registered model builds and applies as an NNX module, and the NNX model
computes what the linen model computes.

* every model (traced, ``nnx.eval_shape``): ``create_model`` builds it in eval mode with
  float32 ``nnx.Param``/``nnx.BatchStat`` state, and ``model(x)`` has the linen output's shape;
* the smallest model of each family, concretely: eval output, train output (dropout keys
  from the module's rngs) and the in-place running-statistic update equal linen's
  ``apply(..., mutable=['batch_stats'])``, all in one compilation per family;
* one ``nnx.Optimizer`` step under ``nnx.jit`` on a data-parallel mesh of the 8 simulated
  CPU devices equals ``flaxcnn.train``'s linen train step (loss, parameters, statistics);
* linen <-> NNX round trips and an orbax save/restore of the NNX state are exact.

Equal-to-rounding bounds are 1e-6 relative to ``max(1, max|ref|)``: both sides run the same
linen code, so anything larger is a wiring error, not float32 noise.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, traverse_util

import flaxcnn
import flaxcnn.nnx as fnnx
from flaxcnn._inputs import example_inputs

from ._small import SMALLEST
from ._small import random_variables as _random_variables

MODELS = flaxcnn.list_models()
# The smallest model of each family, at about one block per stage: the wrapper is
# family-agnostic, so what a family can break in it is its layer types (BatchNorm, dropout,
# drop-path), its modes (GoogLeNet's train-mode aux logits) and its output (FCN's dict),
# not its depth.
TINY = {"stem_type": "cifar", "stage_sizes": (1,)}  # tests/train's tiny ResNet


def _close(got, want, bound=1e-6):
    """Every leaf of ``got`` within ``bound * max(1, max|want|)`` of ``want``."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        assert g.shape == w.shape
        err = float(np.max(np.abs(g - w))) if g.size else 0.0
        assert err <= bound * max(1.0, float(np.max(np.abs(w)))), err


def _inputs(spec, linen, batch, side, key=1):
    """What ``linen`` takes: a random NHWC batch, or for CLIP random images and token rows."""
    if spec.task == "clip":
        from flaxcnn.convert.clip import clip_example_batch

        images, tokens = clip_example_batch(
            np.random.default_rng(key), batch, linen.image_resolution, linen.context_length
        )
        return jnp.asarray(images.transpose(0, 2, 3, 1)), jnp.asarray(tokens[:batch], jnp.int32)
    return (jax.random.normal(jax.random.key(key), (batch, side, side, spec.input_size[2])),)


def _heads(spec, n):
    """``num_classes=n`` where the model has a classifier (CLIP has none)."""
    return {} if spec.task == "clip" else {"num_classes": n}


def _paths(tree):
    return {"/".join(k) for k in traverse_util.flatten_dict(dict(tree))}


def test_every_family_has_its_smallest_model_here():
    families = {flaxcnn.get_model_spec(n).family for n in MODELS}
    assert set(SMALLEST) == families, (
        f"families without an NNX equivalence model: {sorted(families - set(SMALLEST))}; "
        "add each one's smallest model to SMALLEST"
    )
    for family, (name, _) in SMALLEST.items():
        assert flaxcnn.get_model_spec(name).family == family


@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_and_applies(name):
    """Traced (two traces per model: its init and its eval-mode call): the NNX model of
    every registered name, float32 ``nnx.Param``/``nnx.BatchStat`` state, and its output
    shaped as tests/models/test_all_models.py proves linen's is."""
    spec = flaxcnn.get_model_spec(name)
    h, w, c = spec.input_size
    model = nnx.eval_shape(lambda: fnnx.create_model(name, **_heads(spec, 7), rngs=nnx.Rngs(0)))
    assert isinstance(model, fnnx.Model) and model.use_running_average and model.deterministic
    state = nnx.state(model, nnx.Param, nnx.BatchStat)
    assert state and {a.dtype for a in jax.tree.leaves(state)} == {jnp.dtype("float32")}
    inputs = [
        jax.ShapeDtypeStruct(a.shape, a.dtype) for a in example_inputs(model.linen, (2, h, w, c))
    ]
    out = nnx.eval_shape(lambda m, *x: m(*x), model, *inputs)
    if spec.task == "clip":  # (logits_per_image, logits_per_text) of 2 images, 2 texts
        assert [o.shape for o in out] == [(2, 2), (2, 2)]
    elif spec.task == "segmentation":
        if hasattr(model.linen, "output_size"):
            h, w = model.linen.output_size(h, w)  # unpadded nets shrink the map
        main = out["out"] if isinstance(out, dict) else out
        assert main.shape == (2, h, w, 7), main.shape
    else:
        assert out.shape == (2, 7), out.shape


@pytest.mark.parametrize("family", sorted(SMALLEST))
def test_nnx_equals_linen_in_eval_and_train_mode(family):
    name, overrides = SMALLEST[family]
    spec = flaxcnn.get_model_spec(name)
    # LeNet flattens a fixed-size map; Inception-v3 without its aux head runs from 75 px.
    side = {"lenet": spec.input_size[0], "inception": 75}.get(family, max(32, spec.min_size))
    linen = flaxcnn.create_model(name, **_heads(spec, 5), **overrides)
    x = _inputs(spec, linen, 2, side)
    variables = _random_variables(linen, *x)
    model = fnnx.from_linen(linen, variables, rngs=nnx.Rngs(dropout=3))
    graphdef, state = nnx.split(model)

    @jax.jit
    def both(state, variables, x):
        m = nnx.merge(graphdef, state)
        nnx_eval = m(*x)
        m.train()
        key = nnx.clone(m.rngs)()  # the key the train-mode call draws
        nnx_train = m(*x)
        lin_eval = linen.apply(variables, *x)
        lin_train, updates = linen.apply(
            variables, *x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )
        return (nnx_eval, nnx_train, fnnx.to_linen(m), nnx.state(m.rngs)), (
            lin_eval,
            lin_train,
            {**variables, **updates},
        )

    (nnx_eval, nnx_train, nnx_after, rng_state), (lin_eval, lin_train, lin_after) = both(
        state, variables, x
    )
    _close(nnx_eval, lin_eval)
    _close(nnx_train, lin_train)
    _close(nnx_after, lin_after)
    if "batch_stats" in variables:  # guards against comparing two no-op updates
        moved = jax.tree.map(
            lambda a, b: bool(jnp.any(a != b)), nnx_after["batch_stats"], variables["batch_stats"]
        )
        assert any(jax.tree.leaves(moved))
    assert int(rng_state["count"][...]) == 1  # one dropout key drawn per train-mode call


def _tiny(**kw):
    linen = flaxcnn.create_model("resnet18", num_classes=10, in_chans=1, **TINY, **kw)
    x = jax.random.uniform(jax.random.key(2), (16, 12, 12, 1))
    return linen, _random_variables(linen, x[:1]), x


def test_modes_update_in_place_and_can_be_set_apart():
    """train() updates the very BatchStat objects (references held elsewhere stay valid);
    BN and dropout modes set apart (nnx.view) hold the other one in eval mode."""
    linen, variables, x = _tiny(drop_rate=0.5)
    model = fnnx.from_linen(linen, variables)
    mean = model.bn1.mean
    fwd = nnx.jit(lambda m, x: m(x))
    _close(fwd(model, x), linen.apply(variables, x))
    assert model.bn1.mean is mean and np.array_equal(
        mean[...], variables["batch_stats"]["bn1"]["mean"]
    )

    # BatchNorm trains, dropout held: linen's train mode without dropout.
    bn_only = nnx.view(model, deterministic=True, use_running_average=False)
    no_drop = linen.clone(drop_rate=0.0)
    want, upd = no_drop.apply(variables, x, train=True, mutable=["batch_stats"])
    _close(fwd(bn_only, x), want)
    assert model.bn1.mean is mean  # the view shares the model's variables
    _close(fnnx.to_linen(model)["batch_stats"], upd["batch_stats"])

    # Dropout on, BatchNorm held on running statistics: no statistic moves, and with the
    # dropout rate at 0 the output is the eval output.
    before = fnnx.to_linen(model)
    dropout_only = fnnx.from_linen(no_drop, before)
    dropout_only.set_attributes(deterministic=False, use_running_average=True)
    _close(fwd(dropout_only, x), no_drop.apply(before, x))
    chex.assert_trees_all_equal(fnnx.to_linen(dropout_only), before)

    model.train()
    assert not model.deterministic and not model.use_running_average
    model.eval()
    assert model.deterministic and model.use_running_average


def test_features_only_returns_the_linen_feature_list():
    linen = flaxcnn.create_model("resnet18", features_only=True, out_indices=(0, -1), **TINY)
    x = jax.random.uniform(jax.random.key(2), (2, 16, 16, 3))
    variables = _random_variables(linen, x[:1])
    model = fnnx.from_linen(linen, variables)
    maps = nnx.jit(lambda m, x: m(x))(model, x)
    assert isinstance(maps, list) and len(maps) == 2
    _close(maps, jax.jit(linen.apply)(variables, x))


def test_round_trips_are_exact(tmp_path):
    import orbax.checkpoint as ocp

    linen, variables, _ = _tiny()
    model = fnnx.from_linen(linen, variables)
    chex.assert_trees_all_equal(fnnx.to_linen(model), variables)
    graphdef, state = nnx.split(model)
    chex.assert_trees_all_equal(fnnx.to_linen(state), variables)
    again = fnnx.from_linen(linen, fnnx.to_linen(nnx.merge(graphdef, state)))
    chex.assert_trees_all_equal(nnx.state(again), state)
    # Paths read like torch's: layer1.0.bn1.running_mean is layer1_0/bn1/mean.
    assert isinstance(model.layer1_0.bn1.mean, nnx.BatchStat)
    assert isinstance(model.layer1_0.conv1.kernel, nnx.Param)
    assert _paths(nnx.to_pure_dict(nnx.state(model, nnx.Param))) == _paths(variables["params"])

    ckpt = ocp.StandardCheckpointer()
    path = tmp_path / "nnx_state"
    ckpt.save(path, state)
    ckpt.wait_until_finished()
    abstract = nnx.state(nnx.eval_shape(lambda: fnnx.from_linen(linen, variables)))
    restored = ckpt.restore(path, abstract)
    chex.assert_trees_all_equal(restored, state)
    chex.assert_trees_all_equal(fnnx.to_linen(restored), variables)


def test_nnx_optimizer_step_equals_the_linen_train_step():
    """One data-parallel step on the 8 simulated CPU devices, NNX (nnx.jit, nnx.Optimizer)
    against flaxcnn.train's step, from the same variables and batch."""
    from flaxcnn.train import steps

    assert len(jax.devices()) == 8
    linen, variables, x = _tiny()
    labels = jnp.arange(16, dtype=jnp.int32) % 10
    mesh = steps.make_mesh()
    tx = optax.sgd(0.1, momentum=0.9)

    # linen: flaxcnn.train's step; mean 0 / std 1 leaves the images as they are.
    cfg = steps.StepConfig(num_classes=10, mean=(0.0,), std=(1.0,))
    # A copy: the step donates its state, and on a multi-device mesh create_train_state's
    # replicated state can share device 0's buffers with the caller's arrays.
    own = jax.tree.map(jnp.copy, variables)
    state = steps.create_train_state(linen, tx, jax.random.key(0), x.shape, mesh, variables=own)
    batch = steps.shard_batch({"image": np.asarray(x), "label": np.asarray(labels)}, mesh)
    state, metrics = steps.make_train_step(linen, tx, cfg, mesh)(state, batch, jax.random.key(1))

    # NNX: state replicated, batch split over the mesh's data axis.
    model = fnnx.from_linen(linen, variables)
    nnx.update(model, jax.device_put(nnx.state(model), steps.replicated(mesh)))
    model.train()
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            logits = model(x)
            return jnp.mean(optax.softmax_cross_entropy(logits, jax.nn.one_hot(y, 10)))

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    sharded = steps.batch_sharding(mesh)
    loss = train_step(model, optimizer, jax.device_put(x, sharded), jax.device_put(labels, sharded))
    assert model.fc.kernel[...].sharding.is_equivalent_to(steps.replicated(mesh), 2)
    got = fnnx.to_linen(model)
    _close(loss, steps.to_host(metrics)["loss"])
    _close(got["params"], steps.to_host(state.params))
    _close(got["batch_stats"], steps.to_host(state.batch_stats))
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), got["params"], variables["params"])
    assert all(jax.tree.leaves(moved))  # every parameter took the step
