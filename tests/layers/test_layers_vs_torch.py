"""Each layer against the torch op it mirrors, on random input, at odd sizes and stride-2 edges."""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flaxcnn import layers

RNG = np.random.default_rng(0)


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def close(got, ref, rtol=1e-5):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    bound = rtol * max(1.0, float(np.abs(ref).max()))
    assert float(np.abs(got - ref).max()) <= bound


@pytest.mark.parametrize(
    ("k", "s", "p", "d", "g", "hw"),
    [
        (3, 1, 1, 1, 1, (9, 13)),
        (3, 2, 1, 1, 1, (8, 8)),
        (3, 2, 1, 1, 1, (9, 14)),
        (7, 2, 3, 1, 1, (97, 131)),
        (1, 2, 0, 1, 1, (7, 9)),
        (1, 3, 0, 1, 2, (10, 8)),  # strided 1x1, grouped
        (3, 1, 2, 2, 1, (11, 10)),
        (3, 1, 4, 4, 1, (17, 19)),
        (3, 2, 1, 1, 4, (9, 9)),
        (3, 1, 1, 1, 8, (6, 7)),  # depthwise
        ((1, 7), 1, (0, 3), 1, 1, (8, 11)),  # factorised, as Inception v3
    ],
)
def test_conv2d(k, s, p, d, g, hw, kernel_mode):
    cin, cout = 8, 16
    tconv = torch.nn.Conv2d(cin, cout, k, s, p, d, g, bias=True)
    x = RNG.standard_normal((2, *hw, cin), dtype=np.float32)
    ref = nhwc(tconv(nchw(x)))
    conv = layers.Conv2d(cout, k, s, p, d, g)
    params = {
        "kernel": jnp.asarray(tconv.weight.detach().numpy().transpose(2, 3, 1, 0)),
        "bias": jnp.asarray(tconv.bias.detach().numpy()),
    }
    close(conv.apply({"params": params}, jnp.asarray(x)), ref)


@pytest.mark.parametrize(
    ("k", "s", "p", "g", "hw"),
    [
        (3, 1, 1, 1, (6, 7)),
        (1, 1, 0, 1, (6, 7)),  # its weight gradient is a matmul on CPU
        (1, 1, 0, 2, (5, 4)),
        (1, 2, 0, 1, (7, 9)),
        (1, 2, 0, 1, (8, 8)),
        (3, 2, 1, 1, (9, 8)),
        (7, 2, 3, 1, (13, 10)),  # a stem
        (2, 2, 0, 1, (9, 7)),  # ConvNeXt's downsampling
        (4, 4, 0, 1, (11, 13)),  # a patchify stem
        (5, 3, 2, 1, (11, 10)),
        (3, 2, 1, 4, (9, 9)),
        (3, 1, 1, 8, (7, 9)),  # one group per channel pair: the grouped loop, unrolled 8
        (3, 2, "same", 1, (9, 14)),
        (5, 2, "same", 1, (10, 7)),
    ],
)
def test_conv2d_gradients(k, s, p, g, hw, kernel_mode):
    """Input and weight gradients equal torch's, strided and not, at every padding kind.
    On CPU convs have their own rule (``flaxcnn.xla.conv._cpu_conv_ad``: a strided
    conv's input tangent is a sum of stride-1 convs, a 1x1 conv's weight tangent a
    matmul; grouped ones ``_grouped_conv_ad``: a loop over the groups forward, those rules
    per group in the derivatives); forward mode agrees with reverse mode in both arguments."""
    tconv = torch.nn.Conv2d(8, 16, k, s, 0 if p == "same" else p, groups=g, bias=True)
    x = RNG.standard_normal((2, *hw, 8), dtype=np.float32)
    xt = nchw(x).requires_grad_(True)
    out = tconv(_tf_same_pad(xt, k, s) if p == "same" else xt)
    ct = RNG.standard_normal(tuple(nhwc(out).shape), dtype=np.float32)
    out.backward(nchw(ct))
    params = {
        "kernel": jnp.asarray(tconv.weight.detach().numpy().transpose(2, 3, 1, 0)),
        "bias": jnp.asarray(tconv.bias.detach().numpy()),
    }
    conv = layers.Conv2d(16, k, s, p, groups=g)

    def f(p, v):
        return conv.apply({"params": p}, v)

    _, vjp = jax.vjp(f, params, jnp.asarray(x))
    dp, dx = vjp(jnp.asarray(ct))
    close(dx, nhwc(xt.grad))
    close(dp["kernel"], tconv.weight.grad.numpy().transpose(2, 3, 1, 0))
    close(dp["bias"], tconv.bias.grad.numpy())
    _check_jvp_against_vjp(f, (params, jnp.asarray(x)), (dp, dx), ct)


