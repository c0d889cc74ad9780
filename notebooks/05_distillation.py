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
# # 5. Knowledge distillation: hard and soft targets
#
# A big, accurate *teacher* can train a small, fast *student*. With **hard targets** the
# teacher only labels the images (logits, softmax, one-hot), and the student learns those
# labels. With **soft targets** the student learns the teacher's whole probability
# vector: a "3" that the teacher finds somewhat like an "8" says so, and that similarity
# is information a one-hot label throws away. A softmax at temperature `T > 1`,
# `softmax(z / T)`, spreads the probabilities so the small ones carry weight (Hinton et
# al., 2015).
#
# Here the teacher is ResNet-18 (CIFAR stem) and the student LeNet-5, both from the zoo,
# trained with `flaxcnn.train` on the embedded digits. The trainer's distillation loss is
# `(1 - a) * CE(labels) + a * T^2 * KL(softmax(teacher / T) || softmax(student / T))`
# (`config.distill`: `teacher`, `checkpoint`, `alpha`, `temperature`; `hard=True` uses the
# teacher's argmax as the label instead).
#
# Set `FLAXCNN_NOTEBOOK_SMALL=1` for the quick version CI runs: 2 simulated devices, a few
# steps, and a LeNet-5 teacher (another seed) instead of ResNet-18, whose train step is
# then the hard-label student's, compiled once (the accuracies are those of a few steps,
# not of trained models).

# %%
import os

from _common import SMALL, classic_threefry, device_flags, scratch_dir, show

os.environ["XLA_FLAGS"] = device_flags()  # simulated CPU devices, before JAX starts

import json

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import flaxcnn
from flaxcnn.train import data as data_lib
from flaxcnn.train.checkpoint import Checkpointer
from flaxcnn.train.cli import load_config
from flaxcnn.train.loop import setup, train

classic_threefry()
ROOT = scratch_dir("flaxcnn_nb05_")
DATA_DIR = os.path.join(ROOT, "tfds")  # the digits are prepared here on first use (seconds)
# The teacher: (registry name, shipped config, its model_kwargs, label).
TEACHER = (
    ("lenet5", "digits_lenet", {}, "LeNet-5")
    if SMALL
    else ("resnet18", "digits_resnet18", {"stem_type": "cifar"}, "ResNet-18")
)
T_NAME, T_CONFIG, T_KWARGS, T_LABEL = TEACHER
SHORT = ["num_steps=4", "checkpoint_every_steps=2", "batch_size=32", "eval_batch_size=120"]


def config(name, workdir, overrides=()):
    cfg = load_config(name, [*(SHORT if SMALL else []), *overrides])
    cfg.data_dir = DATA_DIR
    cfg.workdir = os.path.join(ROOT, workdir)
    cfg.progress = False
    return cfg


