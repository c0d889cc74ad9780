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
# # 2. From PyTorch to Flax
#
# flaxcnn loads torchvision and timm weights and proves that the Flax model computes what
# the torch model computes. This notebook converts models, shows the parity numbers,
# takes a ResNet's stage feature maps, swaps the classifier for a new task, adapts the
# first convolution to grayscale input, and exports the result back to PyTorch.
#
# No network: every torch model here is randomly initialised (`weights=None`,
# `pretrained=False`). With downloaded weights the calls are the same
# (`flaxcnn.create_model("resnet18", pretrained=True)` converts and caches them once).
# Set `FLAXCNN_NOTEBOOK_SMALL=1` for the quick version CI runs (smaller images, fewer checks).

# %%
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import skimage.data
import timm
import torch
import torchvision

import flaxcnn
from flaxcnn.convert import from_torch, to_torch, verify
from flaxcnn.convert.verify import randomize_bn
from flaxcnn.preprocess import preprocess
from flaxcnn.summary import receptive_fields

from _common import SMALL, scratch_dir, show  # small-mode switch, figures saved as PNG

SIZE = 64 if SMALL else 224  # the random test images of the parity checks
torch.manual_seed(0)
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
logging.getLogger("jax").setLevel(logging.WARNING)


def nchw_to_nhwc(x):
    return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 1))


# %% [markdown]
# ## Converting a torchvision model
#
# `from_torch` takes the torch model (or its state dict, or a checkpoint file) and the
# source library's model name, and returns the matching Flax module and its variables. The
# conversion is a rename table plus transposes: torch's `layer1.0.conv1.weight` (OIHW)
# becomes Flax's `layer1_0/conv1/kernel` (HWIO), BatchNorm's running statistics go to the
# `batch_stats` collection. The batch norms get random statistics first, so that the
# comparison below tests them too (a fresh torch model has mean 0 and variance 1).

# %%
tv = torchvision.models.resnet18(weights=None)
randomize_bn(tv)
tv.eval()
module, variables, report = from_torch("resnet18", tv, source="torchvision", strict=False)
print(f"{type(module).__name__}: {report}")
for key in ["conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "fc.weight"]:
    path = report.mapping[key]
    flax_shape = variables[path[0]]
    for k in path[1:]:
        flax_shape = flax_shape[k]
    print(
        f"  torch {key:24s} {tuple(tv.state_dict()[key].shape)!s:16s} -> {'/'.join(path):32s} {flax_shape.shape}"
    )

x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE), dtype=np.float32)
with torch.no_grad():
    ref = tv(torch.from_numpy(x)).numpy()
got = np.asarray(jax.jit(module.apply)(variables, nchw_to_nhwc(x)))  # Flax models are NHWC
tv_diff = float(np.abs(got - ref).max())
print(
    f"logits {got.shape}: max |flax - torch| = {tv_diff:.2e} (max |logit| {np.abs(ref).max():.2f})"
)

# %% [markdown]
# ## The parity numbers
#
# `verify` is the harness the test suite runs for every (source, model) pair: random torch
# weights with randomised BatchNorm, conversion, then eval and train mode on a square and an
# odd non-square image (train mode also compares the updated running statistics), and an
# export check (Flax variables moved as training would move them, written back into the
# torch model with `to_torch`, same outputs). The bound is `1e-4 · max(1, max|ref|)`.

# %%
sizes = [(SIZE, SIZE)] if SMALL else None  # None: the default size and 97x131
results = [verify("resnet18", source="torchvision", sizes=sizes)]
results.append(
    verify(
        "mobilenetv3_small_100",
        source="timm",
        sizes=sizes,
        modes=("eval",) if SMALL else ("eval", "train"),
    )
)
for r in results:
    print(r, end="\n\n")