def _check_jvp_against_vjp(f, primals, cotangents_in, ct):
    """<J v, ct> == <v, J^T ct> for a random tangent v of all of ``f``'s arguments, summed
    in float64; ``cotangents_in`` is ``J^T ct``."""
    v = jax.tree.map(lambda a: RNG.standard_normal(a.shape, dtype=np.float32), primals)
    _, jv = jax.jvp(f, primals, tuple(v))
    terms = np.concatenate(
        [
            (np.float64(a) * np.float64(b)).ravel()
            for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(cotangents_in), strict=True)
        ]
    )
    lhs = np.sum(np.float64(jv) * np.float64(ct))
    assert abs(lhs - terms.sum()) <= 1e-5 * np.abs(terms).sum()


def test_strided_conv_gradients_with_many_groups(kernel_mode):
    """A strided conv with more groups than CPU splits (a depthwise one kept as a grouped
    conv, ``depthwise_impl='conv'``) takes the phase rule with groups; gradients equal torch's."""
    tconv = torch.nn.Conv2d(80, 80, 3, 2, 1, groups=80, bias=False)
    x = RNG.standard_normal((2, 9, 11, 80), dtype=np.float32)
    xt = nchw(x).requires_grad_(True)
    out = tconv(xt)
    ct = RNG.standard_normal(tuple(nhwc(out).shape), dtype=np.float32)
    out.backward(nchw(ct))
    conv = layers.Conv2d(80, 3, 2, 1, groups=80, use_bias=False, depthwise_impl="conv")
    kernel = jnp.asarray(tconv.weight.detach().numpy().transpose(2, 3, 1, 0))
    _, vjp = jax.vjp(lambda k, v: conv.apply({"params": {"kernel": k}}, v), kernel, x)
    dk, dx = vjp(jnp.asarray(ct))
    close(dx, nhwc(xt.grad))
    close(dk, tconv.weight.grad.numpy().transpose(2, 3, 1, 0))


