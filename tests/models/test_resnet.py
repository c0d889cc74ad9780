"""ResNet-family options beyond what the registry-wide tests cover."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxcnn
from flaxcnn.convert import verify
from flaxcnn.models import ResNet, ResNet18, ResNet50
from flaxcnn.models.resnet import make_divisible

X = jax.random.normal(jax.random.key(0), (2, 64, 96, 3))


def test_parameter_counts_match_torchvision_published():
    # torchvision's documented parameter counts (weights meta "num_params").
    expected = {
        "resnet18": 11_689_512,
        "resnet34": 21_797_672,
        "resnet50": 25_557_032,
        "resnet101": 44_549_160,
        "resnet152": 60_192_808,
        "resnext50_32x4d": 25_028_904,
        "resnext101_32x8d": 88_791_336,
        "resnext101_64x4d": 83_455_272,
        "wide_resnet50_2": 68_883_240,
        "wide_resnet101_2": 126_886_696,
    }
    for name, n in expected.items():
        model = flaxcnn.create_model(name)
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
        assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"])) == n, name


def test_zero_init_residual():
    # Bottleneck blocks, two in the first stage (a block after the projection one): what
    # ResNet-50's (3, 4, 6, 3) has, at a fraction of the initialisation cost.
    stages = (2, 1, 1, 1)
    v = ResNet50(zero_init_residual=True, stage_sizes=stages).init(
        jax.random.key(0), X[:1, :32, :32]
    )
    for i, n in enumerate(stages):
        for j in range(n):
            assert not np.any(v["params"][f"layer{i + 1}_{j}"]["bn3"]["scale"])
            assert np.all(v["params"][f"layer{i + 1}_{j}"]["bn2"]["scale"] == 1)
    v18 = ResNet18(zero_init_residual=True, stage_sizes=(1, 1, 1, 2)).init(
        jax.random.key(0), X[:1, :32, :32]
    )
    assert not np.any(v18["params"]["layer4_1"]["bn2"]["scale"])


def test_features_only_and_feature_info():
    model = ResNet50(features_only=True)
    v = model.init(jax.random.key(0), X)
    assert "fc" not in v["params"]
    feats = model.apply(v, X)
    info = model.feature_info()
    assert (
        [f.shape[-1] for f in feats] == [i["num_chs"] for i in info] == [64, 256, 512, 1024, 2048]
    )
    for f, i in zip(feats, info, strict=True):
        assert f.shape[1:3] == (-(-64 // i["reduction"]), -(-96 // i["reduction"]))
    sel = ResNet50(features_only=True, out_indices=(2, 4))
    assert [f.shape[-1] for f in sel.apply(v, X)] == [512, 2048]


def test_num_classes_zero_gives_pooled_features():
    model = ResNet18(num_classes=0)
    v = model.init(jax.random.key(0), X)
    assert "fc" not in v["params"] and model.apply(v, X).shape == (2, 512)


def test_dilated_backbone_output_stride():
    model = ResNet50(features_only=True, replace_stride_with_dilation=(False, True, True))
    v = model.init(jax.random.key(0), X)
    feats = model.apply(v, X)
    assert [f.shape[1] for f in feats] == [32, 16, 8, 8, 8]
    assert [i["reduction"] for i in model.feature_info()] == [2, 4, 8, 8, 8]


def test_dilated_resnet_equivalent_to_torchvision():
    dil = (False, True, True)
    result = verify(
        "resnet50",
        source="torchvision",
        torch_kwargs={"replace_stride_with_dilation": list(dil)},
        overrides={"replace_stride_with_dilation": dil},
        sizes=[(97, 131)],
    )
    assert result.ok, str(result)


def test_stochastic_depth_only_in_train():
    model = ResNet18(drop_path_rate=0.5, num_classes=3)
    v = model.init(jax.random.key(0), X)
    a = model.apply(v, X)
    np.testing.assert_array_equal(a, model.apply(v, X))
    t1, _ = model.apply(
        v, X, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)}
    )
    t2, _ = model.apply(
        v, X, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}
    )
    assert not np.allclose(t1, t2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block": "huge"}, "block must be one of"),
        ({"stem_type": "tiered"}, "stem_type must be one of"),
        ({"replace_stride_with_dilation": (True,)}, "3-element"),
        ({"act_layer": "rellu"}, "unknown activation 'rellu'; known: .*'relu'"),
        ({"shortcut": "C"}, "shortcut must be 'A', 'B' or None"),
        ({"shortcut": "A", "avg_down": True}, "avg_down is a projection shortcut"),
        ({"channels": (64, 128)}, r"channels gives 2 stage widths for 4 stages"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet18(**kwargs).init(jax.random.key(0), X)


def test_wrong_channel_count_and_rank():
    with pytest.raises(ValueError, match=r"NHWC input with 3 channels, got shape \(2, 64, 64, 1\)"):
        ResNet18().init(jax.random.key(0), jnp.zeros((2, 64, 64, 1)))
    with pytest.raises(ValueError, match=r"4-D NHWC batch.*x\[None\]"):
        ResNet18().init(jax.random.key(0), jnp.zeros((64, 64, 3)))
    with pytest.raises(ValueError, match="floating-point"):
        ResNet18().init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.uint8))


def test_cifar_stem_keeps_resolution():
    model = ResNet18(stem_type="cifar", num_classes=10, in_chans=1)
    x = jnp.zeros((2, 32, 32, 1))
    v = model.init(jax.random.key(0), x)
    assert v["params"]["conv1"]["kernel"].shape == (3, 3, 1, 64)
    assert model.apply(v, x).shape == (2, 10)


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


def test_act_layer_is_timms():
    """``act_layer='silu'`` is timm's ``ResNet(act_layer=nn.SiLU)``, converted, and the
    default stays ReLU (the converted weights' activation)."""
    import torch

    result = verify(
        "resnet18",
        source="timm",
        torch_kwargs={"act_layer": torch.nn.SiLU},
        overrides={"act_layer": "silu"},
        sizes=[(45, 61)],
    )
    assert result.ok, str(result)
    v = ResNet18().init(jax.random.key(0), X[:1])
    y_relu = ResNet18().apply(v, X[:1])
    assert not np.allclose(ResNet18(act_layer="silu").apply(v, X[:1]), y_relu)
    assert np.array_equal(ResNet18(act_layer=jax.nn.relu).apply(v, X[:1]), y_relu)


def test_relu_is_one_function():
    """``'relu'`` names torch's ReLU (:func:`flaxcnn.layers.relu`) everywhere, ResNet's
    ``act_layer`` default included (models/resnet.py has no ReLU of its own)."""
    from flaxcnn.layers import get_act, relu

    assert get_act("relu") is relu
    assert ResNet18().act_layer == "relu"


def _param_count(name: str, **kwargs) -> int:
    model = flaxcnn.create_model(name, **kwargs)
    side = flaxcnn.get_model_spec(name).input_size[0]
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, side, side, 3)))
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))


