# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. CLIP: zero-shot classification in JAX
#
# The architectures lecture ends with CLIP (Radford et al. 2021, "Learning Transferable
# Visual Models From Natural Language Supervision"): an image tower and a text tower trained
# on 400M image-text pairs to put matching pairs close together. A classifier is then just
# a list of texts: the class whose text embedding is closest to the image embedding wins.
# This notebook retells that section with flaxcnn: tokenize, encode, normalise, cosine
# similarities, times 100, softmax; then the prompt-built ImageNet classifier. Every number
# is computed twice, by OpenAI's torch model and by flaxcnn, and compared.
#
# **Weights.** OpenAI's weights download from the internet. Without them (CI, offline) this
# notebook builds OpenAI's ViT-B/32 with *random* weights and converts those: every
# comparison holds, but the probabilities mean nothing. With weights available (set
# `CLIP_WEIGHTS` to OpenAI's `ViT-B-32.pt`, or have them in `clip`'s cache) the same cells
# show real zero-shot predictions. `FLAXCNN_NOTEBOOK_SMALL=1` is the quick version CI runs.

# %%
import os
import warnings

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import skimage.data
import torch
from PIL import Image

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
import clip  # noqa: E402  OpenAI's package (clip-anytorch), the reference

import flaxcnn  # noqa: E402
import flaxcnn.clip  # noqa: E402
from flaxcnn.convert import from_torch  # noqa: E402
from flaxcnn.preprocess import preprocess  # noqa: E402

from _common import SMALL, show  # noqa: E402  small-mode switch, figures saved as PNG

# %% [markdown]
# ## The model
#
# `clip.available_models()` lists OpenAI's nine models; flaxcnn registers each under a name
# of its own and converts from OpenAI's package and from open_clip.

# %%
print(clip.available_models())
print(flaxcnn.list_models("clip_*"))

weights = os.environ.get("CLIP_WEIGHTS")
cached = os.path.expanduser("~/.cache/clip/ViT-B-32.pt")
path = weights or (cached if os.path.exists(cached) else None)
if path:
    tmodel, _ = clip.load(path, device="cpu", jit=False)
    REAL = True
else:
    from flaxcnn.convert.clip import build_clip

    torch.manual_seed(0)
    spec = flaxcnn.get_model_spec("clip_vit_b32")
    tmodel = build_clip("ViT-B/32", "openai", spec)
    REAL = False
    print("No CLIP weights here: random ViT-B/32 weights, so the probabilities mean nothing.")
tmodel = tmodel.float().eval()
model, variables = from_torch("ViT-B/32", tmodel, source="openai")
n_params = sum(a.size for a in jax.tree.leaves(variables["params"]))
print(
    f"clip_vit_b32: {n_params:,} parameters (torch: {sum(p.numel() for p in tmodel.parameters()):,})"
)

# %% [markdown]
# ## Which text fits the image?
#
# The seed asks CLIP which of five texts describes a photo. OpenAI's `preprocess` resizes
# the short side to 224 (bicubic), crops the centre and normalises with CLIP's mean and
# std; `flaxcnn.preprocess` does exactly that (in PIL, as torchvision does), NHWC.

# %%
img = skimage.data.chelsea()
texts = [
    "A man with a gasoline saw is getting firewood",
    "Santa Claus sleigh",
    "chain saw",
    "cat",
    "dog",
]
image = preprocess(img, "clip_vit_b32")[None]  # 1 x 224 x 224 x 3
tokens = flaxcnn.clip.tokenize(texts)  # 5 x 77 int32
print(image.shape, tokens.shape, tokens.dtype)

t_image = clip.clip._transform(224)(Image.fromarray(img))[None]
t_tokens = clip.tokenize(texts)
pre_diff = float(np.abs(t_image.numpy().transpose(0, 2, 3, 1) - image).max())
same_tokens = bool((t_tokens.numpy() == tokens).all())
print(f"preprocess: max |Δ| vs OpenAI = {pre_diff:.1e}; tokens identical: {same_tokens}")

# %%
logits_per_image, logits_per_text = model.apply(variables, jnp.asarray(image), tokens)
probs = jax.nn.softmax(logits_per_image, axis=-1)
with torch.no_grad():
    t_logits, _ = tmodel(t_image, t_tokens)
t_probs = t_logits.softmax(dim=-1).numpy()
prob_diff = float(np.abs(np.asarray(probs) - t_probs).max())
print("flaxcnn:", np.asarray(probs).round(4))
print("torch:  ", t_probs.round(4))

fig, ax = plt.subplots(figsize=(7, 3))
ax.bar(range(len(texts)), np.asarray(probs)[0])
ax.set_xticks(range(len(texts)), [t[:18] for t in texts], rotation=20)
ax.set_title("softmax(logits_per_image)" + ("" if REAL else " (random weights)"))
show(fig, "clip_probabilities")

# %% [markdown]
# ## The same, step by step
#
# `encode_image` and `encode_text` return embeddings that are *not* normalised. Normalised,
# their dot products are cosine similarities; the spread between them is small until they
# are multiplied by 100 (CLIP's learned temperature, `exp(logit_scale)`, which OpenAI's
# weights store as 100) before the softmax, and then the result is the model's own.

