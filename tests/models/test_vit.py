"""The Vision Transformer beyond the registry-generated equivalence pairs: the options the
default variants leave off (timm's ``dynamic_img_pad``, ``avg`` pooling with ``fc_norm``,
layer scale, ``features_only``, the heads), each against timm on a two-block tiny ViT, and
the position-embedding resampling against timm's own function."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import flaxcnn
from flaxcnn.convert import load_torch_weights
from flaxcnn.convert.convnext import randomize_layer_norm_and_scale
from flaxcnn.models.vit import resample_pos_embed

timm = pytest.importorskip("timm")
BOUND = 1e-4


def _pair(**kw):
    """A two-block timm ``vit_tiny_patch16_224`` (random, LayerNorms and layer scales
    randomised) and the flaxcnn module with its converted weights."""
    timm_kw = {k: v for k, v in kw.items() if k != "out_indices"}
    torch.manual_seed(0)
    tmodel = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=2, dynamic_img_size=True, **timm_kw
    ).eval()
    randomize_layer_norm_and_scale(tmodel, torch.Generator().manual_seed(0))
    module = flaxcnn.create_model("vit_tiny_patch16_224", depth=2, **kw)
    return tmodel, module, load_torch_weights(module, tmodel, source="timm")


def _image(h, w, seed=0):
    return np.random.default_rng(seed).standard_normal((2, h, w, 3)).astype(np.float32)


def _close(got, ref):
    got, ref = np.asarray(got), ref.detach().numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= BOUND * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("grid", [(7, 11), (20, 9), (14, 14), (1, 3)])
def test_pos_embed_resampling_is_timms(grid):
    from timm.layers import resample_abs_pos_embed

    pos = torch.randn(1, 1 + 14 * 14, 8)
    ref = resample_abs_pos_embed(pos, new_size=grid, old_size=(14, 14), num_prefix_tokens=1)
    _close(resample_pos_embed(jnp.asarray(pos.numpy()), (14, 14), grid, 1), ref)


def test_dynamic_img_pad_at_an_odd_size():
    tmodel, module, variables = _pair(dynamic_img_pad=True)
    x = _image(97, 131)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    _close(module.apply(variables, jnp.asarray(x)), ref)


def test_sides_not_multiples_of_the_patch_are_refused():
    module = flaxcnn.create_model("vit_tiny_patch16_224", depth=1)
    with pytest.raises(ValueError, match="not a multiple of the patch size 16.*dynamic_img_pad"):
        module.init(__import__("jax").random.key(0), jnp.zeros((1, 97, 128, 3)))


@pytest.mark.parametrize("kw", [{"global_pool": "avg"}, {"init_values": 0.1}])
def test_options_convert_and_agree(kw):
    tmodel, module, variables = _pair(**kw)
    params = variables["params"]
    if "global_pool" in kw:  # timm: the final norm moves after the pool
        assert "fc_norm" in params and "norm" not in params
    else:
        assert params["blocks_1"]["ls2"]["gamma"].shape == (192,)
    x = _image(112, 176)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    _close(module.apply(variables, jnp.asarray(x)), ref)


def test_heads_and_features_are_timms():
    tmodel, module, variables = _pair()
    x = _image(112, 176)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    with torch.no_grad():
        tokens = tmodel.forward_features(xt)
        pre = tmodel.forward_head(tokens, pre_logits=True)
        maps = tmodel.forward_intermediates(xt, indices=[0, 1], intermediates_only=True)
    apply = lambda **kw: module.clone(**kw).apply(variables, jnp.asarray(x))  # noqa: E731
    _close(apply(num_classes=0, global_pool=""), tokens)
    _close(apply(num_classes=0), pre)
    feats = module.clone(features_only=True, out_indices=(0, 1)).apply(
        {
            "params": {
                k: v
                for k, v in variables["params"].items()
                if k.startswith(("patch", "cls", "pos", "blocks"))
            }
        },
        jnp.asarray(x),
    )
    for got, ref in zip(feats, maps, strict=True):
        _close(got, ref.permute(0, 2, 3, 1))
    info = module.clone(features_only=True, out_indices=(0, 1)).feature_info()
    assert [(i["module"], i["reduction"], i["num_chs"]) for i in info] == [
        ("blocks.0", 16, 192),
        ("blocks.1", 16, 192),
    ]
