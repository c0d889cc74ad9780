"""Family-specific checks of the classic networks (LeNet-5 ... Inception v3).

Equivalence with torchvision/timm is proven for every registered source by
tests/convert/test_equivalence.py; this file covers what that cannot: models with no
torch counterpart (parameter counts from the papers and course material, output shapes,
a few training steps) and the auxiliary-head behaviour of GoogLeNet and Inception v3.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxcnn
from flaxcnn.convert.core import nchw_flatten_linear
from flaxcnn.models.googlenet import transform_input


def _n_params(name, **kw):
    spec = flaxcnn.get_model_spec(name)
    model = flaxcnn.create_model(name, **kw)
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *spec.input_size)))
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v["params"]))


@pytest.mark.parametrize(
    ("name", "kw", "expected"),
    [
        # LeNet-5, "about 60k": 156 + 2,416 + 48,120 + 10,164 + 850 in both forms.
        ("lenet5", {}, 61_706),
        ("lenet5_d2l", {}, 61_706),
        # Krizhevsky et al. 2012 widths on 227x227: the seeds' table totals 62,378,344.
        ("alexnet_paper", {}, 62_378_344),
        # torchvision's AlexNet (its weights' metadata: 61,100,840).
        ("alexnet", {}, 61_100_840),
        # ZFNet: AlexNet-paper widths with 7x7 conv1 (3*96*49 + 96 instead of 3*96*121 + 96).
        ("zfnet", {}, 62_378_344 - 3 * 96 * (121 - 49)),
        # torchvision metadata (without aux heads: 6,624,904; 27,161,264 with them).
        ("googlenet", {"aux_logits": False}, 6_624_904),
        ("inception_v3", {}, 27_161_264),
        ("vgg16", {}, 138_357_544),
        ("vgg19_bn", {}, 143_678_248),
    ],
)
def test_parameter_counts(name, kw, expected):
    assert _n_params(name, **kw) == expected


@pytest.mark.parametrize(
    ("name", "features"),
    [("lenet5", 84), ("lenet5_d2l", 84), ("alexnet_paper", 4096), ("zfnet", 4096), ("nin", 384)],
)
def test_output_shapes(name, features):
    spec = flaxcnn.get_model_spec(name)
    x = jnp.zeros((2, *spec.input_size))
    for n, want in ((10, (2, 10)), (0, (2, features))):
        model = flaxcnn.create_model(name, num_classes=n)
        out = jax.eval_shape(lambda x, m=model: m.init_with_output(jax.random.key(0), x)[0], x)
        assert out.shape == want


def test_lenet_accepts_rgb_and_checks_layout():
    model = flaxcnn.create_model("lenet5", in_chans=3)
    x = jnp.zeros((1, 32, 32, 3))
    out, _ = model.init_with_output(jax.random.key(0), x)
    assert out.shape == (1, 10)
    with pytest.raises(ValueError, match="NCHW"):
        model.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match="c5"):
        flaxcnn.create_model("lenet5", c5="pool", in_chans=3).init(jax.random.key(0), x)


@pytest.mark.parametrize(
    ("name", "size", "steps", "lr", "classes"),
    [
        ("lenet5", 32, 20, 1e-2, 4),
        ("lenet5_d2l", 28, 20, 1e-2, 4),
        ("nin", 67, 16, 1e-4, 10),
        ("zfnet", 63, 8, 3e-4, 10),
        ("alexnet_paper", 67, 8, 3e-4, 10),
        ("googlenet_paper", 79, 8, 3e-4, 10),
    ],
)
def test_loss_falls_on_a_tiny_batch(name, size, steps, lr, classes):
    spec = flaxcnn.get_model_spec(name)
    model = flaxcnn.create_model(name, num_classes=classes)
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (8, size, size, spec.input_size[2]))
    y = jax.random.randint(ky, (8,), 0, classes)
    # Jitted throughout: eager, every primitive compiles on its own (GoogLeNet: 2x the time).
    params = jax.jit(model.init)(jax.random.key(1), x)["params"]
    tx = optax.adam(lr)

    def loss_fn(p, rng):
        logits = model.apply({"params": p}, x, train=True, rngs={"dropout": rng})
        if isinstance(logits, tuple):  # GoogLeNet's aux heads, weighted 0.3 (section 5)
            return sum(
                w * optax.softmax_cross_entropy_with_integer_labels(z, y).mean()
                for w, z in zip((1.0, 0.3, 0.3), logits, strict=True)
            )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, opt, rng):
        loss, g = jax.value_and_grad(loss_fn)(p, rng)
        upd, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, upd), opt, loss

    @jax.jit
    def eval_loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(
            model.apply({"params": p}, x), y
        ).mean()

    before = float(eval_loss(params))
    opt = tx.init(params)
    for i in range(steps):
        params, opt, _ = step(params, opt, jax.random.key(i))
    after = float(eval_loss(params))
    assert np.isfinite(after) and after < before - 0.1, (before, after)


def test_alexnet_paper_is_the_papers_network_in_torch_layers():
    """``alexnet_paper`` against the same network built from torch layers: torchvision's
    AlexNet with the paper's widths and ``nn.LocalResponseNorm(5, 5e-4, 0.75, 2)`` after the
    first two ReLUs (the paper's alpha 1e-4 on the plain sum; section 3.3), converted with
    torchvision's rules after the LRN indices are renumbered away. Eval mode (no state, no
    train-mode difference but dropout) at the paper's 227 and an odd non-square size."""
    import torch
    import torchvision
    from torch import nn

    from flaxcnn.convert import load_torch_weights

    torch.manual_seed(0)
    tmodel = torchvision.models.alexnet().eval()
    widths, layers, renumber, c_in = [], [], {}, 3
    for out_ch, k, s, p, pool in flaxcnn.models.alexnet.ALEXNET_PAPER:
        renumber[len(layers)] = 2 * len(widths) + sum(w[1] for w in widths)
        layers += [nn.Conv2d(c_in, out_ch, k, s, p), nn.ReLU()]
        if len(widths) < 2:
            layers.append(nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0))
        if pool:
            layers.append(nn.MaxPool2d(3, 2))
        widths.append((out_ch, pool))
        c_in = out_ch
    tmodel.features = nn.Sequential(*layers)
    sd = {}
    for key, value in tmodel.state_dict().items():
        if key.startswith("features."):
            _, i, leaf = key.split(".")
            key = f"features.{renumber[int(i)]}.{leaf}"
        sd[key] = value
    model = flaxcnn.create_model("alexnet_paper")
    variables = load_torch_weights(model, sd, source="torchvision")
    for hw in ((227, 227), (231, 245)):
        x = np.random.default_rng(0).standard_normal((2, 3, *hw), dtype=np.float32) * 40
        with torch.no_grad():
            ref = tmodel(torch.from_numpy(x)).numpy()
        out = np.asarray(model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1))))
        assert float(np.abs(out - ref).max()) <= 1e-4 * max(1.0, float(np.abs(ref).max())), hw
        # the LRN acts: without it the outputs differ
        plain = flaxcnn.create_model("alexnet_paper", lrn=False)
        out_plain = np.asarray(plain.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1))))
        assert float(np.abs(out_plain - ref).max()) > 1e-2 * float(np.abs(ref).max())


