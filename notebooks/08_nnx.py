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
# # 8. flaxcnn models in Flax NNX
#
# Flax NNX keeps a model's state in the module object: parameters and BatchNorm statistics
# are `nnx.Variable`s, `model.train()` / `model.eval()` switch modes, and `nnx.jit`,
# `nnx.grad` and `nnx.Optimizer` work on the module directly. `flaxcnn.nnx` gives every
# flaxcnn model that form without a second definition: the linen module still computes,
# and its variables live in the NNX module at the linen (= torch) names.
#
# The story: a torchvision ResNet **pretrained in PyTorch** on the digits 0-4 of
# scikit-learn's embedded 8x8 digits (upscaled), **converted** with
# `flaxcnn.convert.from_torch`, wrapped with `flaxcnn.nnx.from_linen`, and **fine-tuned in
# NNX** on the digits 5-9 with ten labels per class, its trunk frozen: an `nnx.Optimizer`
# whose `wrt` filter selects the classifier's parameters by path, and BatchNorm held on the
# statistics of pretraining. With downloaded weights the first steps are one call:
# `flaxcnn.nnx.create_model("resnet18", pretrained=True, num_classes=5)`.
#
# Set `FLAXCNN_NOTEBOOK_SMALL=1` for the quick version CI runs.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import skimage.transform
import torch
import torchvision
from flax import nnx
from sklearn.datasets import load_digits

import flaxcnn.nnx
from flaxcnn.convert import from_torch

from _common import SMALL, classic_threefry, show

classic_threefry()
torch.manual_seed(0)
torch.set_num_threads(1)

STAGES = [1, 1, 1, 1] if SMALL else [2, 2, 2, 2]  # [2, 2, 2, 2] is ResNet-18
PRETRAIN_EPOCHS = 2 if SMALL else 8
SHOTS = 10  # labelled target images per class
STEPS = 30 if SMALL else 150
SIZE = 16 if SMALL else 32  # the 8x8 digits upscaled

# %% [markdown]
# ## Data and a backbone pretrained in PyTorch
#
# As in notebook 4: the digits 0-4 are the source task, 5-9 (relabelled 0-4) the target
# task with `SHOTS` labelled images per class. A grayscale torchvision ResNet is trained on
# the source task for a few epochs, then converted: `from_torch` reads the architecture from
# the weights and returns the linen module and its `{'params', 'batch_stats'}`.

# %%
digits = load_digits()
images = skimage.transform.resize(
    digits.images / 16.0, (len(digits.images), SIZE, SIZE), order=1, anti_aliasing=False
).astype(np.float32)[..., None]
labels = digits.target
rng = np.random.default_rng(0)
source = rng.permutation(np.flatnonzero(labels < 5))
tgt_train = np.concatenate(
    [rng.permutation(np.flatnonzero(labels == c))[:SHOTS] for c in range(5, 10)]
)
tgt_test = np.setdiff1d(np.flatnonzero(labels >= 5), tgt_train)


def torch_resnet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = torchvision.models.resnet.ResNet(
        torchvision.models.resnet.BasicBlock, STAGES, num_classes=5
    )
    m.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return m