fig, ax = plt.subplots(figsize=(8, 0.45 * sum(len(r.checks) for r in results) + 1.2))
labels, ratios = [], []
for r in results:
    for c in r.checks:
        labels.append(f"{r.source}:{r.name}  {c.mode} {c.size[0]}x{c.size[1]}")
        ratios.append(max(c.max_abs_diff, 1e-12) / c.bound)
        ax.text(ratios[-1], len(ratios) - 1, f"  {c.max_abs_diff:.1e}", va="center", fontsize=8)
ax.barh(range(len(ratios)), ratios, color="tab:green")
ax.axvline(1, color="tab:red", lw=1.5)
ax.text(0.98, -0.6, "bound ", color="tab:red", ha="right", va="center")
ax.set_xscale("log")
ax.set_yticks(range(len(ratios)), labels, fontsize=8)
ax.invert_yaxis()
ax.set_xlabel("max |flax - torch| / bound    (bound = 1e-4 · max(1, max|ref|))")
ax.set_title("Conversion parity: every check far inside the bound")
ax.grid(axis="x", alpha=0.3, which="both")
show(fig, "parity")

# %% [markdown]
# ## Stage feature maps (`features_only`)
#
# For detection or segmentation backbones one wants the maps after each stage, as timm's
# `features_only=True` returns them. The Flax ResNet does the same; `feature_info` gives
# each map's channels and stride (reduction), and the receptive fields come from the jaxpr.
# Compared here with timm on a real photo (skimage's astronaut, preprocessed as the
# torchvision weights expect).

# %%
tm = timm.create_model("resnet18", pretrained=False)
randomize_bn(tm)
tm.eval()
_, tvars = from_torch("resnet18", tm, source="timm")
feats = flaxcnn.create_model("resnet18", features_only=True)
backbone = {"params": {k: v for k, v in tvars["params"].items() if k != "fc"}}
backbone["batch_stats"] = tvars["batch_stats"]

image = preprocess(skimage.data.astronaut(), "resnet18")[None]  # (1, 224, 224, 3), NHWC
maps = jax.jit(feats.apply)(backbone, jnp.asarray(image))
t_feats = timm.create_model("resnet18", features_only=True, pretrained=False)
t_feats.load_state_dict({k: v for k, v in tm.state_dict().items() if not k.startswith("fc.")})
t_feats.eval()
with torch.no_grad():
    t_maps = t_feats(torch.from_numpy(image.transpose(0, 3, 1, 2)))
stage_fields, _ = receptive_fields(
    lambda x, v: feats.apply(v, x), jax.ShapeDtypeStruct(image.shape, jnp.float32), backbone
)
feature_diffs = []
for m, t, info, field in zip(maps, t_maps, feats.feature_info(), stage_fields, strict=True):
    diff = float(np.abs(np.asarray(m) - t.numpy().transpose(0, 2, 3, 1)).max())
    feature_diffs.append(diff)
    print(
        f"{info['module']:7s} {m.shape!s:20s} channels {info['num_chs']:3d} stride {info['reduction']:2d}"
        f"  receptive field {field.size[0]:3d} px  max |flax - timm| {diff:.1e}"
    )
assert [i["num_chs"] for i in feats.feature_info()] == t_feats.feature_info.channels()
assert [i["reduction"] for i in feats.feature_info()] == t_feats.feature_info.reduction()

fig, axes = plt.subplots(1, 6, figsize=(15, 2.9))
mean, std = np.asarray([0.485, 0.456, 0.406]), np.asarray([0.229, 0.224, 0.225])
axes[0].imshow(np.clip(image[0] * std + mean, 0, 1))
axes[0].set_title("input 224x224")
for ax, m, info, field in zip(axes[1:], maps, feats.feature_info(), stage_fields, strict=True):
    ax.imshow(np.abs(np.asarray(m[0])).mean(-1), cmap="magma")
    ax.set_title(f"{info['module']}: {m.shape[1]}x{m.shape[2]}, RF {field.size[0]}", fontsize=9)
for ax in axes:
    ax.set_axis_off()
fig.suptitle("ResNet-18 stage outputs (mean |activation| over channels; random weights)")
show(fig, "resnet18_features")

