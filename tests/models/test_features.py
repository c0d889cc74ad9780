"""Feature maps and heads of every classification model (``flaxcnn.layers.features``).

Everything model-sized is traced with ``jax.eval_shape``, never compiled:

* every model: a well-formed ``feature_info()`` (stage order, strides up to 32, distinct
  modules);
* the first model of each family and of each feature layout (class, modules, reductions; variants differing only in
  depth or width run the same feature code -- tracing all 91 would cost minutes): on a
  non-square ``H x (H + R)`` input (``R`` the largest reduction) ``features_only`` returns
  ``feature_info()``'s channels, each map of reduction ``r`` exactly ``R / r`` wider than
  high -- the stride, checked exactly -- and no larger than ``ceil(H / r)``; no
  classifier parameters are built;
* the first model of each family: ``feature_info()`` equals timm's ``features_only``
  channels, reductions and module names (timm built on the meta device, no weights);
  the heads: ``num_classes=0`` gives ``(N, C)`` with ``C`` the classifier's input width,
  ``num_classes=0, global_pool=''`` the final unpooled map, each pool type its shape;
* ``out_indices`` negative, out of range, duplicated; ``global_pool`` validation;
* one concrete check (a two-stage ResNet-18, 32x32): the last ``features_only``
  map, average-pooled and passed through ``fc``, gives the model's logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import flaxcnn
from flaxcnn._registry import _REGISTRY
from flaxcnn.layers import POOL_TYPES, apply_global_pool, feature_indices

CLASSIFIERS = [n for n, s in _REGISTRY.items() if s.task == "classification"]
FIRST = list(
    {s.family: n for n, s in reversed(_REGISTRY.items()) if s.task == "classification"}.values()
)


def _layout(name):
    info = flaxcnn.create_model(name, features_only=True).feature_info()
    return flaxcnn.get_model_spec(name).cls, tuple((i["module"], i["reduction"]) for i in info)


_FIRST_OF_LAYOUT = {_layout(n): n for n in reversed(CLASSIFIERS)}.values()
TRACED = [n for n in CLASSIFIERS if n in _FIRST_OF_LAYOUT or n in FIRST]
# Head modules besides the classifier, absent under features_only as in timm's.
EXTRA_HEADS = {
    "EfficientNet": {"conv_head", "bn2"},
    "GoogLeNet": {"aux1", "aux2"},
    "Inception3": {"AuxLogits"},
    "ResNetV2": {"norm"},
    "VisionTransformer": {"norm"},
}


def _build(name, **overrides):
    spec = flaxcnn.get_model_spec(name)
    if "depthwise_impl" in spec.fields:
        overrides["depthwise_impl"] = "conv"  # same shapes, far cheaper to trace on CPU
    return flaxcnn.create_model(name, **overrides)


def _input(name, extra_w=0):
    spec = flaxcnn.get_model_spec(name)
    side = max(64, spec.min_size)
    return jax.ShapeDtypeStruct((2, side, side + extra_w, spec.input_size[2]), jnp.float32)


def _init_shapes(model, x):
    return jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)


def _classifier_key(name):
    """The flax top-level key of the torch classifier (``classifier.6`` -> ``classifier_6``)."""
    spec = flaxcnn.get_model_spec(name)
    if spec.classifier is None:  # NiN: the class mlpconv block
        return f"block{len(spec.build().blocks) + 1}"
    parts = spec.classifier.split(".")
    return parts[0] + (f"_{parts[1]}" if len(parts) > 1 and parts[1].isdigit() else "")


_FEATURES: dict = {}


def _features(name):
    """``features_only`` maps and variables on an ``H x (H + R)`` input (cached per name)."""
    if name not in _FEATURES:
        model = _build(name, features_only=True)
        x = _input(name, model.feature_info()[-1]["reduction"])
        _FEATURES[name] = (model, x, *_init_shapes(model, x))
    return _FEATURES[name]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_feature_info_is_well_formed(name):
    info = flaxcnn.create_model(name, features_only=True).feature_info()
    reductions = [i["reduction"] for i in info]
    assert len(info) >= 3 and reductions == sorted(reductions) and reductions[-1] <= 32
    assert all(r & (r - 1) == 0 for r in reductions)  # powers of two
    assert len({i["module"] for i in info}) == len(info)
    assert all(isinstance(i["num_chs"], int) and i["num_chs"] > 0 for i in info)


@pytest.mark.parametrize("name", TRACED)
def test_features_only_shapes_match_feature_info(name):
    model, x, feats, variables = _features(name)
    info = model.feature_info()
    big = info[-1]["reduction"]
    h = x.shape[1]
    assert isinstance(feats, list) and len(feats) == len(info) >= 3
    assert [i["reduction"] for i in info] == sorted(i["reduction"] for i in info)
    for f, i in zip(feats, info, strict=True):
        r = i["reduction"]
        assert f.shape[0] == 2 and f.shape[3] == i["num_chs"], (i, f.shape)
        assert f.shape[2] - f.shape[1] == big // r, (i, f.shape)  # the stride, exactly
        assert f.shape[1] <= -(-h // r), (i, f.shape)
    heads = {_classifier_key(name), *EXTRA_HEADS.get(type(model).__name__, ())}
    assert not heads & set(variables["params"])


def _timm_feature_info(name):
    import timm

    spec = flaxcnn.get_model_spec(name)
    timm_name = spec.sources.get("timm", name)
    with torch.device("meta"):
        net = timm.create_model(timm_name, pretrained=False, features_only=True)
    return net.feature_info


@pytest.mark.parametrize(
    "name", [n for n in FIRST if "timm" in _REGISTRY[n].sources or n.startswith("vgg")]
)
def test_feature_info_matches_timm(name):
    """timm's feature metadata (vgg11: timm's same-named VGG has the same ``features``)."""
    theirs = _timm_feature_info(name)
    ours = flaxcnn.create_model(name, features_only=True).feature_info()
    assert [i["num_chs"] for i in ours] == theirs.channels()
    assert [i["reduction"] for i in ours] == theirs.reduction()
    assert [i["module"] for i in ours] == theirs.module_name()


@pytest.mark.parametrize("name", FIRST)
def test_heads(name):
    """num_classes=0: (N, classifier input width); with global_pool='': the last map; each
    pool type (``'avg'``, the default, is the contract suite's) its shape."""
    spec = flaxcnn.get_model_spec(name)
    _, _, feats, _ = _features(name)
    x = _input(name)
    has_pool = "global_pool" in spec.fields
    # A ViT's pool decides where its final LayerNorm sits (timm's fc_norm after the 'avg'-like
    # pools, norm before 'token'), so its variables change with it: keep its class token.
    pools = ("token", "token") if spec.family == "vit" else ("max", "avgmax")
    model = _build(name, num_classes=7, **({"global_pool": pools[0]} if has_pool else {}))
    logits, variables = _init_shapes(model, x)
    assert logits.shape == (2, 7)
    pre = jax.eval_shape(
        _build(name, num_classes=0, **({"global_pool": pools[1]} if has_pool else {})).apply,
        variables,
        x,
    )
    if spec.classifier is not None:
        head = variables["params"][_classifier_key(name)]
        kernels = [a for p, a in jax.tree.leaves_with_path(head) if "kernel" in str(p)]
        assert pre.shape == (2, kernels[0].shape[-2])  # the classifier's input width
    else:  # NiN's class block is a conv on the last map: pre-logits are its pooled input
        assert pre.shape == (2, feats[-1].shape[-1])
    if not has_pool:
        assert spec.family in ("lenet", "alexnet", "vgg")  # flattening heads
        return
    fmap = jax.eval_shape(_build(name, num_classes=0, global_pool="").apply, variables, x)
    if spec.family == "vit":  # timm's forward_features: the normalised tokens, class first
        grid = x.shape[1] // spec.config["patch_size"]
        assert fmap.shape == (2, 1 + grid * grid, pre.shape[-1])
        return
    # timm's forward_features: the last stage's height (the cached maps had the same H);
    # its channels, or the pre-logits width (after EfficientNet's head conv).
    h_last = feats[-1].shape[1]
    assert fmap.ndim == 4 and fmap.shape[:3] == (2, h_last, h_last)
    assert fmap.shape[3] in (feats[-1].shape[-1], pre.shape[-1])


def test_out_indices():
    model = flaxcnn.create_model("resnet18", features_only=True, out_indices=(-1, 1))
    assert [i["module"] for i in model.feature_info()] == ["layer1", "layer4"]  # stage order
    assert feature_indices(None, 3) == (0, 1, 2)
    assert feature_indices((-3, 2), 3) == (0, 2)
    for bad, match in [((5,), "out of range"), ((-6,), "out of range"), ((1, -4), "twice")]:
        with pytest.raises(ValueError, match=match) as err:
            flaxcnn.create_model("resnet18", features_only=True, out_indices=bad).feature_info()
        assert "-5..4" in str(err.value)
    with pytest.raises(ValueError, match="ints"):
        feature_indices((1.0,), 5)
    with pytest.raises(ValueError, match="sequence"):
        feature_indices(3, 5)
    with pytest.raises(ValueError, match="out of range"):
        _init_shapes(
            flaxcnn.create_model("lenet5", features_only=True, out_indices=(3,)),
            jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32),
        )