def read_metrics(cfg):
    with open(os.path.join(cfg.workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# %% [markdown]
# ## The teacher
#
# ResNet-18 with the `digits_resnet18` recipe (32x32 inputs, the size LeNet-5 needs too:
# the teacher sees exactly the student's input), trained for 12 epochs instead of the
# recipe's 4. In small mode a LeNet-5 with seed 1.

# %%
# 4 epochs of the recipe reached 78% here; 12 reach 96.7%.
t_cfg = config(T_CONFIG, "teacher", ["image_size=32", "seed=1" if SMALL else "num_epochs=12"])
t_cfg.model_kwargs = T_KWARGS
teacher_run = train(t_cfg)
t_ckpt = os.path.join(t_cfg.workdir, "checkpoints")

# %% [markdown]
# ## Soft targets: the teacher's outputs at several temperatures
#
# The teacher's logits for a few test digits, read back from its checkpoint
# (`Checkpointer.restore_variables`: only the model's weights), and turned into
# probabilities with `softmax(z / T)`. At `T = 1` a trained teacher is nearly one-hot; at
# `T = 4` the runner-up classes become visible: which other digits this one resembles.

# %%
s = setup(t_cfg)
teacher = flaxcnn.create_model(T_NAME, num_classes=10, in_chans=1, **T_KWARGS)
shape = (1, t_cfg.image_size, t_cfg.image_size, 1)
like = jax.eval_shape(teacher.init, jax.random.key(0), jnp.zeros(shape))
t_vars = Checkpointer(t_ckpt, async_save=False).restore_variables(
    {"params": like["params"], "batch_stats": like.get("batch_stats", {})}
)
batch = next(
    iter(data_lib.eval_batches(s.eval_source, s.info, size=t_cfg.image_size, global_batch_size=120))
)
images, labels = batch["image"], batch["label"]
x = (images - np.asarray(s.info.mean)) / np.asarray(s.info.std)  # as the train step normalises
logits = np.asarray(jax.jit(teacher.apply)(t_vars, jnp.asarray(x)))

TEMPS = (1.0, 2.0, 4.0, 10.0)


def soft(z, t):
    return np.asarray(jax.nn.softmax(jnp.asarray(z) / t, axis=-1))


def entropy(p):
    return float(np.mean(-np.sum(p * np.log(np.clip(p, 1e-12, 1)), -1)))


entropies = {t: entropy(soft(logits, t)) for t in TEMPS}
for t, h in entropies.items():
    print(
        f"T = {t:4.1f}: mean entropy of the soft targets {h:.3f} nats (uniform: {np.log(10):.3f})"
    )

# The digits the teacher is least sure about at T = 1: the most informative soft targets.
p1 = soft(logits, 1.0)
order = np.argsort(np.sort(p1, -1)[:, -2])[::-1][:3]
fig, axes = plt.subplots(len(order), 1 + len(TEMPS), figsize=(13, 2.3 * len(order)))
for row, i in zip(axes, order, strict=True):
    row[0].imshow(images[i, :, :, 0], cmap="gray_r")
    row[0].set_title(f"label {labels[i]}", fontsize=9)
    row[0].set_axis_off()
    for ax, t in zip(row[1:], TEMPS, strict=True):
        p = soft(logits[i], t)
        colors = ["tab:red" if c == labels[i] else "tab:blue" for c in range(10)]
        ax.bar(range(10), p, color=colors)
        ax.set_xticks(range(10))
        ax.set_ylim(0, 1)
        ax.set_title(f"softmax(z / {t:g})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    row[1].set_ylabel("probability")
for ax in axes[-1, 1:]:
    ax.set_xlabel("class")
fig.suptitle(
    f"Teacher ({T_LABEL}) soft targets on test digits: higher T, softer targets (red: true class)"
)
show(fig, "05_temperature")

# %% [markdown]
# ## The student: hard labels only vs distillation
#
# LeNet-5 with the `digits_lenet` recipe, trained twice from the same initialisation on the
# same batches: once on the labels only (`distill.alpha = 0`), once with the teacher's soft
# targets at `T = 4` (`distill.alpha = 0.9`: the soft loss carries most of the weight).
# The train loss logged for the distilled run is the combined loss.

# %%
students = {
    "hard labels": config("digits_lenet", "student_hard"),
    "distilled (T=4)": config(
        "digits_lenet",
        "student_kd",
        [
            f"distill.teacher={T_NAME}",
            f"distill.checkpoint={t_ckpt}",
            "distill.alpha=0.9",
            "distill.temperature=4.0",
        ],
    ),
}
students["distilled (T=4)"].distill.teacher_kwargs = T_KWARGS
runs, curves = {}, {}
for label, cfg in students.items():
    runs[label] = train(cfg)
    curves[label] = read_metrics(cfg)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for (label, rows), color in zip(curves.items(), ["tab:blue", "tab:orange"], strict=True):
    ep = [r["epoch"] for r in rows]
    ax1.plot(ep, [r["train_loss"] for r in rows], "-", color=color, label=f"{label}: train")
    ax1.plot(
        ep, [r["eval_loss"] for r in rows], "o--", ms=3, color=color, label=f"{label}: test CE"
    )
    ax2.plot(ep, [r["top1"] for r in rows], "o-", ms=3, color=color, label=label)
ax2.axhline(teacher_run["top1"], color="gray", ls=":", label=f"teacher ({T_LABEL})")
ax1.set(xlabel="epoch", ylabel="loss", title="loss (distilled: (1-a)·CE + a·T²·KL)")
ax2.set(xlabel="epoch", ylabel="test top-1", title="student test accuracy", ylim=(0, 1))
for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.suptitle(f"LeNet-5 student: hard labels vs distillation from {T_LABEL}")
show(fig, "05_student_curves")

print(f"{'run':18s} {'test top-1':>10s} {'test CE':>8s}")
print(f"{'teacher ' + T_LABEL:18s} {teacher_run['top1']:10.2%} {teacher_run['eval_loss']:8.3f}")
for label, r in runs.items():
    print(f"{label:18s} {r['top1']:10.2%} {r['eval_loss']:8.3f}")

# %% [markdown]
# ## What this notebook showed (checked)

# %%
hs = [entropies[t] for t in TEMPS]
assert all(np.diff(hs) > 0), hs  # softer with every higher temperature
assert hs[-1] < np.log(10)  # still not uniform at T = 10: the teacher's ranking survives
kd = curves["distilled (T=4)"]
assert kd[-1]["train_loss"] < kd[0]["train_loss"]  # the distilled student learns
assert all(np.isfinite(r["train_loss"]) for rows in curves.values() for r in rows)
if not SMALL:
    # Measured in full mode (2026-12-02, 1,000 s on 2 CPU cores): teacher 96.7%, hard labels
    # 97.5%, distilled 96.7%. On these ~1,400 easy training digits LeNet-5 alone matches its
    # ResNet-18 teacher, so distillation transfers the teacher's level, not more.
    assert teacher_run["top1"] > 0.93
    assert runs["hard labels"]["top1"] > 0.93
    assert runs["distilled (T=4)"]["top1"] > 0.93
print("all checks passed")
