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
# # 6. Segmentation: upsampling and U-Net
#
# A segmentation network labels every pixel, so after a classifier-like encoder has
# shrunk the image it has to grow the maps back. This notebook first does the lectures'
# transposed-convolution arithmetic with flaxcnn's `ConvTranspose2d` (torch's semantics),
# shows where the checkerboard pattern of a stride-2 transposed convolution comes from and
# what bilinear upsampling does instead, then trains a padded U-Net on the embedded
# synthetic shapes (discs, squares, triangles with per-pixel masks) with the trainer's
# segmentation steps: the curve, mean IoU and pixel accuracy, predictions next to the
# ground truth.
#
# Set `FLAXCNN_NOTEBOOK_SMALL=1` for the quick version CI runs (a narrower, shallower U-Net
# and fewer steps). The full version follows `train/configs/shapes_unet.py`, which the
# command line runs as `flaxcnn-train --config train/configs/shapes_unet.py`.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

import flaxcnn
from flaxcnn.layers import ConvTranspose2d, conv_transpose_output_size, interpolate
from flaxcnn.segmentation import (
    IGNORE_INDEX,
    SHAPE_CLASSES,
    make_shapes_dataset,
    mean_iou,
    pixel_accuracy,
)
from flaxcnn.train.configs import shapes_unet
from flaxcnn.train.optim import build_optimizer
from flaxcnn.train.steps import (
    StepConfig,
    create_train_state,
    make_eval_step,
    make_mesh,
    make_train_step,
    to_host,
)

from _common import SMALL, classic_threefry, show

classic_threefry()

# %% [markdown]
# ## Transposed convolution by hand
#
# A transposed convolution scatters: every input pixel adds a copy of the kernel, scaled by
# its value, onto the output at `stride` times its position; overlapping copies add up.
# The lecture's example: the 4x4 image 1..16 through a 2x2 kernel of ones, stride 1, gives
# a 5x5 map (output side `(4 - 1) * 1 + 2 = 5`); the corner is `1`, the next pixel
# `1 + 2 = 3`, the centre of the top-left 2x2 block `1 + 2 + 5 + 6 = 14`.

# %%


def conv_t(x, kernel, stride, padding=0):
    """One-channel ConvTranspose2d (no bias) with the given (kh, kw) kernel."""
    layer = ConvTranspose2d(
        1, kernel_size=kernel.shape, stride=stride, padding=padding, use_bias=False
    )
    params = {"params": {"kernel": np.asarray(kernel, np.float32)[:, :, None, None]}}
    y = jax.jit(layer.apply)(params, np.asarray(x, np.float32)[None, :, :, None])
    return np.asarray(y)[0, :, :, 0]


def bilinear_x2(x):
    up = jax.jit(lambda v: interpolate(v, scale_factor=2, mode="bilinear"))
    return np.asarray(up(np.asarray(x, np.float32)[None, :, :, None]))[0, :, :, 0]


H = np.arange(1, 17).reshape(4, 4)
lecture = conv_t(H, np.ones((2, 2)), stride=1)
print(lecture.astype(int))
lecture_expected = np.array(
    [
        [1, 3, 5, 7, 4],
        [6, 14, 18, 22, 12],
        [14, 30, 34, 38, 20],
        [22, 46, 50, 54, 28],
        [13, 27, 29, 31, 16],
    ]
)  # torch.nn.ConvTranspose2d's output, as printed in the lecture

# %% [markdown]
# ## The checkerboard
#
# With stride 2 and a 3x3 kernel the copies land two pixels apart and overlap by one
# column and one row. Fed a constant image, the output counts how many copies reach each
# pixel: along one axis `1, 1, 2, 1, 2, 1, 2, 1, 1`, so in 2-D `1`, `2` or `4`, a
# checkerboard, although the input had no pattern at all (Odena et al., "Deconvolution
# and Checkerboard Artifacts", Distill 2016). A 4x4 kernel with stride 2 (kernel divisible
# by the stride; `padding=1` crops the border) overlaps every interior pixel exactly twice
# per axis: no checkerboard. Bilinear upsampling (`interpolate`, torch's
# `F.interpolate`) is a fixed interpolation: a constant stays constant, a single bright
# pixel becomes a smooth tent. U-Net's "up-convolution" is a 2x2 transposed conv with
# stride 2: the copies tile without overlap.

# %%
ones = np.ones((4, 4))
impulse = np.zeros((4, 4))
impulse[1, 1] = 1.0
k3 = np.arange(1, 10).reshape(3, 3) / 9  # a kernel whose copies can be told apart
checker = conv_t(ones, np.ones((3, 3)), stride=2)
counts = np.array([1, 1, 2, 1, 2, 1, 2, 1, 1])  # copies reaching each output row/column
even = conv_t(ones, np.ones((4, 4)), stride=2, padding=1)
unet_up = conv_t(ones, np.ones((2, 2)), stride=2)
bilinear_ones, bilinear_impulse = bilinear_x2(ones), bilinear_x2(impulse)
single = conv_t(impulse, k3, stride=2)
print("3x3 stride 2 on ones:\n", checker.astype(int))
print("4x4 stride 2 padding 1 on ones:\n", even.astype(int))
print(
    "output sides:",
    conv_transpose_output_size(4, 3, 2),
    conv_transpose_output_size(4, 4, 2, 1),
    conv_transpose_output_size(4, 2, 2),
)

