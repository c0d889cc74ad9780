"""Zero-shot classifier: the paper's prompt ensembling and the seed's probabilities, checked
against a numpy computation on a test double whose embeddings are known in closed form;
the shipped ImageNet templates and class names are open_clip's (OpenAI's notebook's)."""

import warnings
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcnn.clip import (
    IMAGENET_CLASSNAMES,
    IMAGENET_TEMPLATES,
    classify,
    zero_shot_classifier,
)

with warnings.catch_warnings():  # clip imports pkg_resources, deprecated in setuptools
    warnings.simplefilter("ignore")
    import clip
from open_clip import zero_shot_metadata

EMBED = 6


class LinearClipDouble(nn.Module):
    """A test double, not CLIP: ``encode_text`` is the token ids (scaled) times a matrix,
    ``encode_image`` the per-channel image mean times another, so numpy computes both
    exactly. ``traces`` counts how often ``encode_text`` is traced (that is, compiled)."""

    traces: ClassVar[list[int]] = [0]  # not a field: linen modules are frozen dataclasses

    def setup(self):
        self.text = self.param("text", nn.initializers.normal(1.0), (77, EMBED))
        self.image = self.param("image", nn.initializers.normal(1.0), (3, EMBED))

    def encode_text(self, tokens):
        self.traces[0] += 1
        return (tokens / 49408.0) @ self.text

    def encode_image(self, images):
        return images.mean(axis=(1, 2)) @ self.image

    def __call__(self, images, tokens):
        return self.encode_image(images), self.encode_text(tokens)


@pytest.fixture(scope="module")
def double():
    module = LinearClipDouble()
    variables = module.init(
        jax.random.key(0), jnp.zeros((1, 4, 4, 3)), jnp.zeros((1, 77), jnp.int32)
    )
    return module, jax.tree.map(np.asarray, variables)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference_classifier(variables, class_names, templates):
    """OpenAI's notebook, in float64 numpy, tokenized by OpenAI's clip.tokenize."""
    w = np.asarray(variables["params"]["text"], np.float64)
    columns = []
    for name in class_names:
        tokens = clip.tokenize([t.format(name) for t in templates]).numpy()
        emb = _unit((tokens / 49408.0) @ w)
        columns.append(_unit(emb.mean(0)))
    return np.stack(columns, axis=1)


CLASSES = ["tench", "goldfish", "great white shark", "chain saw", "Santa Claus sleigh"]
TEMPLATES = IMAGENET_TEMPLATES[:3]


@pytest.mark.parametrize("batch_size", [4, 64])  # padded last batch; everything in one batch
def test_prompt_ensemble_matches_numpy(double, batch_size):
    module, variables = double
    before = LinearClipDouble.traces[0]
    got = zero_shot_classifier(module, variables, CLASSES, TEMPLATES, batch_size=batch_size)
    want = _reference_classifier(variables, CLASSES, TEMPLATES)
    assert got.shape == (EMBED, len(CLASSES)) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert LinearClipDouble.traces[0] - before <= 1  # one compilation for all batches
    # ensembling is not the single-template embedding: the test can tell them apart
    assert np.abs(want - _reference_classifier(variables, CLASSES, TEMPLATES[:1])).max() > 1e-2


def test_callable_templates_equal_format_strings(double):
    module, variables = double
    np.testing.assert_array_equal(
        zero_shot_classifier(module, variables, CLASSES, [t.format for t in TEMPLATES]),
        zero_shot_classifier(module, variables, CLASSES, TEMPLATES),
    )


def test_classify_is_the_seed_recipe(double):
    module, variables = double
    images = np.random.default_rng(0).normal(size=(2, 4, 5, 3)).astype(np.float32)
    texts = ["a man with a chainsaw", "Santa Claus sleigh", "chain saw", "cat", "dog"]
    # one template "{}": the class embeddings are the texts' normalised embeddings
    classifier = zero_shot_classifier(module, variables, texts, ("{}",))
    probs = classify(module, variables, images, classifier)
    image = _unit(images.mean(axis=(1, 2)).astype(np.float64) @ variables["params"]["image"])
    text = _unit((clip.tokenize(texts).numpy() / 49408.0) @ variables["params"]["text"])
    logits = 100.0 * image @ text.T
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    assert probs.shape == (2, 5) and probs.dtype == jnp.float32
    np.testing.assert_allclose(probs, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    cooler = classify(module, variables, images, classifier, scale=1 / 0.07)
    assert np.abs(cooler - probs).max() > 1e-3  # the scale is used, not fixed


def test_bad_arguments(double):
    module, variables = double
    with pytest.raises(ValueError, match="non-empty sequence of names"):
        zero_shot_classifier(module, variables, "goldfish")
    with pytest.raises(ValueError, match=r"has no '\{\}'"):
        zero_shot_classifier(module, variables, CLASSES, ["a photo of a {c}."])
    with pytest.raises(ValueError, match="non-empty sequence of strings"):
        zero_shot_classifier(module, variables, CLASSES, [])
    classifier = np.eye(EMBED, 3, dtype=np.float32)
    with pytest.raises(ValueError, match="is it NCHW"):
        classify(module, variables, np.zeros((1, 3, 4, 4)), classifier)
    with pytest.raises(ValueError, match="embed to 6 dimensions but the classifier has 5"):
        classify(module, variables, np.zeros((1, 4, 4, 3)), classifier[:5])


def test_imagenet_data_is_openais():
    assert len(IMAGENET_TEMPLATES) == 80 and len(IMAGENET_CLASSNAMES) == 1000
    assert IMAGENET_CLASSNAMES == zero_shot_metadata.IMAGENET_CLASSNAMES
    for ours, theirs in zip(
        IMAGENET_TEMPLATES, zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES, strict=True
    ):
        assert ours.format("great white shark") == theirs("great white shark")
