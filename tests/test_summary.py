"""Receptive fields from the jaxpr, against the lectures' hand calculations and brute force;
multiply-adds against hand counts and the MobileNet paper's tables.

Everything here traces (``jax.make_jaxpr``/``eval_shape``) except the brute-force check,
which differentiates a tiny net on a 64x64 image.
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxcnn
from flaxcnn.layers import Conv2d, DepthwiseConv2d, SqueezeExcite, avg_pool2d, max_pool2d
from flaxcnn.models import ResNet18
from flaxcnn.summary import (
    ReceptiveField,
    count_macs,
    layer_receptive_fields,
    receptive_field,
    receptive_fields,
    summary,
)


class Stack(nn.Module):
    """Layers applied in order (``Conv2d`` modules or pooling functions), ReLU after convs."""

    layers: Sequence[Callable]

    @nn.compact
    def __call__(self, x):
        for layer in self.layers:
            x = nn.relu(layer(x)) if isinstance(layer, nn.Module) else layer(x)
        return x


def field(*layers, size=32, chans=4) -> ReceptiveField:
    (out,) = receptive_fields(
        lambda x, v: Stack(layers).apply(v, x),
        jax.ShapeDtypeStruct((1, size, size, chans), jnp.float32),
        jax.eval_shape(Stack(layers).init, jax.random.key(0), jnp.zeros((1, size, size, chans))),
    )[0]
    return out


def test_two_3x3_convs_see_what_one_5x5_sees():
    """The lectures' argument for VGG: 3 + (3 - 1) = 5 pixels, with 18 C^2 weights not 25 C^2."""
    two = field(Conv2d(8, 3, padding=1), Conv2d(8, 3, padding=1))
    one = field(Conv2d(8, 5, padding=2))
    assert two.size == one.size == (5, 5) and two.stride == one.stride == (1, 1)
    three = field(*[Conv2d(8, 3, padding=1) for _ in range(3)])
    assert three.size == field(Conv2d(8, 7, padding=3)).size == (7, 7)


def test_stride_pool_and_dilation_by_hand():
    """rf_out = rf_in + (k_eff - 1) * jump_in, jump_out = jump_in * stride, k_eff = (k-1)d + 1:
    conv 3/2 -> 3 (jump 2); max pool 3/2 -> 3 + 2*2 = 7 (jump 4); conv 3 dilation 2
    (k_eff 5) -> 7 + 4*4 = 23; avg pool 2/2 -> 23 + 1*4 = 27 (jump 8); a 1x3 conv grows W
    only -> 27 x (27 + 2*8) = 27 x 43."""
    f = field(
        Conv2d(4, 3, stride=2, padding=1),
        lambda x: max_pool2d(x, 3, 2, padding=1),
        Conv2d(4, 3, padding=2, dilation=2),
        lambda x: avg_pool2d(x, 2, 2),
        Conv2d(4, (1, 3), padding=(0, 1)),
        size=64,
    )
    assert f.size == (27, 43) and f.stride == (8, 8) and f.shape == (8, 8)


def test_vgg16_layer_by_layer():
    """VGG-16 by hand: two 3x3 convs -> 5; pool 2/2 -> 6 (jump 2); two convs -> 6 + 2*2*2 = 14;
    pool -> 16 (jump 4); three convs -> 16 + 3*2*4 = 40; pool -> 44 (jump 8); three convs
    -> 44 + 3*2*8 = 92; pool -> 100 (jump 16); three convs -> 100 + 3*2*16 = 196 (conv5_3,
    torch ``features.28``); pool5 -> 196 + 1*16 = 212 (jump 32), the 7x7 map the classifier
    flattens."""
    layers = layer_receptive_fields("vgg16")
    convs = [layers[f"features_{i}"].size[0] for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)]
    assert convs == [3, 5, 10, 14, 24, 32, 40, 60, 76, 92]
    assert layers["features_28"] == ReceptiveField((196, 196), (16, 16), (14, 14))
    assert receptive_field("vgg16") == ReceptiveField((212, 212), (32, 32), (7, 7))


def test_alexnet_and_zfnet():
    """AlexNet: conv 11/4 -> 11 (jump 4); pool 3/2 -> 19 (8); conv 5 -> 51; pool -> 67 (16);
    three 3x3 convs -> 163; pool -> 195 (32). ZFNet: conv 7/2 -> 7 (2); pool 3/2 -> 11 (4);
    conv 5/2 -> 27 (8); pool -> 43 (16); three 3x3 -> 139; pool -> 171 (32)."""
    assert receptive_field("alexnet") == ReceptiveField((195, 195), (32, 32), (6, 6))
    assert receptive_field("zfnet").size == (171, 171)


def test_resnet18_stages_and_feature_info():
    """Stem 7/2 -> 7; pool 3/2 -> 11 (jump 4); layer1, four 3x3 -> 43; layer2 -> 43 + 2*4 +
    3*2*8 = 99; layer3 -> 99 + 2*8 + 3*2*16 = 211; layer4 -> 211 + 2*16 + 3*2*32 = 435."""
    model = ResNet18(features_only=True)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    stages, _ = receptive_fields(lambda x, v: model.apply(v, x), x, v)
    assert [f.size[0] for f in stages] == [7, 43, 99, 211, 435]
    assert [f.stride[0] for f in stages] == [i["reduction"] for i in model.feature_info()]


def test_squeeze_excite_is_global_context():
    f = field(Conv2d(8, 3, padding=1), SqueezeExcite(2), Conv2d(8, 3, padding=1))
    assert f.size == (5, 5) and f.global_context
    assert "global context" in str(f) and not field(Conv2d(8, 3)).global_context


