"""DenseNet behaviour beyond what the registry-wide tests cover."""

import jax
import jax.numpy as jnp
import numpy as np

from flaxcnn.models import DenseNet


def test_densenet_memory_efficient_is_numerically_the_same():
    """nn.remat changes memory, not numbers: same outputs, same gradients, same variables."""
    kw = dict(growth_rate=8, block_config=(2, 3), num_init_features=16, num_classes=5)
    plain, remat = DenseNet(**kw), DenseNet(**kw, memory_efficient=True)
    x = jax.random.normal(jax.random.key(0), (2, 33, 29, 3))
    v = plain.init(jax.random.key(1), x)
    assert jax.tree.structure(v) == jax.tree.structure(remat.init(jax.random.key(1), x))

    def loss(model, params):
        out, _ = model.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(out**2)

    g1 = jax.grad(lambda p: loss(plain, p))(v["params"])
    g2 = jax.grad(lambda p: loss(remat, p))(v["params"])
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
