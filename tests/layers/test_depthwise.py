"""DepthwiseConv2d against torch's depthwise Conv2d (and TF 'SAME'), both implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcnn.layers import DepthwiseConv2d


def _same_pad(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("impl", ["shift", "conv"])
@pytest.mark.parametrize(
    ("k", "s", "padding"), [(3, 1, 1), (3, 2, 1), (5, 2, 2), (5, 2, "same"), (3, 2, "same")]
)
@pytest.mark.parametrize("size", [(13, 17), (8, 9)])
def test_matches_torch(impl, k, s, padding, size):
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    c = 6
    x = rng.standard_normal((2, c, *size), dtype=np.float32)
    w = rng.standard_normal((c, 1, k, k), dtype=np.float32)
    b = rng.standard_normal((c,), dtype=np.float32)
    xt = torch.from_numpy(x)
    if padding == "same":  # TF 'SAME': pad explicitly (extra pixel bottom/right), then no padding
        (t, bo), (le, r) = (_same_pad(n, k, s) for n in size)
        xt, tp = F.pad(xt, (le, r, t, bo)), 0
    else:
        tp = padding
    ref = F.conv2d(xt, torch.from_numpy(w), torch.from_numpy(b), stride=s, padding=tp, groups=c)
    ref = ref.numpy().transpose(0, 2, 3, 1)
    layer = DepthwiseConv2d(k, s, padding=padding, impl=impl)
    params = {"params": {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)), "bias": jnp.asarray(b)}}
    got = np.asarray(layer.apply(params, jnp.asarray(x.transpose(0, 2, 3, 1))))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)


def test_shift_gradients_match_conv():
    x = jax.random.normal(jax.random.key(0), (2, 11, 15, 4))
    layer = {i: DepthwiseConv2d(5, 2, padding="same", impl=i) for i in ("shift", "conv")}
    v = layer["conv"].init(jax.random.key(1), x)
    grads = {
        i: jax.grad(lambda v, x, i=i: jnp.sum(layer[i].apply(v, x) ** 2), argnums=(0, 1))(v, x)
        for i in layer
    }
    for a, b in zip(jax.tree.leaves(grads["shift"]), jax.tree.leaves(grads["conv"]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


def test_bad_impl():
    with pytest.raises(ValueError, match="impl must be"):
        DepthwiseConv2d(3, impl="fft").init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)))
