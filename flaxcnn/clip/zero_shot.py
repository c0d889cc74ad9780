"""Zero-shot classification with CLIP (Radford et al. 2021, "Learning Transferable Visual
Models From Natural Language Supervision", section 3.1.4).

A class is the text embedding of prompts naming it. With several prompt templates per
class ("a photo of a {}.", "a sketch of a {}.", ...) the paper ensembles them in embedding
space: each prompt's embedding is L2-normalised, the class's are averaged and the average
normalised again. OpenAI's ImageNet notebook (``Prompt_Engineering_for_ImageNet.ipynb``)
does exactly that with 80 templates and its own cleaned-up ImageNet class names; both are
shipped here (``IMAGENET_TEMPLATES``, ``IMAGENET_CLASSNAMES``, MIT-licensed data from
OpenAI's CLIP repository, as ``open_clip.zero_shot_metadata`` also carries them).

Images are then scored by the cosine similarity of their normalised embedding with each
class column, times 100, through a softmax.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .tokenizer import tokenize

__all__ = ["IMAGENET_CLASSNAMES", "IMAGENET_TEMPLATES", "classify", "zero_shot_classifier"]

_DATA = Path(__file__).resolve().parent.parent / "_data"


def _read_lines(name: str) -> tuple[str, ...]:
    return tuple((_DATA / name).read_text(encoding="utf-8").splitlines())


IMAGENET_TEMPLATES: tuple[str, ...] = _read_lines("clip_imagenet_templates.txt")
"""The 80 prompt templates of OpenAI's ImageNet zero-shot notebook; ``{}`` is the class."""

IMAGENET_CLASSNAMES: tuple[str, ...] = _read_lines("clip_imagenet_classnames.txt")
"""The 1000 ImageNet-1k class names OpenAI rewrote for prompting ("tench", "goldfish",
"great white shark", ...), in class-index order."""

Template = str | Callable[[str], str]


@functools.partial(jax.jit, static_argnames=("module", "method"))
def _encode_normalized(module: Any, variables: Any, x: jax.Array, method: str) -> jax.Array:
    """``module.<method>`` embeddings, in float32, divided by their L2 norm (no epsilon,
    as OpenAI's notebook and model divide)."""
    f = module.apply(variables, x, method=method).astype(jnp.float32)
    return f / jnp.linalg.norm(f, axis=-1, keepdims=True)


def _fillers(templates: Sequence[Template]) -> list[Callable[[str], str]]:
    if isinstance(templates, str) or not len(templates):
        raise ValueError(
            "templates must be a non-empty sequence of strings with '{}' for the class name "
            f"(or callables), got {templates!r}"
        )
    fills = []
    for t in templates:
        if callable(t):
            fills.append(t)
            continue
        if not isinstance(t, str) or "{}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' where the class name goes")
        fills.append(t.format)
    return fills


def zero_shot_classifier(
    module: Any,
    variables: Any,
    class_names: Sequence[str],
    templates: Sequence[Template] = IMAGENET_TEMPLATES,
    *,
    batch_size: int = 256,
    context_length: int = 77,
) -> jax.Array:
    """The ``(embed_dim, num_classes)`` zero-shot weight matrix of a CLIP model.

    Column ``c`` is the prompt ensemble of class ``c``: every template filled with the
    name, tokenized with :func:`~flaxcnn.clip.tokenize`, embedded by
    ``module.apply(variables, tokens, method="encode_text")``, each embedding L2-normalised,
    their mean L2-normalised again. Pass ``templates=("{}",)`` to embed the names as given
    (the seed lecture's "a photo of ..." descriptions, or free-form captions).

    Args:
      module: a CLIP module with an ``encode_text(tokens)`` method.
      variables: its variables.
      class_names: one name per class.
      templates: format strings with one ``{}`` (or callables ``name -> prompt``).
      batch_size: prompts per text-encoder call; the last batch is padded, so the encoder
        compiles once.
      context_length: the tokenizer's row length (77 for every released CLIP).

    Returns:
      float32 array of shape ``(embed_dim, len(class_names))`` with unit-norm columns.
    """
    if isinstance(class_names, str) or not len(class_names):
        raise ValueError(f"class_names must be a non-empty sequence of names, got {class_names!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    fills = _fillers(templates)
    variables = jax.device_put(variables)  # numpy weights would be copied every batch
    prompts = [fill(name) for name in class_names for fill in fills]
    sums: np.ndarray | None = None
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        tokens = np.zeros((batch_size, context_length), np.int32)
        tokens[: len(chunk)] = tokenize(chunk, context_length)
        feats = np.asarray(
            _encode_normalized(module, variables, jnp.asarray(tokens), method="encode_text")
        )[: len(chunk)]
        if sums is None:
            sums = np.zeros((len(class_names), feats.shape[-1]), np.float32)
        # Prompts are class-major: prompt k belongs to class k // len(templates).
        np.add.at(sums, np.arange(start, start + len(chunk)) // len(fills), feats)
    means = sums / len(fills)
    weights = means / np.linalg.norm(means, axis=-1, keepdims=True)
    return jnp.asarray(weights.T)


@functools.partial(jax.jit, static_argnames=("module",))
def _classify(
    module: Any, variables: Any, images: jax.Array, classifier: jax.Array, scale: float
) -> jax.Array:
    feats = _encode_normalized(module, variables, images, method="encode_image")
    if feats.shape[-1] != classifier.shape[0]:  # raised while tracing: shapes are static
        raise ValueError(
            f"the images embed to {feats.shape[-1]} dimensions but the classifier has "
            f"{classifier.shape[0]} rows: was it built with another model?"
        )
    return jax.nn.softmax(scale * feats @ classifier, axis=-1)


def classify(
    module: Any,
    variables: Any,
    images: Any,
    classifier: Any,
    *,
    scale: float = 100.0,
) -> jax.Array:
    """Zero-shot class probabilities of ``images``: ``softmax(scale * cos(image, class))``.

    The image embedding (``module.apply(variables, images, method="encode_image")``) is
    L2-normalised and multiplied with ``classifier``'s unit columns (from
    :func:`zero_shot_classifier`). ``scale`` is 100, as in the seed lecture and OpenAI's
    notebook: it is the value CLIP's learned temperature ``exp(logit_scale)`` is clamped
    at in training and that OpenAI's released checkpoints store (``logit_scale = ln 100``),
    so for those weights the result is ``softmax(logits_per_image)`` of the model's own
    forward pass. Pass ``scale=exp(logit_scale)`` for other weights (a randomly
    initialised model's is 1/0.07) to reproduce their ``logits_per_image``.

    Args:
      module: a CLIP module with an ``encode_image(images)`` method.
      variables: its variables.
      images: ``(batch, height, width, 3)`` preprocessed images
        (:func:`flaxcnn.preprocess.preprocess` with the model's name).
      classifier: ``(embed_dim, num_classes)`` class embeddings.
      scale: the logit scale.

    Returns:
      float32 probabilities of shape ``(batch, num_classes)``.
    """
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        hint = " (is it NCHW?)" if images.ndim == 4 and images.shape[1] == 3 else ""
        raise ValueError(
            f"expected NHWC images of shape (batch, height, width, 3), got {images.shape}{hint}"
        )
    classifier = jnp.asarray(classifier, jnp.float32)
    if classifier.ndim != 2:
        raise ValueError(
            f"expected a classifier of shape (embed_dim, num_classes), got {classifier.shape}"
        )
    return _classify(module, variables, images, classifier, scale)