def _tf_same_pad(x, k, s):
    """TF 'SAME' padding of an NCHW tensor: total max((ceil(i/s)-1)*s + k - i, 0), the odd
    pixel at the end."""
    pads = []
    for i in x.shape[2:]:
        total = max((-(-i // s) - 1) * s + k - i, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, (pads[2], pads[3], pads[0], pads[1]))


def _tf_same_reference(x, weight, stride):
    return F.conv2d(_tf_same_pad(x, weight.shape[-1], stride), weight, stride=stride)


@pytest.mark.parametrize(
    ("k", "s", "hw"),
    [(3, 2, (9, 14)), (5, 2, (97, 131)), (3, 1, (7, 7)), (2, 2, (5, 6)), (1, 2, (7, 10))],
)
def test_conv2d_tf_same(k, s, hw, kernel_mode):
    w = torch.randn(4, 3, k, k)
    x = RNG.standard_normal((1, *hw, 3), dtype=np.float32)
    ref = nhwc(_tf_same_reference(nchw(x), w, s))
    conv = layers.Conv2d(4, k, s, padding="same", use_bias=False)
    got = conv.apply(
        {"params": {"kernel": jnp.asarray(w.numpy().transpose(2, 3, 1, 0))}}, jnp.asarray(x)
    )
    close(got, ref)


@pytest.mark.parametrize("momentum", [0.1, 0.01])
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_batchnorm_train_and_eval(momentum, eps):
    c = 6
    tbn = torch.nn.BatchNorm2d(c, eps=eps, momentum=momentum)
    with torch.no_grad():
        tbn.weight.uniform_(0.5, 1.5)
        tbn.bias.normal_()
        tbn.running_mean.normal_()
        tbn.running_var.uniform_(0.5, 2)
    variables = {
        "params": {
            "scale": jnp.asarray(tbn.weight.detach().numpy()),
            "bias": jnp.asarray(tbn.bias.detach().numpy()),
        },
        "batch_stats": {
            "mean": jnp.asarray(tbn.running_mean.numpy()),
            "var": jnp.asarray(tbn.running_var.numpy()),
        },
    }
    bn = layers.BatchNorm2d(eps=eps, momentum=momentum)
    x = (RNG.standard_normal((3, 5, 7, c)) * 3 + 2).astype(np.float32)

    tbn.eval()
    close(bn.apply(variables, jnp.asarray(x)), nhwc(tbn(nchw(x))))

    tbn.train()
    ref = nhwc(tbn(nchw(x)))
    got, state = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    close(got, ref)
    # Running variance uses the unbiased batch variance, as torch does.
    close(state["batch_stats"]["mean"], tbn.running_mean.numpy())
    close(state["batch_stats"]["var"], tbn.running_var.numpy())


@pytest.mark.parametrize(("affine", "hw"), [(True, (5, 7)), (False, (4, 3))])
def test_batchnorm_train_gradients(affine, hw):
    """Training-mode gradients (input, scale, bias) equal torch's; the layer's own
    derivative rule (``flaxcnn.layers.norm._batch_norm_train``) agrees with forward mode,
    and its second derivatives with those of the plain formula."""
    c = 6
    tbn = torch.nn.BatchNorm2d(c, affine=affine)
    if affine:
        with torch.no_grad():
            tbn.weight.uniform_(0.5, 1.5)
            tbn.bias.normal_()
    x = (RNG.standard_normal((3, *hw, c)) * 3 + 2).astype(np.float32)
    xt = nchw(x).requires_grad_(True)
    out = tbn(xt)
    ct = RNG.standard_normal(tuple(nhwc(out).shape), dtype=np.float32)
    out.backward(nchw(ct))

    bn = layers.BatchNorm2d(use_scale=affine, use_bias=affine)
    variables = bn.init(jax.random.key(0), jnp.asarray(x))
    params = {}
    if affine:
        params = {
            "scale": jnp.asarray(tbn.weight.detach().numpy()),
            "bias": jnp.asarray(tbn.bias.detach().numpy()),
        }

    def f(p, v):
        y, _ = bn.apply(
            {"params": p, "batch_stats": variables["batch_stats"]},
            v,
            train=True,
            mutable=["batch_stats"],
        )
        return y

    _, vjp = jax.vjp(f, params, jnp.asarray(x))
    dp, dx = vjp(jnp.asarray(ct))
    close(dx, nhwc(xt.grad))
    if affine:
        close(dp["scale"], tbn.weight.grad.numpy())
        close(dp["bias"], tbn.bias.grad.numpy())
    _check_jvp_against_vjp(f, (params, jnp.asarray(x)), (dp, dx), ct)

    def plain(v):  # the same formula, differentiated by JAX
        xf = v.astype(jnp.float32)
        mean = xf.mean((0, 1, 2))
        var = jnp.square(xf - mean).mean((0, 1, 2))
        return (v - mean) * jax.lax.rsqrt(var + bn.eps)

    def loss(fn, v):
        return jnp.sum(jnp.sin(fn(v)) * jnp.asarray(ct))

    ours = functools.partial(f, {"scale": jnp.ones(c), "bias": jnp.zeros(c)} if affine else {})
    tangent = jnp.asarray(RNG.standard_normal(x.shape, dtype=np.float32))
    hvp = [
        jax.jvp(jax.grad(functools.partial(loss, fn)), (jnp.asarray(x),), (tangent,))[1]
        for fn in (ours, plain)
    ]
    close(hvp[0], hvp[1])


def test_batchnorm_bf16_keeps_float32_statistics():
    bn = layers.BatchNorm2d(dtype=jnp.bfloat16)
    x = jnp.asarray(RNG.standard_normal((4, 3, 3, 5)), jnp.bfloat16)
    variables = bn.init(jax.random.key(0), x)
    y, state = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(state))


def test_batchnorm_sync_across_devices_equals_global():
    """Inside shard_map with axis_name, statistics are those of the global batch."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    n = min(4, jax.device_count())
    mesh = Mesh(np.array(jax.devices()[:n]), ("data",))
    x = jnp.asarray(RNG.standard_normal((2 * n, 3, 3, 4)) * 2 + 1, jnp.float32)
    variables = layers.BatchNorm2d().init(jax.random.key(0), x)
    ref, ref_state = layers.BatchNorm2d().apply(variables, x, train=True, mutable=["batch_stats"])

    def per_device(v, xs):
        return layers.BatchNorm2d(axis_name="data").apply(
            v, xs, train=True, mutable=["batch_stats"]
        )

    f = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("data")), out_specs=(P("data"), P()))
    got, state = f(variables, x)
    close(got, ref)
    close(state["batch_stats"]["var"], ref_state["batch_stats"]["var"])
    close(state["batch_stats"]["mean"], ref_state["batch_stats"]["mean"])


POOL_CASES = [
    # kernel, stride, padding, ceil_mode, (H, W)
    (3, 2, 1, False, (112, 112)),
    (3, 2, 1, False, (49, 66)),
    (3, 2, 0, True, (56, 56)),  # GoogLeNet: ceil_mode windows hang over the edge
    (3, 2, 0, True, (13, 14)),
    (2, 2, 0, True, (7, 9)),
    (3, 2, 1, True, (5, 6)),  # a last window that would start in the padding is dropped
    (3, 1, 1, False, (9, 10)),
    (2, 2, 0, False, (7, 9)),
    ((3, 2), (2, 1), (1, 0), True, (10, 11)),
    (2, 2, 0, True, (1, 3)),  # ResNet-D's shortcut pool of a 1-pixel map: the window hangs over
    (3, 2, 0, True, (2, 5)),  # a window larger than the input still starts inside it
]


@pytest.mark.parametrize(("k", "s", "p", "ceil", "hw"), POOL_CASES)
def test_max_pool(k, s, p, ceil, hw, kernel_mode):
    x = RNG.standard_normal((2, *hw, 3), dtype=np.float32)
    ref = nhwc(F.max_pool2d(nchw(x), k, s, p, ceil_mode=ceil))
    close(layers.max_pool2d(jnp.asarray(x), k, s, p, ceil_mode=ceil), ref)


@pytest.mark.parametrize(("k", "s", "p", "ceil", "hw"), POOL_CASES)
@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool(k, s, p, ceil, hw, include_pad):
    x = RNG.standard_normal((2, *hw, 3), dtype=np.float32)
    ref = nhwc(F.avg_pool2d(nchw(x), k, s, p, ceil_mode=ceil, count_include_pad=include_pad))
    got = layers.avg_pool2d(jnp.asarray(x), k, s, p, ceil_mode=ceil, count_include_pad=include_pad)
    close(got, ref)


def test_avg_pool_divisor_override():
    x = RNG.standard_normal((1, 7, 8, 2), dtype=np.float32)
    ref = nhwc(F.avg_pool2d(nchw(x), 3, 2, 1, divisor_override=4))
    close(layers.avg_pool2d(jnp.asarray(x), 3, 2, 1, divisor_override=4), ref)


@pytest.mark.parametrize(
    ("hw", "out"),
    [
        ((13, 13), 6),
        ((7, 7), 1),
        ((14, 14), 7),
        ((97, 131), (6, 6)),
        ((5, 3), (7, 4)),
        ((10, 9), (3, 2)),
    ],
)
def test_adaptive_pools(hw, out):
    x = RNG.standard_normal((2, *hw, 3), dtype=np.float32)
    close(
        layers.adaptive_avg_pool2d(jnp.asarray(x), out), nhwc(F.adaptive_avg_pool2d(nchw(x), out))
    )
    close(
        layers.adaptive_max_pool2d(jnp.asarray(x), out), nhwc(F.adaptive_max_pool2d(nchw(x), out))
    )


def test_global_pools():
    x = RNG.standard_normal((2, 5, 7, 3), dtype=np.float32)
    close(layers.global_avg_pool(jnp.asarray(x)), nchw(x).mean((2, 3)).numpy())
    close(layers.global_max_pool(jnp.asarray(x)), nchw(x).amax((2, 3)).numpy())


def test_pool_rejects_oversized_padding():
    with pytest.raises(ValueError, match="pad should be at most half"):
        layers.max_pool2d(jnp.zeros((1, 8, 8, 1)), 3, 2, padding=2)


@pytest.mark.parametrize(
    ("name", "ref"),
    [
        ("relu", torch.nn.ReLU()),
        ("relu6", torch.nn.ReLU6()),
        ("hard_swish", torch.nn.Hardswish()),
        ("hard_sigmoid", torch.nn.Hardsigmoid()),
        ("silu", torch.nn.SiLU()),
        ("gelu", torch.nn.GELU()),
        ("gelu_tanh", torch.nn.GELU(approximate="tanh")),
        ("sigmoid", torch.nn.Sigmoid()),
        ("tanh", torch.nn.Tanh()),
    ],
)
def test_activations(name, ref):
    x = np.linspace(-8, 8, 1001, dtype=np.float32)
    close(layers.get_act(name)(jnp.asarray(x)), ref(torch.from_numpy(x)).numpy(), rtol=1e-6)


def test_residual_relu_matches_torch_and_jax(kernel_mode):
    """``layers.relu`` (output-based derivative, output kept in memory on CPU): the values
    and gradients of torch's ReLU, at 0 and NaN too, and the derivatives of ``jax.nn.relu``
    (which, unlike torch, zeroes the gradient at NaN)."""
    x = np.concatenate([RNG.standard_normal(20), [0.0, -0.0, np.nan, np.inf, -np.inf]])
    x = x.astype(np.float32)
    ct = RNG.standard_normal(x.shape).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    torch.relu(xt).backward(torch.from_numpy(ct))
    y, vjp = jax.vjp(layers.relu, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y), torch.relu(torch.from_numpy(x)).numpy())
    np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(ct))[0]), xt.grad.numpy())
    x, t = jnp.asarray(x[~np.isnan(x)]), jnp.asarray(ct[~np.isnan(x)])
    for order in range(1, 3):
        got, ref = layers.relu, jax.nn.relu
        for _ in range(order):
            got, ref = jax.grad(lambda v, f=got: f(v).sum()), jax.grad(lambda v, f=ref: f(v).sum())
        np.testing.assert_array_equal(np.asarray(jax.vmap(got)(x)), np.asarray(jax.vmap(ref)(x)))
    np.testing.assert_array_equal(
        np.asarray(jax.jvp(layers.relu, (x,), (t,))[1]),
        np.asarray(jax.jvp(jax.nn.relu, (x,), (t,))[1]),
    )


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'relu7'"):
        layers.get_act("relu7")


def test_squeeze_excite_matches_torchvision():
    from torchvision.ops import SqueezeExcitation

    tse = SqueezeExcitation(16, 4)
    x = RNG.standard_normal((2, 5, 6, 16), dtype=np.float32)
    sd = {k: v.detach().numpy() for k, v in tse.state_dict().items()}
    params = {
        name: {
            "kernel": jnp.asarray(sd[f"{name}.weight"].transpose(2, 3, 1, 0)),
            "bias": jnp.asarray(sd[f"{name}.bias"]),
        }
        for name in ("fc1", "fc2")
    }
    got = layers.SqueezeExcite(4).apply({"params": params}, jnp.asarray(x))
    close(got, nhwc(tse(nchw(x))))


def test_drop_path():
    x = jnp.ones((1000, 2, 2, 3))
    dp = layers.DropPath(0.25)
    assert dp.apply({}, x) is x  # identity in eval
    y = dp.apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
    per_sample = np.asarray(y).reshape(1000, -1)
    # Whole samples are dropped or kept and scaled by 1/keep.
    assert set(np.unique(per_sample)) <= {0.0, np.float32(1 / 0.75)}
    assert np.all(per_sample.min(1) == per_sample.max(1))
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.05


def test_dropout2d_drops_whole_channels():
    x = jnp.ones((64, 4, 5, 32))
    y = np.asarray(
        layers.Dropout2d(0.5).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
    )
    assert np.all(y.min((1, 2)) == y.max((1, 2)))  # constant over H, W per (sample, channel)
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert abs((y[:, 0, 0, :] == 0).mean() - 0.5) < 0.05
    np.testing.assert_array_equal(layers.Dropout2d(0.5).apply({}, x), x)


OUT_SIZE_CASES = [
    c
    for c in itertools.product([1, 2, 7, 8, 13], [2, 3], [1, 2], [0, 1], [1, 2], [False, True])
    if c[3] <= (c[4] * (c[1] - 1) + 1) // 2  # torch rejects larger padding
]


@pytest.mark.parametrize(("size", "k", "s", "p", "d", "ceil"), OUT_SIZE_CASES)
def test_pool_output_size_matches_torch(size, k, s, p, d, ceil):
    """Torch's sizes, down to inputs smaller than the window (with ``ceil_mode`` one
    output while a window starts inside the input), and a ValueError where torch has none."""
    try:
        ref = F.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, d, ceil_mode=ceil).shape[-1]
    except RuntimeError:
        with pytest.raises(ValueError, match="larger than the padded input"):
            layers.pool_output_size(size, k, s, p, d, ceil)
    else:
        assert layers.pool_output_size(size, k, s, p, d, ceil) == ref


@pytest.mark.parametrize(("k", "s", "p", "ceil", "hw"), POOL_CASES[:6])
def test_pool_gradients_match_torch(k, s, p, ceil, hw, kernel_mode):
    """Pools are differentiable under jit, with torch's gradients (max: to the argmax)."""
    x = RNG.standard_normal((2, *hw, 3), dtype=np.float32)
    for jfn, tfn in (
        (
            lambda a: layers.max_pool2d(a, k, s, p, ceil_mode=ceil),
            lambda t: F.max_pool2d(t, k, s, p, ceil_mode=ceil),
        ),
        (
            lambda a: layers.avg_pool2d(a, k, s, p, ceil_mode=ceil, count_include_pad=False),
            lambda t: F.avg_pool2d(t, k, s, p, ceil_mode=ceil, count_include_pad=False),
        ),
    ):
        xt = nchw(x).requires_grad_(True)
        out = tfn(xt)
        weights = torch.from_numpy(RNG.standard_normal(out.shape, dtype=np.float32))
        (out * weights).sum().backward()
        w = jnp.asarray(nhwc(weights))
        got = jax.jit(jax.grad(lambda a, w=w, f=jfn: jnp.sum(f(a) * w)))(jnp.asarray(x))
        close(got, nhwc(xt.grad))


def _tied(x: np.ndarray, kind: str) -> np.ndarray:
    """Inputs whose pooling windows hold equal maxima, as after a ReLU."""
    if kind == "relu":
        return np.maximum(x, 0)
    x = np.round(x)
    if kind == "neg_inf":
        x[x < 1] = -np.inf  # windows of -inf only, some at a padded edge
    if kind == "nan":
        x[x > 0] = np.nan  # windows with several NaNs: torch takes the last
    return x


@pytest.mark.parametrize(("k", "s", "p", "ceil", "hw"), POOL_CASES)
@pytest.mark.parametrize("kind", ["relu", "coarse", "neg_inf", "nan"])
def test_max_pool_gradient_ties_match_torch(k, s, p, ceil, hw, kind, kernel_mode):
    """The forward equals torch's, NaNs included, on both kernel paths.

    XLA:CPU's rule (``auto``): ties go to torch's argmax (the window's first maximum, or its
    last NaN), never to padding; forward mode agrees with reverse mode.

    JAX's own ``reduce_window`` rule (``portable``, what GPUs and TPUs run), measured on
    XLA:CPU: finite ties (ReLU zeros, equal values) get torch's gradient in reverse mode. It
    differs from torch only in windows whose maximum is not finite: a window of -inf only
    gives its gradient to a padding position (lost) or another element than torch's first
    one, and a window with NaNs to one of its numbers rather than its last NaN. Its forward
    mode (``select_and_gather_add``) can pick another tied element than its reverse mode
    (``select_and_scatter_add``) in a window that hangs over ``ceil_mode``'s overhang, so
    there forward mode is not checked against reverse mode. Trained networks see the finite
    cases only; what each accelerator's XLA does is checked by ``benchmarks/device_check.py``.
    """
    x = _tied(RNG.standard_normal((2, *hw, 4), dtype=np.float32), kind)
    xt = nchw(x).requires_grad_(True)
    out = F.max_pool2d(xt, k, s, p, ceil_mode=ceil)
    weights = torch.from_numpy(RNG.standard_normal(out.shape, dtype=np.float32))
    (out * weights).sum().backward()
    w = jnp.asarray(nhwc(weights))

    def pool(a):
        return layers.max_pool2d(a, k, s, p, ceil_mode=ceil)

    np.testing.assert_array_equal(np.asarray(jax.jit(pool)(x)), nhwc(out.detach()))
    got = np.asarray(jax.jit(jax.grad(lambda a: jnp.sum(pool(a) * w)))(jnp.asarray(x)))
    ref = nhwc(xt.grad)
    portable = kernel_mode == "portable"
    if portable and kind in ("neg_inf", "nan"):
        outside = ~_covered_by(~torch.isfinite(out.detach()), k, s, p, ceil, x.shape)
        np.testing.assert_array_equal(got[outside], ref[outside])
        return
    np.testing.assert_array_equal(got, ref)
    if portable and ceil:
        return
    v = jnp.asarray(RNG.standard_normal(x.shape, dtype=np.float32))
    _, jv = jax.jvp(pool, (jnp.asarray(x),), (v,))
    # <J v, w> == <v, J^T w>, summed in float64: only got's float32 sums of w may round.
    terms = np.float64(v) * np.float64(got)
    lhs = np.sum(np.float64(jv) * np.float64(w))
    assert abs(lhs - terms.sum()) <= 1e-6 * np.abs(terms).sum()


def _covered_by(windows: torch.Tensor, k, s, p, ceil, shape) -> np.ndarray:
    """NHWC mask of the inputs that lie in any of the pooling windows flagged in ``windows``
    (NCHW, the pool's output shape): where an average pool's gradient reaches from them."""
    xt = torch.zeros(shape[0], shape[3], *shape[1:3], requires_grad=True)
    pooled = F.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=True)
    (pooled * windows.float()).sum().backward()
    return nhwc(xt.grad) > 0


