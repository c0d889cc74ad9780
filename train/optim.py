"""Optimisers and learning-rate schedules from optax, built from a config.

* ``sgd`` (momentum, optionally Nesterov) with L2 weight decay added to the gradient, as
  torch's SGD; ``adamw`` with decoupled decay. Either way the decay is masked off 1-D
  parameters: BatchNorm scales and biases and every bias (the usual practice since
  Goyal et al., 2017).
* Schedules: ``constant``, ``step`` (divide by 10 at the given fractions of training),
  ``cosine`` (linear warm-up, then cosine to zero); ``plateau`` additionally scales the
  updates by optax's reduce-on-plateau on the training loss.
* ``lr_base_batch``: the learning rate given per that many examples, scaled linearly to the
  run's batch size (Goyal et al., 2017: "0.1 per 256"), so a recipe keeps its meaning when
  ``--config.batch_size`` changes; ``warmup_epochs``: the warm-up in epochs of the run's
  data, for the same reason (:func:`resolve`).
* Gradient clipping by global norm; ``freeze_backbone`` zeroes every update outside the
  classifier head (fine-tuning converted weights with a new head); the train step then
  runs the backbone's BatchNorm in eval mode (``StepConfig.frozen_head``), so its running
  statistics stay those the weights were trained with.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

__all__ = ["build_optimizer", "build_schedule", "decay_mask", "in_head", "resolve"]


def resolve(cfg: Any, *, batch_size: int, steps_per_epoch: int) -> Any:
    """``cfg`` (an ``optim`` ``ConfigDict``) with the run-dependent settings made absolute: a
    ``learning_rate`` given per ``lr_base_batch`` examples scaled to ``batch_size``, and
    ``warmup_epochs`` converted to ``warmup_steps`` (rounded) of ``steps_per_epoch``. A copy;
    ``cfg`` is left alone."""
    out = cfg.copy_and_resolve_references()
    base = int(out.get("lr_base_batch", 0) or 0)
    if base:
        out["learning_rate"] = out["learning_rate"] * batch_size / base
        out["lr_base_batch"] = 0
    epochs = float(out.get("warmup_epochs", 0) or 0)
    if epochs:
        out["warmup_steps"] = round(epochs * steps_per_epoch)
        out["warmup_epochs"] = 0.0
    return out


def build_schedule(cfg: Any, total_steps: int) -> optax.Schedule:
    """``cfg.schedule`` over ``total_steps`` steps with peak ``cfg.learning_rate``."""
    lr, warmup = cfg.learning_rate, int(cfg.get("warmup_steps", 0))
    name = cfg.schedule
    if name in ("constant", "plateau"):
        main = optax.constant_schedule(lr)
    elif name == "step":
        bounds = {int(f * total_steps): 0.1 for f in cfg.get("step_fractions", (0.5, 0.75))}
        main = optax.piecewise_constant_schedule(lr, bounds)
    elif name == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
    else:
        raise ValueError(f"unknown schedule {name!r}; use constant, step, cosine or plateau")
    if warmup:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
    return main


def decay_mask(params: Any) -> Any:
    """True for weights that get weight decay: every parameter with more than one axis."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def in_head(keys: list[str], head: str) -> bool:
    """Whether a parameter path lies under the classifier ``head``, a registry name such as
    ``fc``, ``classifier.6`` or ``head.fc``. Models name submodules either flattened
    (``classifier_6``, one key) or nested (``head`` / ``fc``, consecutive keys)."""
    parts = head.split(".")
    if "_".join(parts) in keys:
        return True
    n = len(parts)
    return any(keys[i : i + n] == parts for i in range(len(keys) - n + 1))


def _head_labels(params: Any, head: str) -> Any:
    def label(path, _):
        keys = [str(getattr(k, "key", k)) for k in path]
        return "train" if in_head(keys, head) else "freeze"

    labels = jax.tree_util.tree_map_with_path(label, params)
    if "train" not in jax.tree.leaves(labels):
        raise ValueError(
            f"freeze_backbone: no parameter lies under the classifier {head!r}; nothing would train"
        )
    return labels


def build_optimizer(
    cfg: Any, total_steps: int, *, head: str | None = None
) -> optax.GradientTransformation:
    """The optax transformation for ``cfg`` (fields documented in ``configs/default.py``).

    ``head``: the model's classifier as the registry names it (``fc``, ``head.fc``), for
    ``freeze_backbone``."""
    sched = build_schedule(cfg, total_steps)
    wd = float(cfg.get("weight_decay", 0.0))
    if cfg.optimizer == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(wd, mask=decay_mask) if wd else optax.identity(),
            optax.sgd(
                sched,
                momentum=cfg.get("momentum", 0.9) or None,
                nesterov=cfg.get("nesterov", False),
            ),
        )
    elif cfg.optimizer == "adamw":
        tx = optax.adamw(
            sched, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), weight_decay=wd, mask=decay_mask
        )
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use sgd or adamw")
    parts = []
    if cfg.get("grad_clip_norm", 0):
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    parts.append(tx)
    if cfg.schedule == "plateau":
        parts.append(
            optax.contrib.reduce_on_plateau(
                factor=cfg.get("plateau_factor", 0.1),
                patience=cfg.get("plateau_patience", 10),
                accumulation_size=cfg.get("plateau_accumulation", 10),
            )
        )
    tx = optax.chain(*parts)
    if cfg.get("freeze_backbone", False):
        if not head:
            raise ValueError("freeze_backbone needs the model's classifier name")
        tx = optax.multi_transform(
            {"train": tx, "freeze": optax.set_to_zero()}, lambda p: _head_labels(p, head)
        )
    return tx