panels = [
    (impulse, "input: one pixel (4x4)"),
    (single, "transposed 3x3, stride 2:\na copy of the kernel at (2, 2)"),
    (bilinear_impulse, "bilinear x2: a tent"),
    (ones, "input: constant (4x4)"),
    (checker, "transposed 3x3 ones, stride 2:\ncheckerboard 1 / 2 / 4"),
    (even, "transposed 4x4 ones, stride 2, pad 1:\neven overlap"),
    (unet_up, "transposed 2x2 ones, stride 2\n(U-Net up-conv): no overlap"),
    (bilinear_ones, "bilinear x2: constant"),
]
fig, axes = plt.subplots(2, 4, figsize=(13, 8))
for ax, (img, title) in zip(axes.flat, panels, strict=True):
    im = ax.imshow(img, cmap="viridis", vmin=0)
    for (i, j), v in np.ndenumerate(img):
        if img.shape[0] <= 9:
            ax.text(
                j,
                i,
                f"{v:.2g}",
                ha="center",
                va="center",
                fontsize=7,
                color="w" if v < 0.6 * img.max() else "k",
            )
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("Upsampling a 4x4 map: transposed convolutions vs bilinear interpolation")
show(fig, "transposed_conv")

# %% [markdown]
# ## The data
#
# `make_shapes_dataset` draws 1-3 shapes on a gradient background with noise; the mask
# labels background 0, disc 1, square 2, triangle 3, and 255 (ignored by the loss and the
# metrics, as Pascal VOC's boundaries) on a one-pixel band along every outline. The
# trainer's `shapes` set is the same generator at 64x64 (1,000 train images with seed 0,
# 200 test with seed 1) resized to 32x32; here the images are drawn at the training size
# directly.

# %%
SIZE = 32
N_TRAIN, N_TEST = (256, 32) if SMALL else (1000, 200)
DEPTH, WIDTH = (2, 4) if SMALL else (3, 8)
BATCH = 32
STEPS = 30 if SMALL else 15 * (N_TRAIN // BATCH)  # full: 15 epochs, as shapes_unet
EVAL_EVERY = 15 if SMALL else N_TRAIN // BATCH

x_train, y_train = make_shapes_dataset(N_TRAIN, SIZE, seed=0)
x_test, y_test = make_shapes_dataset(N_TEST, SIZE, seed=1)
# The trainer feeds [0, 1] images and normalises on device; the generator's are standardised.
x_train, x_test = (np.clip(x * 0.3 + 0.5, 0, 1).astype(np.float32) for x in (x_train, x_test))
y_train, y_test = y_train.astype(np.int32), y_test.astype(np.int32)
fractions = np.bincount(y_test[y_test != IGNORE_INDEX], minlength=4) / np.sum(
    y_test != IGNORE_INDEX
)
print(
    f"train {x_train.shape}, test {x_test.shape}; test pixel classes:",
    ", ".join(f"{c} {f:.1%}" for c, f in zip(SHAPE_CLASSES, fractions, strict=True)),
)

colours = ListedColormap(["#202020", "tab:red", "tab:green", "tab:blue", "white"])


def show_mask(ax, mask):
    ax.imshow(
        np.where(mask == IGNORE_INDEX, 4, mask),
        cmap=colours,
        vmin=0,
        vmax=4,
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])


# %% [markdown]
# ## Training the U-Net
#
# `unet_padded` (padding-1 convs with BatchNorm, so the output has the input's size; 2x2
# transposed convs up) with `depth` poolings and `base_width` channels at the top. The
# train step is the trainer's: `StepConfig(task="segmentation")` selects the per-pixel
# cross-entropy over labelled pixels, the horizontal flip moves the masks with the images,
# and the eval step returns each batch's confusion matrix, summed over the test set before
# mean IoU and pixel accuracy are read from it. Optimiser as in `shapes_unet.py`: AdamW,
# learning rate 1e-2, 20 warm-up steps, cosine.

# %%
model = flaxcnn.create_model(
    "unet_padded", num_classes=4, in_chans=3, depth=DEPTH, base_width=WIDTH
)
config = shapes_unet.get_config()
tx = build_optimizer(config.optim, STEPS)
step_cfg = StepConfig(
    num_classes=4,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    task="segmentation",
    augment=tuple(sorted(dict(config.augment).items())),  # hflip
)
mesh = make_mesh(jax.devices()[:1])  # one device: data parallelism is not the point here
state = create_train_state(model, tx, jax.random.key(0), (1, SIZE, SIZE, 3), mesh)
train_step = make_train_step(model, tx, step_cfg, mesh)
eval_step = make_eval_step(model, step_cfg, mesh)
n_params = sum(p.size for p in jax.tree.leaves(state.params))


