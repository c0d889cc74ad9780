"""DepthwiseConv2d, and Conv2d with groups == channels, against torch's depthwise Conv2d (and
TF 'SAME'), both implementations, on both kernel paths (``flaxcnn.kernels``: the grouped
``'conv'`` is split per group on CPU, one grouped ``lax`` conv on the portable path)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcnn.layers import Conv2d, DepthwiseConv2d


def _same_pad(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _layer(kind, c, k, s, padding, impl):
    if kind == "DepthwiseConv2d":
        return DepthwiseConv2d(k, s, padding=padding, depthwise_impl=impl)
    return Conv2d(c, k, s, padding=padding, groups=c, depthwise_impl=impl)


@pytest.mark.parametrize("kind", ["DepthwiseConv2d", "Conv2d"])
@pytest.mark.parametrize("impl", ["shift", "conv"])
@pytest.mark.parametrize(
    ("k", "s", "padding"),
    [(3, 1, 1), (3, 2, 1), (5, 2, 2), (5, 2, "same"), (3, 2, "same"), (7, 1, 3)],
)
@pytest.mark.parametrize("size", [(13, 17), (8, 9)])
def test_matches_torch(kind, impl, k, s, padding, size, kernel_mode):
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
    layer = _layer(kind, c, k, s, padding, impl)
    params = {"params": {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)), "bias": jnp.asarray(b)}}
    got = np.asarray(layer.apply(params, jnp.asarray(x.transpose(0, 2, 3, 1))))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["DepthwiseConv2d", "Conv2d"])
def test_shift_gradients_match_conv(kind, kernel_mode):
    x = jax.random.normal(jax.random.key(0), (2, 11, 15, 4))
    layer = {i: _layer(kind, 4, 5, 2, "same", i) for i in ("shift", "conv")}
    v = layer["conv"].init(jax.random.key(1), x)
    grads = {
        i: jax.grad(lambda v, x, i=i: jnp.sum(layer[i].apply(v, x) ** 2), argnums=(0, 1))(v, x)
        for i in layer
    }
    for a, b in zip(jax.tree.leaves(grads["shift"]), jax.tree.leaves(grads["conv"]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("groups", [2, 1])
def test_bad_impl(groups):
    x = jnp.zeros((1, 8, 8, 2))
    with pytest.raises(ValueError, match="impl must be"):
        DepthwiseConv2d(3, depthwise_impl="fft").init(jax.random.key(0), x)
    # On Conv2d too, depthwise (groups=2 here) or not (groups=1): a typo fails on any model.
    with pytest.raises(ValueError, match="impl must be"):
        Conv2d(2, 3, groups=groups, depthwise_impl="fft").init(jax.random.key(0), x)


def test_conv2d_shift_only_for_depthwise(kernel_mode):
    """Grouped convs that are not depthwise, and dilated depthwise convs, must not take the
    shifted-slice path (it would give a wrong shape or wrong values): torch's results."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 11, 12), dtype=np.float32)
    for groups, out_ch, dilation in ((2, 4, 1), (4, 8, 1), (4, 4, 2)):
        w = rng.standard_normal((out_ch, 4 // groups, 3, 3), dtype=np.float32)
        ref = F.conv2d(
            torch.from_numpy(x), torch.from_numpy(w), None, 1, dilation, dilation, groups
        )
        layer = Conv2d(
            out_ch, 3, padding=dilation, dilation=dilation, groups=groups, use_bias=False
        )
        params = {"params": {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0))}}
        got = layer.apply(params, jnp.asarray(x.transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(got, ref.numpy().transpose(0, 2, 3, 1), atol=1e-5, rtol=1e-5)
