"""Pooling is differentiable under jit (training needs it)."""

import jax
import numpy as np

from flaxcnn.layers import avg_pool2d, max_pool2d


def test_pools_differentiate_under_jit():
    x = jax.random.normal(jax.random.key(0), (1, 7, 9, 2))
    g = jax.jit(jax.grad(lambda x: max_pool2d(x, 3, 2, ceil_mode=True).sum()))(x)
    assert set(np.unique(np.asarray(g))) <= {0.0, 1.0, 2.0, 3.0, 4.0}  # windows overlap
    assert float(g.sum()) == 3 * 4 * 2  # one max per output window (ceil_mode: 3x4)
    g = jax.jit(jax.grad(lambda x: avg_pool2d(x, 2).sum()))(x)
    np.testing.assert_allclose(g[0, :6, :8], 0.25)  # each pixel in one 2x2 window
    np.testing.assert_allclose(g[0, 6:], 0.0)  # floor mode drops the last row and column
