"""flaxcnn.get_classifier / reset_classifier: timm's head API in the Flax idiom."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import flaxcnn
from flaxcnn._registry import _REGISTRY

FIRST = sorted(
    {s.family: n for n, s in reversed(_REGISTRY.items()) if s.task == "classification"}.values()
)


@pytest.mark.parametrize("name", FIRST)
def test_classifier_is_the_registered_torch_classifier(name):
    """The modules found (those that exist only with ``num_classes > 0``) hold the registry's
    classifier (its torch name is the Flax path) and predict ``num_classes``."""
    spec = flaxcnn.get_model_spec(name)
    heads = flaxcnn.get_classifier(flaxcnn.create_model(name, num_classes=7))
    if spec.classifier:
        main = spec.classifier.replace(".", "/")
        assert main in heads or main.replace("/", "_") in heads, sorted(heads)
    # every head module that ends in a classifier layer predicts 7 classes
    outs = [a.shape[-1] for h in heads.values() for k, a in traverse_util.flatten_dict(h).items()]
    assert 7 in outs
    assert flaxcnn.get_classifier(flaxcnn.create_model(name, num_classes=0)) == {}


def test_reset_classifier_keeps_the_body_and_replaces_the_head():
    model = flaxcnn.create_model("resnet18", num_classes=10)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = model.init(jax.random.key(1), x)
    new, new_vars = flaxcnn.reset_classifier(model, variables, 5, rng=jax.random.key(2))
    assert new.num_classes == 5 and new == model.clone(num_classes=5)
    old_flat = traverse_util.flatten_dict(dict(variables["params"]))
    new_flat = traverse_util.flatten_dict(dict(new_vars["params"]))
    assert set(new_flat) == set(old_flat)
    for k, v in old_flat.items():
        if k[0] != "fc":
            assert new_flat[k] is v  # the same arrays, not copies
    assert new_vars["batch_stats"] is variables["batch_stats"]
    assert new_flat[("fc", "kernel")].shape == (512, 5)
    assert np.all(new_flat[("fc", "bias")] == 0)  # flax Dense initialises biases to zero
    # the fresh head is initialised as a fresh model's would be, from rng
    fresh = new.init(jax.random.key(2), x)["params"]["fc"]["kernel"]
    np.testing.assert_array_equal(new_flat[("fc", "kernel")], fresh)
    assert new.apply(new_vars, x).shape == (2, 5)
    # pooled features unchanged
    pooled = model.clone(num_classes=0).apply(variables, x)
    np.testing.assert_array_equal(new.clone(num_classes=0).apply(new_vars, x), pooled)

    # num_classes=0 removes the head: the model returns those pooled features
    headless, headless_vars = flaxcnn.reset_classifier(model, variables, 0)
    assert "fc" not in headless_vars["params"]
    np.testing.assert_array_equal(headless.apply(headless_vars, x), pooled)
    # and a head can be put back, with other fields changed at once (timm's global_pool)
    again, again_vars = flaxcnn.reset_classifier(headless, headless_vars, 3, global_pool="max")
    assert again.global_pool == "max" and again.apply(again_vars, x).shape == (2, 3)


def test_reset_classifier_resets_aux_heads_too():
    model = flaxcnn.create_model("googlenet", num_classes=4)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    variables = jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype), abstract)
    _, new_vars = flaxcnn.reset_classifier(model, variables, 6)
    p = new_vars["params"]
    assert p["fc"]["kernel"].shape == (1024, 6)
    assert p["aux1"]["fc2"]["kernel"].shape == (1024, 6)
    assert not np.all(np.asarray(p["aux1"]["fc1"]["kernel"]) == 1)  # re-initialised
    assert np.all(np.asarray(p["inception5b"]["branch1"]["conv"]["kernel"]) == 1)  # kept


def test_no_classifier_is_a_clear_error():
    with pytest.raises(ValueError, match="features_only"):
        flaxcnn.get_classifier(flaxcnn.create_model("resnet18", features_only=True))
