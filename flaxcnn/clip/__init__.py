"""CLIP's text side in JAX: the tokenizer, and zero-shot classification by prompt ensembles.

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision") embeds images and texts in one space; a class is the embedding of a text
naming it. The models are ``clip_rn50`` ... ``clip_vit_l14_336`` in the registry
(:mod:`flaxcnn.models.clip`); this package turns text into their input and their
embeddings into class probabilities. Needs the ``[clip]`` extra (``ftfy``, ``regex``) for
tokenizing; never imports torch.

The seed lecture's example, in flaxcnn::

    import jax
    import flaxcnn
    import flaxcnn.clip
    from flaxcnn.preprocess import preprocess

    model, variables = flaxcnn.create_model("clip_vit_b32", pretrained=True)
    image = preprocess(img, "clip_vit_b32")[None]  # 1 x 224 x 224 x 3, CLIP's normalisation
    texts = ["A man with a gasoline saw is getting firewood", "Santa Claus sleigh",
             "chain saw", "cat", "dog"]
    tokens = flaxcnn.clip.tokenize(texts)  # 5 x 77 int32, the ids of OpenAI's clip.tokenize

    logits_per_image, _ = model.apply(variables, image, tokens)  # cosines x 100
    probs = jax.nn.softmax(logits_per_image, axis=-1)

    # the same, step by step: normalised embeddings, cosine similarities, times 100
    image_features = model.apply(variables, image, method="encode_image")
    text_features = model.apply(variables, tokens, method="encode_text")

    # ImageNet, with the paper's 80 prompt templates per class (80,000 prompts: minutes on CPU)
    classifier = flaxcnn.clip.zero_shot_classifier(model, variables, flaxcnn.clip.IMAGENET_CLASSNAMES)
    probs = flaxcnn.clip.classify(model, variables, image, classifier)  # 1 x 1000

    # or the seed's single "a photo of {name}" prompt per class
    classifier = flaxcnn.clip.zero_shot_classifier(
        model, variables, flaxcnn.clip.IMAGENET_CLASSNAMES, templates=("a photo of {}",)
    )
"""

from .tokenizer import SimpleTokenizer, tokenize
from .zero_shot import IMAGENET_CLASSNAMES, IMAGENET_TEMPLATES, classify, zero_shot_classifier

__all__ = [
    "IMAGENET_CLASSNAMES",
    "IMAGENET_TEMPLATES",
    "SimpleTokenizer",
    "classify",
    "tokenize",
    "zero_shot_classifier",
]
