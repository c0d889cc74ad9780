"""flaxcnn.clip on the registry's CLIP module (a tiny random-init ViT-B/32 variant): the
zero-shot path is the model's own forward pass, and CLIP's preprocessing sizes are the
registry's input sizes."""

import jax
import numpy as np
import pytest

import flaxcnn
from flaxcnn.clip import classify, tokenize, zero_shot_classifier
from flaxcnn.preprocess import CLIP_INPUT_SIZES

# ViT-B/32's architecture, shrunk: one block per tower, narrow, 32 px images.
TINY = dict(
    embed_dim=16,
    image_resolution=32,
    vision_layers=1,
    vision_width=64,
    vision_patch_size=16,
    transformer_width=32,
    transformer_heads=2,
    transformer_layers=1,
)
TEXTS = ["a photo of a cat", "a dog", "chain saw", "Santa Claus sleigh"]


@pytest.fixture(scope="module")
def tiny_clip():
    module = flaxcnn.create_model("clip_vit_b32", **TINY)
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    variables = jax.jit(module.init)(jax.random.key(0), images, tokenize(TEXTS[:1]))
    return module, variables, images


def test_input_sizes_match_registry():
    assert set(CLIP_INPUT_SIZES) == set(flaxcnn.list_models(family="clip"))
    for name, n_px in CLIP_INPUT_SIZES.items():
        assert flaxcnn.get_model_spec(name).input_size[:2] == (n_px, n_px), name


def test_classify_is_the_models_softmax(tiny_clip):
    module, variables, images = tiny_clip
    classifier = zero_shot_classifier(module, variables, TEXTS, ("{}",), batch_size=3)
    scale = float(np.exp(variables["params"]["logit_scale"]))
    probs = classify(module, variables, images, classifier, scale=scale)
    logits_per_image, _ = jax.jit(module.apply)(variables, images, tokenize(TEXTS))
    np.testing.assert_allclose(probs, jax.nn.softmax(logits_per_image, -1), rtol=0, atol=1e-6)


def test_prompt_ensemble_of_the_model(tiny_clip):
    module, variables, _ = tiny_clip
    templates = ("a photo of a {}.", "a drawing of the {}.")
    got = zero_shot_classifier(module, variables, TEXTS, templates, batch_size=5)
    encode_text = jax.jit(lambda v, t: module.apply(v, t, method="encode_text"))
    cols = []
    for name in TEXTS:
        emb = encode_text(variables, tokenize([t.format(name) for t in templates]))
        emb = np.asarray(emb, np.float64)
        emb = (emb / np.linalg.norm(emb, axis=-1, keepdims=True)).mean(0)
        cols.append(emb / np.linalg.norm(emb))
    np.testing.assert_allclose(got, np.stack(cols, 1), rtol=0, atol=1e-6)


def test_zero_shot_matches_openais_notebook_in_torch():
    """The whole chain against OpenAI's: a tiny random torch CLIP converted to flaxcnn; the
    classifier and probabilities computed as OpenAI's ImageNet notebook does, with
    clip.tokenize and the torch model's encode_text / encode_image."""
    import warnings

    import torch

    with warnings.catch_warnings():  # clip imports pkg_resources, deprecated in setuptools
        warnings.simplefilter("ignore")
        import clip
        from clip.model import CLIP

    from flaxcnn.clip import IMAGENET_CLASSNAMES, IMAGENET_TEMPLATES
    from flaxcnn.convert import from_torch

    torch.manual_seed(0)
    c = TINY
    tmodel = CLIP(
        c["embed_dim"],
        c["image_resolution"],
        c["vision_layers"],
        c["vision_width"],
        c["vision_patch_size"],
        77,
        49408,
        c["transformer_width"],
        c["transformer_heads"],
        c["transformer_layers"],
    ).eval()
    module, variables = from_torch("ViT-B/32", tmodel, source="openai", **TINY)
    names, templates = IMAGENET_CLASSNAMES[:6], IMAGENET_TEMPLATES[:4]
    images = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)

    with torch.no_grad():  # OpenAI's notebook, verbatim but for the names
        zeroshot_weights = []
        for classname in names:
            texts = clip.tokenize([template.format(classname) for template in templates])
            class_embeddings = tmodel.encode_text(texts)
            class_embeddings /= class_embeddings.norm(dim=-1, keepdim=True)
            class_embedding = class_embeddings.mean(dim=0)
            class_embedding /= class_embedding.norm()
            zeroshot_weights.append(class_embedding)
        zeroshot_weights = torch.stack(zeroshot_weights, dim=1)
        image_features = tmodel.encode_image(torch.from_numpy(images.transpose(0, 3, 1, 2)))
        image_features /= image_features.norm(dim=-1, keepdim=True)
        ref_probs = (100.0 * image_features @ zeroshot_weights).softmax(dim=-1)

    classifier = zero_shot_classifier(module, variables, names, templates, batch_size=5)
    np.testing.assert_allclose(classifier, zeroshot_weights.numpy(), rtol=0, atol=1e-4)
    probs = classify(module, variables, images, classifier)
    np.testing.assert_allclose(probs, ref_probs.numpy(), rtol=0, atol=1e-4)