# %%
image_features = model.apply(variables, jnp.asarray(image), method="encode_image")
text_features = model.apply(variables, tokens, method="encode_text")
print("image", image_features.shape, "text", text_features.shape)
print("norm of the image embedding:", float(jnp.linalg.norm(image_features[0])))

image_features = image_features / jnp.linalg.norm(image_features, axis=-1, keepdims=True)
text_features = text_features / jnp.linalg.norm(text_features, axis=-1, keepdims=True)
sims = text_features @ image_features[0]
scale = float(jnp.exp(variables["params"]["logit_scale"]))
chilled = jax.nn.softmax(scale * sims)
print("cosine similarities:", np.asarray(sims).round(4))
print(f"softmax({scale:.1f} x similarities) = {np.asarray(chilled).round(4)}")
steps_diff = float(np.abs(np.asarray(chilled) - np.asarray(probs)[0]).max())

with torch.no_grad():
    t_img_f = tmodel.encode_image(t_image)
    t_txt_f = tmodel.encode_text(t_tokens)
raw_image = model.apply(variables, jnp.asarray(image), method="encode_image")
raw_text = model.apply(variables, tokens, method="encode_text")
emb_diff = max(
    float(np.abs(np.asarray(raw_image) - t_img_f.numpy()).max()),
    float(np.abs(np.asarray(raw_text) - t_txt_f.numpy()).max()),
)
emb_ref = max(float(t_img_f.abs().max()), float(t_txt_f.abs().max()))
print(f"embeddings vs torch: max |Δ| = {emb_diff:.1e} (max |ref| {emb_ref:.2f})")

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].bar(range(len(texts)), np.asarray(sims))
axes[0].set_title("cosine similarity")
axes[1].bar(range(len(texts)), np.asarray(chilled))
axes[1].set_title(f"softmax({scale:.0f} x cosine)")
show(fig, "clip_steps")

# %% [markdown]
# ## An ImageNet classifier from prompts
#
# One text per class, "a photo of {name}" (the seed), or the paper's ensemble of 80
# templates per class ("a bad photo of a {}.", "a sculpture of a {}.", ...), each
# normalised, averaged and normalised again. The class names are CLIP's cleaned-up ImageNet
# names. The full 1000-class, 80-template classifier is 80,000 prompts through the text
# tower (minutes on a GPU, long on a CPU); small mode uses the first classes and templates.

# %%
n_classes = 20 if SMALL else 1000
templates = flaxcnn.clip.IMAGENET_TEMPLATES[: 2 if SMALL else 8]
names = flaxcnn.clip.IMAGENET_CLASSNAMES[:n_classes]
classifier = flaxcnn.clip.zero_shot_classifier(model, variables, names, templates)
print("classifier:", classifier.shape, f"({len(templates)} templates per class)")

photos = {
    "chelsea": skimage.data.chelsea(),
    "coffee": skimage.data.coffee(),
    "astronaut": skimage.data.astronaut(),
    "rocket": skimage.data.rocket(),
}
batch = np.stack([preprocess(p, "clip_vit_b32") for p in photos.values()])
class_probs = flaxcnn.clip.classify(model, variables, jnp.asarray(batch), classifier, scale=scale)
for (name, _), p in zip(photos.items(), np.asarray(class_probs), strict=True):
    top = np.argsort(p)[::-1][:3]
    print(f"{name:10s}", ", ".join(f"{names[i]} {p[i]:.2f}" for i in top))

# The same classifier from torch, OpenAI's notebook code on the converted weights:
with torch.no_grad():
    weights_t = []
    for cname in names:
        t = clip.tokenize([tpl.format(cname) for tpl in templates])
        e = tmodel.encode_text(t)
        e = e / e.norm(dim=-1, keepdim=True)
        e = e.mean(dim=0)
        weights_t.append(e / e.norm())
    weights_t = torch.stack(weights_t, dim=1)
cls_diff = float(np.abs(np.asarray(classifier) - weights_t.numpy()).max())
print(f"zero-shot classifier vs torch: max |Δ| = {cls_diff:.1e}")

fig, axes = plt.subplots(1, len(photos), figsize=(3 * len(photos), 3))
for ax, p, probs_row in zip(axes, photos.values(), np.asarray(class_probs), strict=True):
    ax.imshow(p)
    ax.set_title(f"{names[int(np.argmax(probs_row))]}\n{probs_row.max():.2f}", fontsize=9)
    ax.axis("off")
show(fig, "clip_imagenet_zero_shot")

# %% [markdown]
# ## What this notebook showed (checked)
#
# flaxcnn's CLIP reproduces OpenAI's: the same preprocessing and token ids, the same
# probabilities, embeddings and prompt-ensemble classifier within the project's bound
# (1e-4 relative to the largest reference value, 1e-4 absolute below 1).

# %%
assert pre_diff <= 1e-6 and same_tokens
assert prob_diff <= 1e-4
assert emb_diff <= 1e-4 * max(1.0, emb_ref)
assert steps_diff <= 1e-5
assert cls_diff <= 1e-4
assert np.allclose(np.asarray(class_probs).sum(axis=1), 1.0, atol=1e-5)
if REAL:  # a cat is a cat
    assert "cat" in names[int(np.argmax(np.asarray(class_probs)[0]))] or n_classes < 300
print("all checks passed")