def evaluate(state):
    confusion = 0
    for i in range(0, N_TEST, BATCH):
        batch = {
            "image": x_test[i : i + BATCH],
            "label": y_test[i : i + BATCH],
            "mask": np.ones(len(x_test[i : i + BATCH]), bool),
        }
        confusion = confusion + to_host(eval_step(state, batch))["confusion"].astype(np.int64)
    miou, per_class = mean_iou(confusion)
    return float(miou), float(pixel_accuracy(confusion)), np.asarray(per_class), confusion


t0 = time.process_time()
order = np.random.default_rng(0)
losses, evals = [], []
perm = order.permutation(N_TRAIN)
for step in range(STEPS):
    j = (step * BATCH) % N_TRAIN
    if j + BATCH > N_TRAIN:
        perm, j = order.permutation(N_TRAIN), 0
    idx = perm[j : j + BATCH]
    state, m = train_step(state, {"image": x_train[idx], "label": y_train[idx]}, jax.random.key(1))
    losses.append(float(m["loss"]))
    if (step + 1) % EVAL_EVERY == 0 or step + 1 == STEPS:
        evals.append((step + 1, *evaluate(state)[:2]))
miou, pix_acc, per_class, confusion = evaluate(state)
print(
    f"U-Net depth {DEPTH}, width {WIDTH}: {n_params:,} parameters, {STEPS} steps of {BATCH} "
    f"in {time.process_time() - t0:.1f} s CPU"
)
print(
    f"test mIoU {miou:.1%}, pixel accuracy {pix_acc:.1%}; per class:",
    ", ".join(f"{c} {v:.1%}" for c, v in zip(SHAPE_CLASSES, per_class, strict=True)),
)

fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 3.8))
a1.plot(np.arange(1, STEPS + 1), losses, lw=1)
a1.set(xlabel="step", ylabel="per-pixel cross-entropy", title="training loss", yscale="log")
steps_e, miou_e, acc_e = zip(*evals, strict=True)
a2.plot(steps_e, miou_e, "o-", label="mean IoU")
a2.plot(steps_e, acc_e, "s-", label="pixel accuracy")
a2.axhline(fractions[0], color="gray", ls=":", label="all background")
a2.set(xlabel="step", ylabel="test metric", ylim=(0, 1), title="test metrics")
a2.legend()
a3.bar(SHAPE_CLASSES, per_class, color=["#202020", "tab:red", "tab:green", "tab:blue"])
a3.set(ylabel="IoU", ylim=(0, 1), title="final per-class IoU (test)")
for a in (a1, a2, a3):
    a.grid(alpha=0.3)
show(fig, "unet_training")

# %% [markdown]
# ## Predictions vs ground truth
#
# Test images, their masks (white: the ignored outline band) and the U-Net's per-pixel
# argmax.

# %%
logits = jax.jit(model.apply)(
    {"params": state.params, "batch_stats": state.batch_stats},
    (jnp.asarray(x_test[:6]) - 0.5) / 0.5,
)
pred = np.asarray(jnp.argmax(logits, -1))
fig, axes = plt.subplots(3, 6, figsize=(12, 6.4))
for i in range(6):
    axes[0, i].imshow(x_test[i])
    axes[0, i].set_xticks([])
    axes[0, i].set_yticks([])
    show_mask(axes[1, i], y_test[i])
    show_mask(axes[2, i], pred[i])
for r, name in enumerate(["image", "ground truth", "prediction"]):
    axes[r, 0].set_ylabel(name)
handles = [plt.Rectangle((0, 0), 1, 1, color=colours(i)) for i in range(5)]
axes[1, -1].legend(
    handles, [*SHAPE_CLASSES, "ignored"], loc="upper left", bbox_to_anchor=(1.05, 1), fontsize=9
)
fig.suptitle(f"U-Net on the test shapes: mIoU {miou:.1%}, pixel accuracy {pix_acc:.1%}")
show(fig, "unet_predictions")

# %% [markdown]
# ## What this notebook showed (checked)

# %%
np.testing.assert_array_equal(lecture, lecture_expected)
np.testing.assert_array_equal(checker, np.outer(counts, counts))
np.testing.assert_array_equal(even[1:-1, 1:-1], 4 * np.ones((6, 6)))  # 2 copies per axis
np.testing.assert_array_equal(unet_up, np.ones((8, 8)))
np.testing.assert_allclose(bilinear_ones, np.ones((8, 8)), rtol=1e-6)
np.testing.assert_allclose(single[2:5, 2:5], k3, rtol=1e-6)  # the kernel, copied to (2, 2)
assert np.count_nonzero(single) == 9
assert logits.shape == (6, SIZE, SIZE, 4)  # per-pixel logits at the input size
assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
assert int(confusion.sum()) == int(np.sum(y_test != IGNORE_INDEX))  # every labelled pixel once
if SMALL:
    assert pix_acc > fractions[0] - 0.05, (pix_acc, fractions)  # about background already
else:
    assert miou > 0.75 and pix_acc > 0.95, (miou, pix_acc)  # measured 86.8%, 98.7%
print("all checks passed")
