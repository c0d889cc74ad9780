"""CLIP beyond the registry-generated pairs (which run the nine full-size models from both
sources): the whole API on two tiny CLIPs built with OpenAI's own constructor, one per
image tower, in seconds; shorter contexts; the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import flaxcnn
from flaxcnn.convert import load_torch_weights
from flaxcnn.convert.clip import clip_example_batch, prepare_clip
from flaxcnn.convert.verify import randomize_bn
from flaxcnn.models.clip import CLIP

clip_model = pytest.importorskip("clip.model")

TEXT = dict(context_length=77, vocab_size=49408, transformer_width=32, transformer_heads=2)
TINY = {
    "resnet": dict(
        embed_dim=24, image_resolution=64, vision_layers=(1, 2, 1, 1), vision_width=8, **TEXT
    ),
    "vit": dict(
        embed_dim=24,
        image_resolution=48,
        vision_layers=2,
        vision_width=64,
        vision_patch_size=16,
        **TEXT,
    ),
}


def _pair(tower):
    c = {**TINY[tower], "transformer_layers": 2}
    torch.manual_seed(0)
    tmodel = clip_model.CLIP(
        c["embed_dim"],
        c["image_resolution"],
        c["vision_layers"],
        c["vision_width"],
        c.get("vision_patch_size"),
        c["context_length"],
        c["vocab_size"],
        c["transformer_width"],
        c["transformer_heads"],
        c["transformer_layers"],
    ).float()
    prepare_clip(tmodel, randomize_bn(tmodel))
    module = CLIP(**{"vision_patch_size": None, **c})
    return tmodel, module, load_torch_weights(module, tmodel, source="openai")


def _close(got, ref, bound=1e-4):
    got, ref = np.asarray(got), ref.detach().numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= bound * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("tower", ["resnet", "vit"])
def test_tiny_clip_agrees_with_openai(tower):
    tmodel, module, v = _pair(tower)
    images, tokens = clip_example_batch(np.random.default_rng(0), 2, module.image_resolution)
    ti, tt = torch.from_numpy(images), torch.from_numpy(tokens)
    x, t = jnp.asarray(images.transpose(0, 2, 3, 1)), jnp.asarray(tokens, jnp.int32)
    tmodel.eval()
    with torch.no_grad():
        per_image, per_text = tmodel(ti, tt)
        image, text = tmodel.encode_image(ti), tmodel.encode_text(tt)
        short = tmodel.encode_text(tt[:, :20].clone().index_fill_(1, torch.tensor([19]), 49407))
    got = module.apply(v, x, t)
    _close(got[0], per_image)
    _close(got[1], per_text)
    assert got[0].shape == (2, 3) and got[1].shape == (3, 2)
    _close(module.apply(v, x, method="encode_image"), image)
    _close(module.apply(v, t, method="encode_text"), text)
    _close(module.apply(v, t[:, :20].at[:, 19].set(49407), method="encode_text"), short)
    if tower == "resnet":  # BatchNorm on batch statistics, and the updated statistics
        tmodel.train()
        with torch.no_grad():
            ref = tmodel.encode_image(ti)
        out, state = module.apply(v, x, method="encode_image", train=True, mutable=["batch_stats"])
        _close(out, ref)
        _close(state["batch_stats"]["visual"]["bn1"]["var"], tmodel.visual.bn1.running_var)


def test_clip_errors():
    module = CLIP(**{**TINY["vit"], "transformer_layers": 1})
    v = jax.eval_shape(module.init, jax.random.key(0), *module.example_inputs((1,)))
    _, tokens = module.example_inputs((1,))
    with pytest.raises(ValueError, match="takes 48x48 images"):
        jax.eval_shape(lambda: module.apply(v, jnp.zeros((1, 64, 64, 3)), tokens))
    with pytest.raises(ValueError, match="integer token ids"):
        jax.eval_shape(lambda: module.apply(v, tokens.astype(jnp.float32), method="encode_text"))
    with pytest.raises(ValueError, match="more than context_length 77"):
        jax.eval_shape(lambda: module.apply(v, jnp.zeros((1, 78), jnp.int32), method="encode_text"))
    with pytest.raises(ValueError, match="NCHW"):
        jax.eval_shape(lambda: module.apply(v, jnp.zeros((1, 3, 48, 48)), tokens))


def test_registry_configs_are_openais():
    """The nine registered configs are the ones OpenAI's build_model reads off the released
    checkpoints (open_clip's -quickgelu configs list the same numbers)."""
    import json
    from importlib import resources

    for name in flaxcnn.list_models("clip_*"):
        spec = flaxcnn.get_model_spec(name)
        oc = json.loads(
            resources.files("open_clip")
            .joinpath(f"model_configs/{spec.sources['open_clip']}.json")
            .read_text()
        )
        vision, text = oc["vision_cfg"], oc["text_cfg"]
        c = spec.config
        layers = vision["layers"]
        assert c["embed_dim"] == oc["embed_dim"] and oc["quick_gelu"]
        assert c["image_resolution"] == vision["image_size"] == spec.input_size[0]
        assert (
            tuple(c["vision_layers"]) == tuple(layers)
            if isinstance(layers, list)
            else (c["vision_layers"] == layers)
        )
        assert c["vision_width"] == vision["width"]
        assert c.get("vision_patch_size") == vision.get("patch_size")
        assert (c["transformer_width"], c["transformer_heads"]) == (text["width"], text["heads"])
