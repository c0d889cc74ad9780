"""Checks every registered model gets the moment it is registered: bad input, init,
eval and train mode, state handling, a jitted gradient, bf16 compute.

One test per model shares one initialisation (compiling a large model dominates the
cost on CPU).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxcnn

MODELS = flaxcnn.list_models()


@pytest.mark.parametrize("name", MODELS)
def test_model_contract(name):
    spec = flaxcnn.get_model_spec(name)
    model = flaxcnn.create_model(name, num_classes=7)
    side = max(64, spec.min_size)
    c = spec.input_size[2]
    x = jax.random.normal(jax.random.key(1), (2, side, side, c))

    # Bad input: NCHW gets a clear error before any computation.
    with pytest.raises(ValueError, match="NCHW"):
        model.init(jax.random.key(0), jnp.zeros((1, c, side, side + 1)))

    variables = jax.jit(model.init)(jax.random.key(0), x)
    assert set(variables) <= {"params", "batch_stats"}
    assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype("float32")}

    # Eval (the default): right shape, finite.
    out = model.apply(variables, x)
    assert out.shape == (2, 7)
    assert np.isfinite(np.asarray(out)).all()

    # Eval mode changes no state.
    _, state = model.apply(variables, x, mutable=True)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)

    # Train mode: batch statistics, every running statistic updated.
    if "batch_stats" in variables:
        out_train, new_state = model.apply(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}
        )
        assert out_train.shape == (2, 7)
        assert np.isfinite(np.asarray(out_train)).all()
        assert not np.allclose(out_train, out), "train mode should use batch statistics"
        changed = jax.tree.map(
            lambda a, b: bool(np.any(a != b)), new_state["batch_stats"], variables["batch_stats"]
        )
        assert all(jax.tree.leaves(changed)), "train mode should update every running statistic"

    # A jitted training gradient: finite, and every parameter receives one.
    def loss(params, batch_stats):
        logits, _ = model.apply(
            {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(3)},
        )
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

    grads = jax.jit(jax.grad(loss))(variables["params"], variables.get("batch_stats", {}))
    flat = jax.tree.leaves_with_path(grads)
    assert all(np.isfinite(np.asarray(g)).all() for _, g in flat)
    dead = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g))]
    assert not dead, f"parameters with an all-zero gradient: {dead[:5]}"

    # bf16 compute with the same float32 variables; output in bf16, close to float32.
    model16 = flaxcnn.create_model(name, num_classes=7, dtype=jnp.bfloat16)
    shapes16 = jax.eval_shape(model16.init, jax.random.key(0), x)
    assert {a.dtype for a in jax.tree.leaves(shapes16)} == {jnp.dtype("float32")}
    out16 = model16.apply(variables, x)
    assert out16.dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(out16, np.float32)).all()