def test_googlenet_paper_is_table_1():
    """``googlenet_paper``'s parameters are those of the paper's Table 1 widths with biased
    convs (no BatchNorm), 5x5 convs in the 5x5 branches, and section 5's aux heads (1x1
    conv to 128, FC 1024, FC 1000), counted here from the table."""
    from flaxcnn.models.googlenet import INCEPTIONS

    def conv(k, c_in, c_out):
        return k * k * c_in * c_out + c_out

    expected = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192)
    c_in = 192
    for a, b_r, b, c_r, c, p in INCEPTIONS.values():
        expected += conv(1, c_in, a) + conv(1, c_in, b_r) + conv(3, b_r, b)
        expected += conv(1, c_in, c_r) + conv(5, c_r, c) + conv(1, c_in, p)
        c_in = a + b + c + p
    expected += 1024 * 1000 + 1000
    aux = sum(conv(1, c, 128) + 2048 * 1024 + 1024 + 1024 * 1000 + 1000 for c in (512, 528))
    assert _n_params("googlenet_paper") == expected + aux
    assert _n_params("googlenet_paper", aux_logits=False) == expected
    model = flaxcnn.create_model("googlenet_paper", num_classes=4)
    x = jax.random.normal(jax.random.key(0), (2, 79, 85, 3))
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    assert set(v) == {"params"}  # no BatchNorm, no state
    assert v["params"]["inception3a"]["branch3_1"]["conv"]["kernel"].shape == (5, 5, 16, 32)
    outs = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, rngs={"dropout": jax.random.key(0)}), v, x
    )
    assert [o.shape for o in outs] == [(2, 4)] * 3
    with pytest.raises(ValueError):  # below min_size the aux heads' 5x5 pool has no window
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 48, 48, 3)))