class Branchy(nn.Module):
    """Strides, dilation, TF 'same' padding, a shifted-slice depthwise conv, average
    pooling and two branches of different width (an inception-like concat)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(Conv2d(4, 3, stride=2, padding="same", name="a")(x))
        x = DepthwiseConv2d(5, padding=2, depthwise_impl="shift", name="dw")(x)
        x = avg_pool2d(x, 3, 2, padding=1)
        wide = Conv2d(4, 3, padding=2, dilation=2, name="wide")(x)
        narrow = Conv2d(4, 1, name="narrow")(x)
        return Conv2d(4, 3, padding=1, name="out")(jnp.concatenate([wide, narrow], -1))


def test_brute_force_support_of_the_input_gradient():
    """The field equals the support of d out[centre] / d input (positive weights and
    inputs: ReLUs stay open and nothing cancels), and the stride equals the shift of that
    support between neighbouring output pixels."""
    model, n = Branchy(), 64
    x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (1, n, n, 3)), jnp.float32)
    v = jax.tree.map(lambda a: jnp.abs(a) + 0.01, model.init(jax.random.key(0), x))
    out = model.apply(v, x)
    (f,), _ = receptive_fields(lambda x, v: model.apply(v, x), x, v)

    c = out.shape[1] // 2
    onehot = np.zeros((2, *out.shape), np.float32)
    onehot[0, 0, c, c] = onehot[1, 0, c + 1, c] = 1.0  # the centre pixel and the one below

    @jax.jit
    def grads(x):
        _, vjp = jax.vjp(lambda x: model.apply(v, x), x)
        return jax.vmap(lambda t: vjp(t)[0])(jnp.asarray(onehot))

    supports = []
    for g in np.asarray(grads(x)):
        rows, cols = np.nonzero(np.abs(g[0]).sum(-1))
        supports.append((rows.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))
    (r0, h, w), (r1, *_) = supports
    assert f.size == (h, w) == (39, 39)  # 3 (jump 2), dw 5: 11, pool 3/2: 15 (4), +4*4, +2*4
    assert r1 - r0 == f.stride[0] == 4


@pytest.mark.parametrize(
    "name,size", [("lenet5", 32), ("nin", 195), ("resnet50", 427), ("resnext50_32x4d", 427)]
)
def test_published_values(name, size):
    """LeNet-5's C5 sees the whole 32x32 digit; NiN 195 as AlexNet; ResNet-50 427 as
    published (Araujo, Norris & Sim, Computing Receptive Fields of Convolutional Neural
    Networks, Distill 2019); ResNeXt-50's is ResNet-50's (on CPU its grouped convs are
    loops over the groups, which the walk reads in their portable form)."""
    assert receptive_field(name).size == (size, size)


def test_macs_by_hand():
    """A strided, padded 3x3 conv, a grouped 1x1 conv, a depthwise 3x3 conv and a linear
    layer: output elements times the inputs each one sums (per group); no bias, no pooling."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = Conv2d(8, 3, stride=2, padding=1)(x)  # 9x13x8 outputs, 3*3*3 taps
            x = Conv2d(16, 1, groups=4)(x)  # 9x13x16, 2 inputs per output
            x = DepthwiseConv2d(3, padding=1)(x)  # 9x13x16, 9 taps
            return nn.Dense(10)(x.mean((1, 2)))  # 16 inputs per output

    x = jnp.zeros((2, 17, 25, 3))
    v = jax.eval_shape(Net().init, jax.random.key(0), x)
    want = 2 * (9 * 13 * 8 * 27 + 9 * 13 * 16 * 2 + 9 * 13 * 16 * 9 + 10 * 16)
    for mode in ("auto", "portable"):  # counted on one path, whichever is in force
        with flaxcnn.kernels(mode):
            assert count_macs(Net().apply, v, x) == want


# Howard et al. 2017, table 6 (width multiplier, 224x224) and table 7 (resolution, width 1.0):
# millions of mult-adds and of parameters, as printed (149 and 290 are 149.5 and 290.7 cut).
MOBILENET_TABLES = [
    ("mobilenetv1_100", 224, 569, 4.2),
    ("mobilenetv1_075", 224, 325, 2.6),
    ("mobilenetv1_050", 224, 149, 1.3),
    ("mobilenetv1_025", 224, 41, 0.5),
    ("mobilenetv1_100", 192, 418, 4.2),
    ("mobilenetv1_100", 160, 290, 4.2),
    ("mobilenetv1_100", 128, 186, 4.2),
]


@pytest.mark.parametrize(("name", "size", "mmacs", "mparams"), MOBILENET_TABLES)
def test_mobilenet_multipliers_cost_what_the_paper_says(name, size, mmacs, mparams):
    module = flaxcnn.create_model(name)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    v = jax.eval_shape(module.init, jax.random.key(0), x)
    assert count_macs(module.apply, v, x) / 1e6 == pytest.approx(mmacs, abs=1.0)
    params = sum(a.size for a in jax.tree.leaves(v["params"]))
    assert params / 1e6 == pytest.approx(mparams, abs=0.05)


def test_summary_flops_count_every_group():
    """On CPU a grouped conv is a loop over its groups, whose body XLA's cost analysis
    counts once; the summary analyses the portable form, so every group is counted
    (measured: 0.993 of the mult-adds at 64x64, XLA leaving out taps on the zero padding;
    0.962 when the loop was analysed)."""
    r = summary("resnext50_32x4d", (64, 64), compile=False)
    assert 0.98 * r.macs < r.flops / 2 < 1.05 * r.macs