# %% [markdown]
# ## A new head and a new input: fine-tuning setups
#
# `create_model(name, pretrained=...)` accepts a local checkpoint (here the random timm
# model, saved as a `.pth` file, stands in for downloaded weights). With a different
# `num_classes` the classifier is re-initialised and everything else loaded; with
# `in_chans=1` the first conv's RGB filters are summed, so a grayscale image gives what the
# RGB model gives for that image repeated on three channels (exactly: the conv is linear).
# Both adaptations are logged.

# %%
ckpt = Path(scratch_dir("flaxcnn_nb02_")) / "resnet18_random.pth"
torch.save(tm.state_dict(), ckpt)
m10, v10 = flaxcnn.create_model("resnet18", pretrained=str(ckpt), num_classes=10)
m_gray, v_gray = flaxcnn.create_model("resnet18", pretrained=str(ckpt), num_classes=10, in_chans=1)
print("head:", tvars["params"]["fc"]["kernel"].shape, "->", v10["params"]["fc"]["kernel"].shape)
print(
    "first conv:",
    v10["params"]["conv1"]["kernel"].shape,
    "->",
    v_gray["params"]["conv1"]["kernel"].shape,
)

same_backbone = all(
    np.array_equal(a, b)
    for a, b in zip(
        jax.tree.leaves({k: v for k, v in v10["params"].items() if k != "fc"}),
        jax.tree.leaves(backbone["params"]),
        strict=True,
    )
)
gray = np.asarray(image.mean(-1, keepdims=True))
logits_gray = np.asarray(jax.jit(m_gray.apply)(v_gray, jnp.asarray(gray)))
logits_rgb = np.asarray(jax.jit(m10.apply)(v10, jnp.asarray(np.repeat(gray, 3, -1))))
gray_diff = float(np.abs(logits_gray - logits_rgb).max())
print(
    f"backbone unchanged: {same_backbone}; gray model vs RGB model on the repeated image: {gray_diff:.1e}"
)

# %% [markdown]
# ## Back to PyTorch
#
# After fine-tuning in JAX, `to_torch` writes the variables into the torch model's state
# dict: it loads with `strict=True` into timm's `resnet18(num_classes=10, in_chans=1)`
# and computes the same logits.

# %%
sd = to_torch("resnet18", v_gray, source="timm")
t_gray = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1)
t_gray.load_state_dict(sd, strict=True)
t_gray.eval()
with torch.no_grad():
    t_logits = t_gray(torch.from_numpy(gray.transpose(0, 3, 1, 2))).numpy()
export_diff = float(np.abs(t_logits - logits_gray).max())
print(f"timm resnet18(num_classes=10, in_chans=1) vs Flax: max |Δ| = {export_diff:.1e}")

# %% [markdown]
# ## What this notebook showed (checked)

# %%
assert tv_diff <= 1e-4 * max(1.0, float(np.abs(ref).max()))
assert all(r.ok for r in results) and all(r.torch_params == r.flax_params for r in results)
assert all(
    d <= 1e-4 * max(1.0, float(np.abs(t).max())) for d, t in zip(feature_diffs, t_maps, strict=True)
)
assert [m.shape[1] for m in maps] == [112, 56, 28, 14, 7]
assert [f.size[0] for f in stage_fields] == [7, 43, 99, 211, 435]
assert same_backbone and v10["params"]["fc"]["kernel"].shape == (512, 10)
assert v_gray["params"]["conv1"]["kernel"].shape == (7, 7, 1, 64)
np.testing.assert_allclose(
    v_gray["params"]["conv1"]["kernel"][:, :, 0], v10["params"]["conv1"]["kernel"].sum(2), rtol=1e-6
)
assert gray_diff <= 1e-4 * max(1.0, float(np.abs(logits_rgb).max()))
assert export_diff <= 1e-4 * max(1.0, float(np.abs(t_logits).max()))
print("all checks passed")