@pytest.mark.parametrize("cls", [layers.Dropout, layers.Dropout2d, layers.DropPath])
def test_dropout_rates(cls):
    """Elementwise dropout drops about ``rate`` of the entries; every kind zeroes all at
    ``rate=1`` (as torch and timm do) and rejects a rate outside [0, 1] when training."""
    x = jnp.ones((64, 4, 5, 32))
    rngs = {"dropout": jax.random.key(0)}
    if cls is layers.Dropout:
        y = np.asarray(cls(0.3).apply({}, x, train=True, rngs=rngs))
        assert abs((y == 0).mean() - 0.3) < 0.02
        assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.7)}
    assert not np.asarray(cls(1.0).apply({}, x, train=True, rngs=rngs)).any()
    with pytest.raises(ValueError, match=rf"{cls.__name__} rate must be in \[0, 1\], got 1.5"):
        cls(1.5).apply({}, x, train=True, rngs=rngs)


class _ConvPoolConv(nn.Module):
    """Inception-V3's stem around its second max pool, in float64."""

    @nn.compact
    def __call__(self, x):
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
        x = layers.BasicConv2d(128, 3, name="a", **f64)(x, train=True)
        x = layers.max_pool2d(x, 3, 2)
        return layers.BasicConv2d(6, 1, name="b", **f64)(x, train=True)


