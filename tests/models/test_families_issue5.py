"""Family-specific behaviour of DenseNet, ResNet-D/SE-ResNet options, ConvNeXt, ResNet v2,
Xception and SENet-154 (equivalence and the model contract are covered registry-wide)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxcnn
from flaxcnn.models import DenseNet, ResNet
from flaxcnn.models.resnet import make_divisible


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


@pytest.mark.parametrize(
    ("v", "expected"), [(16.0, 16), (4.0, 8), (24.5, 24), (100 / 16, 8), (128.0, 128)]
)
def test_make_divisible_is_timms(v, expected):
    from timm.layers import make_divisible as timm_make_divisible

    assert (
        make_divisible(v, 8, round_limit=0.0)
        == expected
        == timm_make_divisible(v, 8, round_limit=0.0)
    )


def test_resnet_d_and_se_names_follow_timm():
    """Deep stem ``conv1_0..6``, avg-pool shortcut ``downsample_1/2`` (0: the pool), ``se/fc1``."""
    model = ResNet(
        stage_sizes=(1, 1),
        stem_type="deep",
        stem_width=8,
        avg_down=True,
        attn_layer="se",
        num_classes=3,
    )
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    p = v["params"]
    assert {"conv1_0", "conv1_1", "conv1_3", "conv1_4", "conv1_6", "bn1"} <= set(p)
    assert p["conv1_6"]["kernel"].shape == (3, 3, 8, 16)
    assert set(p["layer2_0"]) >= {"downsample_1", "downsample_2", "se"}
    assert "downsample_0" not in p["layer2_0"]
    assert p["layer2_0"]["se"]["fc1"]["kernel"].shape == (1, 1, 512, 32)


def test_resnet_rejects_unknown_attention():
    with pytest.raises(ValueError, match="attn_layer"):
        ResNet(stage_sizes=(1,), attn_layer="eca").init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 3))
        )


def test_dilated_resnet_d_keeps_resolution():
    """avg_down in a dilated stage uses timm's 2x2/1 'same' pool instead of striding."""
    model = ResNet(
        stage_sizes=(1, 1, 1, 1),
        stem_type="deep",
        stem_width=8,
        avg_down=True,
        replace_stride_with_dilation=(False, True, True),
        features_only=True,
    )
    x = jnp.zeros((1, 64, 64, 3))
    feats = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], x)
    assert [f.shape[1] for f in feats] == [32, 16, 8, 8, 8]


@pytest.mark.parametrize("name", ["convnext_tiny", "resnetv2_50", "xception41", "densenet121"])
def test_num_classes_zero_returns_pooled_features(name):
    model = flaxcnn.create_model(name, num_classes=0)
    out = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[0], jnp.zeros((1, 64, 64, 3))
    )
    assert out.ndim == 2