tm = torch_resnet(seed=0)
opt = torch.optim.Adam(tm.parameters(), lr=2e-3)
t0 = time.process_time()
tm.train()
for _ in range(PRETRAIN_EPOCHS):
    for b in np.array_split(rng.permutation(source), len(source) // 64):
        x = (torch.from_numpy(images[b].transpose(0, 3, 1, 2)) - 0.5) / 0.5
        loss = torch.nn.functional.cross_entropy(tm(x), torch.from_numpy(labels[b]))
        opt.zero_grad()
        loss.backward()
        opt.step()
tm.eval()
print(f"pretrained {PRETRAIN_EPOCHS} epochs in PyTorch: {time.process_time() - t0:.1f} s CPU")

module, pretrained = from_torch(
    "resnet18", tm.state_dict(), source="torchvision", stage_sizes=tuple(STAGES)
)
_, fresh = from_torch(
    "resnet18", torch_resnet(seed=1).state_dict(), source="torchvision", stage_sizes=tuple(STAGES)
)
variables = {
    "params": {**pretrained["params"], "fc": fresh["params"]["fc"]},  # a new head
    "batch_stats": pretrained["batch_stats"],
}

# %% [markdown]
# ## The NNX model
#
# `flaxcnn.nnx.from_linen(module, variables)` wraps the pair. The state reads like the torch
# model: torch's `layer1.0.bn1.weight` and `layer1.0.bn1.running_mean` are
# `model.layer1_0.bn1.scale` (an `nnx.Param`) and `model.layer1_0.bn1.mean` (an
# `nnx.BatchStat`). The model starts in eval mode, and its eval output is the linen
# model's.

# %%
model = flaxcnn.nnx.from_linen(module, variables, rngs=nnx.Rngs(0))
print(type(model.layer1_0.bn1.scale).__name__, model.layer1_0.bn1.scale.shape)
print(type(model.layer1_0.bn1.mean).__name__, model.layer1_0.bn1.mean.shape)
print("fc:", {k: v.shape for k, v in nnx.to_pure_dict(nnx.state(model.fc)).items()})


def normalise(x):
    return (jnp.asarray(x) - 0.5) / 0.5


@nnx.jit
def predict(model, x):
    return model(normalise(x))


x_test, y_test = images[tgt_test], labels[tgt_test] % 5
linen_logits = jax.jit(module.apply)(variables, normalise(x_test))
gap = float(jnp.max(jnp.abs(predict(model, x_test) - linen_logits)))
print(f"NNX eval vs linen apply: max |difference| {gap:.1e}")

# %% [markdown]
# ## Fine-tuning with a frozen trunk
#
# The trainable set is a filter on paths: `nnx.All(nnx.Param, nnx.PathContains("fc"))`,
# the classifier's parameters. `nnx.Optimizer(..., wrt=head)` keeps optimizer state for
# those only, and `nnx.grad` differentiates only them (`nnx.DiffState`). The trunk's
# BatchNorm keeps the statistics of pretraining: `nnx.view` gives a training view of the
# same variables with dropout on and BatchNorm on running statistics
# (`use_running_average=True`), the NNX form of the trainer's `freeze_backbone`.

# %%
head = nnx.All(nnx.Param, nnx.PathContains("fc"))
optimizer = nnx.Optimizer(model, optax.adamw(3e-3, weight_decay=1e-4), wrt=head)
trainable = nnx.view(model, deterministic=False, use_running_average=True)


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        logits = model(normalise(x))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, head))(model)
    optimizer.update(model, grads)
    return loss


def accuracy():
    return float(jnp.mean(jnp.argmax(predict(model, x_test), -1) == y_test))


before = jax.tree.map(np.array, flaxcnn.nnx.to_linen(model))
order = np.random.default_rng(1)
losses, accs = [], [(0, accuracy())]
t0 = time.process_time()
for i in range(STEPS):
    b = order.choice(tgt_train, 25, replace=False)
    losses.append(float(train_step(trainable, optimizer, images[b], labels[b] % 5)))
    if (i + 1) % (STEPS // 3) == 0:
        accs.append((i + 1, accuracy()))
print(f"{STEPS} NNX steps: {time.process_time() - t0:.1f} s CPU; test accuracy {accs[-1][1]:.1%}")

fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
a1.plot(losses)
a1.set(xlabel="step", ylabel="train loss (batch of 25)", title="Frozen trunk, new head (NNX)")
a2.plot(*zip(*accs, strict=True), "o-")
a2.axhline(0.2, color="gray", ls=":", label="chance")
a2.set(xlabel="step", ylabel="test accuracy", ylim=(0, 1), title="Digits 5-9, 10 labels each")
a2.legend()
for a in (a1, a2):
    a.grid(alpha=0.3)
show(fig, "nnx_frozen_trunk")

# %% [markdown]
# ## Back to linen
#
# `flaxcnn.nnx.to_linen` returns `{'params', 'batch_stats'}` for the linen module (and so
# for `flaxcnn.convert.to_torch`, the trainer's checkpoints, `fold_batchnorm`). Only the
# head moved: every trunk parameter and every statistic is bitwise what PyTorch left.

# %%
after = flaxcnn.nnx.to_linen(model)
changed = sorted(
    jax.tree_util.keystr(k)
    for k, v in jax.tree_util.tree_leaves_with_path(after)
    if not np.array_equal(np.asarray(v), dict(jax.tree_util.tree_leaves_with_path(before))[k])
)
print("changed:", changed)
linen_acc = float(
    jnp.mean(jnp.argmax(jax.jit(module.apply)(after, normalise(x_test)), -1) == y_test)
)
print(f"the linen module on the fine-tuned variables: test accuracy {linen_acc:.1%}")

# %% [markdown]
# ## What this notebook showed (checked)

# %%
assert gap <= 1e-5, gap  # NNX and linen compute the same function
assert changed == ["['params']['fc']['bias']", "['params']['fc']['kernel']"], changed
assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
assert accs[-1][1] > 0.4, accs  # five classes: chance 0.2
assert linen_acc == accs[-1][1]
print("all checks passed")