def test_global_pool_values_and_errors():
    import timm.layers

    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    for pool in POOL_TYPES[:-1]:
        ref = timm.layers.SelectAdaptivePool2d(pool_type=pool, flatten=True)(xt).numpy()
        np.testing.assert_allclose(apply_global_pool(jnp.asarray(x), pool), ref, atol=1e-6)
    assert apply_global_pool(jnp.asarray(x), "").shape == x.shape
    with pytest.raises(ValueError, match="one of \\('avg', 'max', 'avgmax', ''\\)"):
        apply_global_pool(jnp.asarray(x), "catavgmax")
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    with pytest.raises(ValueError, match="global_pool must be one of"):
        _init_shapes(flaxcnn.create_model("resnet18", global_pool="mean"), x)
    with pytest.raises(ValueError, match="needs num_classes=0"):
        _init_shapes(flaxcnn.create_model("resnet18", global_pool=""), x)


def test_features_are_the_trunk():
    """The last features_only map, pooled and through ``fc``, is the logits."""
    kw = dict(stage_sizes=(1, 1), num_classes=5)  # stem + two stages: a small compile
    model = flaxcnn.create_model("resnet18", **kw)
    features = flaxcnn.create_model("resnet18", features_only=True, **kw)

    @jax.jit
    def run(x):  # one compilation
        variables = model.init(jax.random.key(0), x)
        return variables, features.apply(variables, x), model.apply(variables, x)

    variables, feats, out = run(jax.random.normal(jax.random.key(1), (2, 32, 32, 3)))
    assert [f.shape[1] for f in feats] == [16, 8, 4]
    fc = variables["params"]["fc"]
    logits = feats[-1].mean(axis=(1, 2)) @ fc["kernel"] + fc["bias"]
    np.testing.assert_allclose(logits, out, rtol=1e-5, atol=1e-5)