# He et al. 2016, Table 6 (CIFAR-10, option A), and the exact counts of the CIFAR
# re-implementations that reproduce it (BN scale and bias included; running statistics not).
CIFAR_TABLE_6 = {
    "resnet20": (0.27, 269_722),
    "resnet32": (0.46, 464_154),
    "resnet44": (0.66, 658_586),
    "resnet56": (0.85, 853_018),
    "resnet110": (1.7, 1_727_962),
}


@pytest.mark.parametrize("name", sorted(CIFAR_TABLE_6))
def test_cifar_resnet_parameter_counts_are_the_papers(name):
    millions, exact = CIFAR_TABLE_6[name]
    n = _param_count(name)
    assert n == exact
    assert round(n / 1e6, 2 if millions < 1 else 1) == millions
    # The plain network has the same layers (option A shortcuts have no parameters);
    # option B adds the two 1x1 projections and their BNs.
    assert _param_count(name, shortcut=None) == exact
    assert _param_count(name, shortcut="B") == exact + (16 * 32 + 64) + (32 * 64 + 128)


def test_cifar_resnet_shape_and_stages():
    model = flaxcnn.create_model("resnet20")
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    v = model.init(jax.random.key(0), x)
    assert model.apply(v, x).shape == (2, 10)
    assert v["params"]["conv1"]["kernel"].shape == (3, 3, 3, 16)
    assert [(i["num_chs"], i["reduction"]) for i in model.feature_info()] == [
        (16, 1),
        (16, 1),
        (32, 2),
        (64, 4),
    ]
    feats = flaxcnn.create_model("resnet20", features_only=True).apply(v, x)
    assert [f.shape[1:] for f in feats] == [(32, 32, 16), (32, 32, 16), (16, 16, 32), (8, 8, 64)]
    # option A: no projection anywhere
    assert not any("downsample" in k for blk in v["params"].values() for k in blk)


