"""shaped_param: existing parameters are shape-checked without re-tracing initialisers, and a
wrong shape is still flax's clear ScopeParamShapeError naming the parameter."""

import jax
import jax.numpy as jnp
import pytest
from flax import errors

from flaxcnn.layers import BatchNorm2d, Conv2d, DepthwiseConv2d, LayerNorm


@pytest.mark.parametrize(
    ("layer", "param"),
    [
        (Conv2d(4, 3), "kernel"),
        (DepthwiseConv2d(3), "kernel"),
        (BatchNorm2d(), "scale"),
        (LayerNorm(), "bias"),
    ],
)
def test_wrong_shaped_parameter_is_a_clear_error(layer, param):
    x = jnp.ones((1, 5, 5, 2))
    variables = layer.init(jax.random.key(0), x)
    layer.apply(variables, x)  # the right shapes apply
    bad = jax.tree_util.tree_map_with_path(
        lambda p, a: (
            jnp.zeros((*a.shape[:-1], a.shape[-1] + 1))
            if jax.tree_util.keystr(p[-1:]) == f"['{param}']"
            else a
        ),
        variables,
    )
    with pytest.raises(errors.ScopeParamShapeError, match=param):
        layer.apply(bad, x)