def test_max_pool_gradient_in_float64_between_convs(kernel_mode):
    """conv-BN-ReLU, max pool, conv-BN-ReLU in train mode, jitted, in float64: torch's
    gradients for every parameter to 1e-12 of the largest.

    Under jit XLA may compute the pool's input (BatchNorm, ReLU) again in each fusion that
    reads it, and with LLVM's full optimisation the float64 copies can differ in the last
    bit. XLA:CPU's rule found the argmax as ``tap == max(taps)``, comparing one copy with
    another, and sent the gradient of some windows astray: Inception-V3's float64 gradient
    check was 1.08 of its largest gradient (2.84) away from torch's at ``Conv2d_1a``, and
    this test 23 away in ``a``'s kernel (with 128 channels; 8 or 32 did not show it).
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 11, 13, 3))
    model = _ConvPoolConv()
    tmodel = []
    with jax.enable_x64(True):
        variables = model.init(jax.random.key(0), jnp.asarray(x))
        params = jax.tree.map(lambda a: np.asarray(a).copy(), variables["params"])
        for name in ("a", "b"):
            p = params[name]
            conv = torch.nn.Conv2d(
                *p["conv"]["kernel"].shape[2:], p["conv"]["kernel"].shape[0], bias=False
            ).double()
            bn = torch.nn.BatchNorm2d(p["bn"]["scale"].shape[0], eps=1e-3).double()
            p["bn"]["scale"] = rng.uniform(0.5, 1.5, p["bn"]["scale"].shape)
            p["bn"]["bias"] = rng.standard_normal(p["bn"]["bias"].shape)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(p["conv"]["kernel"].transpose(3, 2, 0, 1)))
                bn.weight.copy_(torch.from_numpy(p["bn"]["scale"]))
                bn.bias.copy_(torch.from_numpy(p["bn"]["bias"]))
            tmodel += [conv, bn, torch.nn.ReLU()]
        tmodel.insert(3, torch.nn.MaxPool2d(3, 2))
        tmodel = torch.nn.Sequential(*tmodel).train()
        out = tmodel(nchw(x))
        weights = rng.standard_normal(out.shape)
        (out * torch.from_numpy(weights)).sum().backward()
        w = jnp.asarray(weights.transpose(0, 2, 3, 1))

        def loss(p):
            y, _ = model.apply(
                {"params": p, "batch_stats": variables["batch_stats"]},
                jnp.asarray(x),
                mutable=["batch_stats"],
            )
            return jnp.sum(y * w)

        # LLVM's full optimisation, as outside the suite (conftest lowers it for compile
        # time): the recomputation that made the copies differ happens only there.
        optimised = {
            "xla_backend_optimization_level": 3,
            "xla_llvm_disable_expensive_passes": False,
        }
        got = jax.jit(jax.grad(loss), compiler_options=optimised)(jax.tree.map(jnp.asarray, params))
    tparams = dict(tmodel.named_parameters())
    for name, i in (("a", 0), ("b", 4)):
        ref = {
            "kernel": tparams[f"{i}.weight"].grad.numpy().transpose(2, 3, 1, 0),
            "scale": tparams[f"{i + 1}.weight"].grad.numpy(),
            "bias": tparams[f"{i + 1}.bias"].grad.numpy(),
        }
        g = got[name]
        for key, value in (
            ("kernel", g["conv"]["kernel"]),
            ("scale", g["bn"]["scale"]),
            ("bias", g["bn"]["bias"]),
        ):
            np.testing.assert_allclose(
                np.asarray(value),
                ref[key],
                rtol=0,
                atol=1e-12 * np.abs(ref[key]).max(),
                err_msg=f"{name}.{key}",
            )


@pytest.mark.parametrize(
    ("size", "alpha", "beta", "k", "channels"),
    [
        (5, 1e-4, 0.75, 2.0, 7),  # AlexNet's (torch's alpha convention), odd channel count
        (5, 5e-4, 0.75, 2.0, 96),  # AlexNet as the paper writes alpha
        (4, 1e-2, 0.5, 1.0, 9),  # even size: torch's window is lopsided (2 before, 1 after)
        (1, 0.3, 1.3, 0.5, 3),
        (11, 2e-2, 0.9, 1.0, 5),  # window wider than the channels
    ],
)
def test_local_response_norm(size, alpha, beta, k, channels):
    """torch.nn.LocalResponseNorm, forward and input gradient, in float64 (exact
    semantics, not float32 luck) and float32 (the bound the suite uses)."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, channels, 5, 7)) * 3  # large enough that the sum matters
    t_lrn = torch.nn.LocalResponseNorm(size, alpha, beta, k)
    w = rng.standard_normal(x.shape)
    xt = torch.tensor(x, requires_grad=True)
    ref = t_lrn(xt)
    (ref * torch.tensor(w)).sum().backward()

    def f(a):
        return layers.local_response_norm(a, size, alpha, beta, k)

    with jax.enable_x64(True):
        x_nhwc = jnp.asarray(x.transpose(0, 2, 3, 1))
        out, vjp = jax.vjp(f, x_nhwc)
        (grad,) = vjp(jnp.asarray(w.transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(out, nhwc(ref), rtol=1e-12, atol=0)
        np.testing.assert_allclose(grad, nhwc(xt.grad), rtol=1e-10, atol=1e-13)
    out32 = f(jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32))
    ref32 = t_lrn(torch.tensor(x, dtype=torch.float32))
    assert out32.dtype == jnp.float32
    assert np.abs(np.asarray(out32) - nhwc(ref32)).max() <= 1e-5 * float(np.abs(nhwc(ref32)).max())
    assert f(jnp.asarray(x.transpose(0, 2, 3, 1), jnp.bfloat16)).dtype == jnp.bfloat16
    # differentiable under jit too (a traced init value would make a generic reduction)
    g32 = jax.jit(jax.grad(lambda a: jnp.vdot(f(a), w.transpose(0, 2, 3, 1))))(
        jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32)
    )
    close(g32, nhwc(xt.grad))


def test_local_response_norm_rejects_an_empty_window():
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        layers.local_response_norm(jnp.ones((1, 2, 2, 3)), 0)