def _apply_fns(model):
    evaluate = jax.jit(model.apply)
    train = jax.jit(
        lambda v, x: model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}
        )[0]
    )
    return evaluate, train


def test_googlenet_aux_heads_only_in_train_mode():
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    model = flaxcnn.create_model("googlenet", num_classes=5)
    variables = jax.jit(model.init)(jax.random.key(1), x)
    assert {"aux1", "aux2"} <= set(variables["params"])
    evaluate, train = _apply_fns(model)
    out = evaluate(variables, x)
    assert isinstance(out, jax.Array) and out.shape == (2, 5)
    outs = train(variables, x)
    assert isinstance(outs, tuple) and len(outs) == 3  # (logits, aux2, aux1) as torchvision
    assert all(o.shape == (2, 5) for o in outs)
    assert not np.allclose(outs[1], outs[2])

    # Without aux heads: no parameters for them, and train mode returns the logits alone.
    plain = flaxcnn.create_model("googlenet", num_classes=5, aux_logits=False)
    v = jax.eval_shape(plain.init, jax.random.key(1), x)
    assert not {"aux1", "aux2"} & set(v["params"])
    out = jax.eval_shape(_apply_fns(plain)[1], v, x)
    assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (2, 5)


def test_inception_v3_without_aux_runs_at_75():
    # torchvision's min_size (75) holds without the aux head, which needs 299.
    model = flaxcnn.create_model("inception_v3", num_classes=5, aux_logits=False)
    x = jnp.zeros((1, 75, 91, 3))
    variables = jax.eval_shape(model.init, jax.random.key(1), x)
    assert "AuxLogits" not in variables["params"]
    out = jax.eval_shape(_apply_fns(model)[1], variables, x)
    assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (1, 5)


def test_transform_input_is_torchvisions():
    x = np.random.default_rng(0).standard_normal((1, 4, 5, 3)).astype(np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = (x * std + mean - 0.5) / 0.5  # un-normalise, then (x - 0.5) / 0.5
    np.testing.assert_allclose(transform_input(jnp.asarray(x)), want, atol=1e-6)


def test_googlenet_without_aux_converts():
    import torchvision

    from flaxcnn.convert import from_torch

    t = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    module, variables = from_torch("googlenet", t, source="torchvision")
    assert module.aux_logits is False and "aux1" not in variables["params"]


def test_nchw_flatten_linear():
    # torch: y = W @ x.reshape(C*H*W) in (c, h, w) order; flax: x_nhwc.reshape(H*W*C) @ K.
    rng = np.random.default_rng(0)
    c, h, w, out = 3, 2, 4, 5
    x = rng.standard_normal((c, h, w))
    weight = rng.standard_normal((out, c * h * w))
    t = nchw_flatten_linear("^params/fc$", h, w)
    fn, inverse = t.fn, t.inverse
    assert t.matches("params/fc") and not t.matches("params/fc2")
    kernel = fn(weight)
    np.testing.assert_allclose(x.transpose(1, 2, 0).reshape(-1) @ kernel, weight @ x.reshape(-1))
    np.testing.assert_array_equal(inverse(kernel), weight)