def _zero_residual_branches(v):
    """Variables whose every block's last BN outputs zero: a block then returns
    relu(shortcut(x)), so the shortcut alone is observable."""
    return jax.tree_util.tree_map_with_path(
        lambda p, a: (
            jnp.zeros_like(a)
            if jax.tree_util.keystr(p).endswith("['bn2']['scale']")
            or jax.tree_util.keystr(p).endswith("['bn2']['bias']")
            else a
        ),
        v,
    )


def test_option_a_shortcut_subsamples_and_zero_pads():
    """He et al. section 3.3, option A: the identity with stride-2 subsampling, the new
    channels zero (half before, half after the old ones)."""
    model = flaxcnn.create_model("resnet20", num_classes=0, features_only=True)
    x = jax.random.normal(jax.random.key(1), (2, 32, 31, 3))
    v = _zero_residual_branches(model.init(jax.random.key(0), x))
    stem, l1, l2, l3 = model.apply(v, x)
    np.testing.assert_array_equal(l1, stem)  # relu(0 + relu(x)) == relu(x)
    expected2 = jnp.pad(l1[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (8, 8)))
    np.testing.assert_array_equal(l2, expected2)
    assert l2.shape == (2, 16, 16, 32)  # ceil(31 / 2): as the strided 3x3 conv
    np.testing.assert_array_equal(l3, jnp.pad(l2[:, ::2, ::2, :], ((0, 0),) * 3 + ((16, 16),)))


def test_plain_network_has_no_shortcut():
    """plain20 is resnet20 without shortcuts: with the residual branches zeroed its blocks
    output zeros, where resnet20's pass their input on; ``shortcut=None`` makes any
    ResNet plain (the lectures' plain-18/34)."""
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    for name in ("plain20", "resnet20"):
        model = flaxcnn.create_model(name, features_only=True)
        v = _zero_residual_branches(model.init(jax.random.key(0), x))
        feats = model.apply(v, x)
        assert bool(jnp.any(feats[-1] != 0)) == (name == "resnet20")
    plain18 = ResNet18(shortcut=None)
    v = jax.eval_shape(plain18.init, jax.random.key(0), X)
    assert not any("downsample" in k for blk in v["params"].values() for k in blk)
    assert _param_count("resnet18", shortcut=None) == 11_689_512 - sum(
        c_in * c_out + 2 * c_out for c_in, c_out in ((64, 128), (128, 256), (256, 512))
    )


def test_resnet50_v1_is_torchvision_with_the_stride_on_the_first_1x1():
    """``resnet50_v1`` (He et al. as published) against torchvision's ResNet-50 with each
    first bottleneck's stride moved from ``conv2`` to ``conv1``: equal in eval and train
    mode at an odd non-square size, and unequal to v1.5 (the strides matter)."""
    import torch
    import torchvision

    from flaxcnn.convert import load_torch_weights
    from flaxcnn.convert.verify import randomize_bn

    torch.manual_seed(0)
    tmodel = torchvision.models.resnet50()
    for layer in (tmodel.layer2, tmodel.layer3, tmodel.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    randomize_bn(tmodel)
    model = flaxcnn.create_model("resnet50_v1")
    variables = load_torch_weights(model, tmodel.state_dict(), source="torchvision")
    x = np.random.default_rng(0).standard_normal((2, 3, 67, 45), dtype=np.float32)
    xj = jnp.asarray(x.transpose(0, 2, 3, 1))
    for train in (False, True):
        tmodel.train(train)
        with torch.no_grad():
            ref = tmodel(torch.from_numpy(x)).numpy()
        if train:
            out, _ = model.apply(variables, xj, train=True, mutable=["batch_stats"])
        else:
            out = model.apply(variables, xj)
        out = np.asarray(out)
        bound = 1e-4 * max(1.0, float(np.abs(ref).max()))
        assert float(np.abs(out - ref).max()) <= bound, train
    v15 = flaxcnn.create_model("resnet50").apply(variables, xj)
    assert float(np.abs(np.asarray(v15) - out).max()) > 1e-2
