"""Train and eval steps: pure functions, jitted over a 1-D ``data`` mesh of every device.

Data parallelism is ``jax.jit`` with ``NamedSharding``: the state is replicated, the global
batch is split over the ``data`` axis (across all local devices and, under
``jax.distributed``, across processes), and XLA inserts the collectives. The loss is the
mean over the *global* batch, so gradients are averaged across devices by construction.

BatchNorm under plain ``jit`` sees the global batch, i.e. synchronised BN (the default).
``bn_groups = G > 1`` computes the statistics per group instead (torch DDP's and MLPerf's
per-device / per-device-group BN): the batch is reshaped to ``(G, B/G, ...)`` and the model
is ``vmap``-ed over the groups with shared parameters; each group's running-stat update is
averaged. With ``G`` = the device count each device's slice is one group (per-device BN),
and because the grouping is defined on the batch, not on the hardware, one device with
``G`` groups computes exactly what ``G`` devices do.

Segmentation (``StepConfig.task == 'segmentation'``): ``label`` is the ``(B, H, W)`` class
map (255 ignored), the loss is :func:`flaxcnn.segmentation.cross_entropy` (mean over the
global batch's labelled pixels) plus ``aux_loss_weight`` times that of an auxiliary map
(FCN's ``{'out', 'aux'}``), the crop and flip augmentations move the masks with the
images, and the eval step returns the batch's confusion matrix, which the caller sums over
the whole split (XLA sums it over the devices and processes of each global batch).

The non-finite guard: a step whose loss or gradients are not finite keeps the old params,
optimizer state, batch_stats and EMA (``jnp.where`` on every leaf) and reports
``nonfinite = 1``; the loop stops after ``max_nonfinite`` in a row.

Dynamic loss scaling (float16 compute; Micikevicius et al., "Mixed Precision Training",
ICLR 2018): when the state carries a :class:`LossScale`, the loss is multiplied by its
``scale`` before differentiation, so that small gradients survive float16's narrow range,
and the float32 gradients are divided by it before the optimizer sees them. A step whose
loss is finite but whose gradients are not is an *overflow*: it is skipped exactly as a
non-finite step is, the scale halves, and it is reported as ``overflow = 1`` with
``nonfinite = 0``, because it is the expected way the scale finds its level, not a sign of
divergence. ``loss_scale_period`` finite steps in a row double the scale. Two cases still
count as non-finite (and so towards the loop's stop): a non-finite *loss* (lowering the
scale cannot fix the forward pass), and an overflow at the floor scale of 1 (no scaling is
left to remove); neither changes the scale.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flaxcnn.segmentation import IGNORE_INDEX, confusion_matrix, cross_entropy
from flaxcnn.xla import compiler_options

from .augment import augment_batch, cutmix, mixup
from .optim import in_head

__all__ = [
    "MIN_LOSS_SCALE",
    "LossScale",
    "StepConfig",
    "TrainState",
    "all_finite",
    "batch_sharding",
    "create_train_state",
    "distillation_loss",
    "ema_update",
    "inputs_and_targets",
    "keep_if_finite",
    "make_eval_step",
    "make_mesh",
    "make_train_step",
    "mix_batch",
    "next_loss_scale",
    "replicated",
    "scaled_value_and_grad",
    "shard_batch",
    "split_outputs",
    "supervised_loss",
    "to_host",
    "train_metrics",
]


MIN_LOSS_SCALE = 1.0  # the dynamic loss scale never halves below this


@struct.dataclass
class LossScale:
    """Dynamic loss scale: the current ``scale`` (float32) and the number of consecutive
    finite steps taken at it (``good_steps``, int32). Part of the state and the checkpoint,
    so a resumed run continues with the same scale and growth count."""

    scale: jax.Array
    good_steps: jax.Array

    @classmethod
    def create(cls, initial: float) -> LossScale:
        if not initial >= MIN_LOSS_SCALE or not np.isfinite(initial):
            raise ValueError(
                f"the initial loss scale must be finite and >= {MIN_LOSS_SCALE}, got {initial}"
            )
        return cls(scale=jnp.float32(initial), good_steps=jnp.zeros((), jnp.int32))


@struct.dataclass
class TrainState:
    """Everything a step changes. ``ema_params`` is ``None`` unless EMA is on;
    ``loss_scale`` is ``None`` unless dynamic loss scaling (float16) is on."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any = None
    loss_scale: LossScale | None = None


@struct.dataclass
class StepConfig:
    """Static settings of the train step (hashable, part of the compiled program)."""

    num_classes: int = struct.field(pytree_node=False)
    mean: tuple[float, ...] = struct.field(pytree_node=False, default=(0.5,))
    std: tuple[float, ...] = struct.field(pytree_node=False, default=(0.5,))
    label_smoothing: float = struct.field(pytree_node=False, default=0.0)
    aux_loss_weight: float = struct.field(pytree_node=False, default=0.3)
    bn_groups: int = struct.field(pytree_node=False, default=1)
    ema_decay: float = struct.field(pytree_node=False, default=0.0)
    augment: tuple = struct.field(pytree_node=False, default=())
    mixup_alpha: float = struct.field(pytree_node=False, default=0.0)
    cutmix_alpha: float = struct.field(pytree_node=False, default=0.0)
    distill_alpha: float = struct.field(pytree_node=False, default=0.0)
    distill_temperature: float = struct.field(pytree_node=False, default=4.0)
    distill_hard: bool = struct.field(pytree_node=False, default=False)
    loss_scale_period: int = struct.field(pytree_node=False, default=2000)
    task: str = struct.field(pytree_node=False, default="classification")
    # The classifier's name when the backbone is frozen (optim.freeze_backbone): the
    # backbone's BatchNorm then runs in eval mode. "" otherwise.
    frozen_head: str = struct.field(pytree_node=False, default="")


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: every device of every process)."""
    return Mesh(np.array(devices if devices is not None else jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _compiler_options(mesh: Mesh) -> dict[str, str] | None:
    """flaxcnn's XLA options for the mesh's platform (fast convolutions on CPU)."""
    return compiler_options(mesh.devices.flat[0].platform)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's slice of the global batch -> global arrays split over ``data``."""
    sh = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sh, np.asarray(v)) for k, v in batch.items()}


def to_host(tree: Any) -> Any:
    """Fetch replicated arrays as numpy, also when they span processes."""
    return jax.tree.map(
        lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else a, tree
    )


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    input_shape: tuple[int, ...],
    mesh: Mesh,
    *,
    ema: bool = False,
    loss_scale: float | None = None,
    variables: Mapping[str, Any] | None = None,
) -> TrainState:
    """Initialise (or take a copy of ``variables``) and place the state replicated on ``mesh``.

    ``loss_scale``: the initial dynamic loss scale (float16 training), or ``None`` for none.
    The model's init is compiled once per (model, shape, mesh) and reused; the optimizer
    state is built eagerly from the replicated parameters.
    """
    rep = replicated(mesh)
    if variables is None:
        variables = _init_fn(model, tuple(input_shape), mesh)(rng)
        v = jax.device_put(dict(variables), rep)
    else:
        # A copy: the train step donates its state, which must not delete the caller's
        # arrays (on one device, device_put would otherwise hand back the same buffers).
        v = jax.device_put(dict(variables), rep, may_alias=False)
    params = v["params"]
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=v.get("batch_stats", {}),
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        loss_scale=None if loss_scale is None else LossScale.create(loss_scale),
    )
    return jax.device_put(state, rep)


@functools.lru_cache(maxsize=16)
def _init_fn(model: nn.Module, input_shape: tuple[int, ...], mesh: Mesh) -> Callable:
    def init(rng):
        return model.init(rng, jnp.zeros(input_shape, jnp.float32))

    return jax.jit(init, out_shardings=replicated(mesh))


def _normalise(x: jax.Array, cfg: StepConfig) -> jax.Array:
    mean = jnp.asarray(cfg.mean, jnp.float32)
    std = jnp.asarray(cfg.std, jnp.float32)
    return (x - mean) / std


def split_outputs(out: Any) -> tuple[jax.Array, list[jax.Array]]:
    """Models with auxiliary heads return ``(logits, aux1, ...)`` in train mode, segmentation
    models with one a dict ``{'out': ..., 'aux': ...}`` (torchvision's FCN)."""
    if isinstance(out, Mapping):
        return out["out"], [v for k, v in out.items() if k != "out"]
    if isinstance(out, (tuple, list)):
        return out[0], list(out[1:])
    return out, []


def _xent(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def _frozen_batchnorm(head: str) -> Callable:
    """A flax method interceptor: every BatchNorm outside the classifier ``head`` runs in
    eval mode (running statistics, left unchanged), as Keras does for a frozen layer and
    timm's ``freeze_batch_norm_2d``: a frozen backbone keeps the statistics its weights
    were trained with, while the head still trains in train mode (dropout, its own BN).
    Covers flaxcnn's ``BatchNorm2d`` (every model's) and a flax ``nn.BatchNorm`` whose
    ``use_running_average`` is given at call time (flax forbids overriding a field)."""
    from flaxcnn.layers import BatchNorm2d

    def interceptor(next_fun, args, kwargs, context):
        m = context.module
        if context.method_name == "__call__" and not in_head(list(m.path), head):
            if isinstance(m, BatchNorm2d):
                kwargs = {**kwargs, "train": False}
            elif isinstance(m, nn.BatchNorm) and m.use_running_average is None:
                kwargs = {**kwargs, "use_running_average": True}
        return next_fun(*args, **kwargs)

    return interceptor


def _apply(model, variables, x, rng, bn_groups, frozen_head=""):
    """Train-mode forward; per-group BN statistics when ``bn_groups > 1``; with a
    ``frozen_head`` (the classifier of a frozen backbone) the backbone's BN in eval mode."""

    def fwd(v, xs, key):
        if frozen_head:
            with nn.intercept_methods(_frozen_batchnorm(frozen_head)):
                return model.apply(
                    v, xs, train=True, mutable=["batch_stats"], rngs={"dropout": key}
                )
        return model.apply(v, xs, train=True, mutable=["batch_stats"], rngs={"dropout": key})

    if bn_groups <= 1:
        return fwd(variables, x, rng)
    b = x.shape[0]
    if b % bn_groups:
        raise ValueError(f"batch {b} is not divisible by bn_groups={bn_groups}")
    xs = x.reshape(bn_groups, b // bn_groups, *x.shape[1:])
    out, upd = jax.vmap(fwd, in_axes=(None, 0, 0))(variables, xs, jax.random.split(rng, bn_groups))
    out = jax.tree.map(lambda o: o.reshape(b, *o.shape[2:]), out)
    upd = jax.tree.map(lambda s: jnp.mean(s, axis=0), upd)
    return out, upd


def mix_batch(
    key: jax.Array, x: jax.Array, targets: jax.Array, mixup_alpha: float, cutmix_alpha: float
) -> tuple[jax.Array, jax.Array]:
    """Mixup (Zhang et al., ICLR 2018) or CutMix (Yun et al., ICCV 2019) of a batch and its
    one-hot targets, whichever ``alpha`` is non-zero; with both, one of the two per step with
    probability 1/2 (timm's ``Mixup`` with ``switch_prob=0.5``). The per-step choice is a
    ``lax.cond``, so only the chosen mix is computed; with neither, the batch is unchanged."""
    if not (mixup_alpha or cutmix_alpha):
        return x, targets
    k_choice, k = jax.random.split(key)
    if mixup_alpha and cutmix_alpha:
        return jax.lax.cond(
            jax.random.bernoulli(k_choice),
            lambda: cutmix(k, x, targets, cutmix_alpha),
            lambda: mixup(k, x, targets, mixup_alpha),
        )
    if mixup_alpha:
        return mixup(k, x, targets, mixup_alpha)
    return cutmix(k, x, targets, cutmix_alpha)


def inputs_and_targets(
    k_aug: jax.Array, k_mix: jax.Array, batch: Mapping[str, jax.Array], cfg: StepConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The model's input and the loss's targets from a batch: augmented (the class map moves
    with the image for segmentation), normalised, mixed (:func:`mix_batch`) and
    label-smoothed; also the (augmented, unmixed) labels the accuracy is measured on."""
    aug = dict(cfg.augment)
    if cfg.task == "segmentation":
        x, labels = augment_batch(k_aug, batch["image"], aug, mask=batch["label"])
        targets = labels
    else:
        x, labels = augment_batch(k_aug, batch["image"], aug), batch["label"]
        targets = jax.nn.one_hot(labels, cfg.num_classes)
    x, targets = mix_batch(k_mix, _normalise(x, cfg), targets, cfg.mixup_alpha, cfg.cutmix_alpha)
    if cfg.label_smoothing:
        targets = optax.smooth_labels(targets, cfg.label_smoothing)
    return x, targets, labels


def supervised_loss(
    logits: jax.Array, aux: list[jax.Array], targets: jax.Array, cfg: StepConfig
) -> jax.Array:
    """The loss against the labels: cross-entropy with (soft) one-hot ``targets``, or for
    segmentation :func:`flaxcnn.segmentation.cross_entropy` against the class map, plus
    ``aux_loss_weight`` times the same loss of each auxiliary output."""
    if cfg.task == "segmentation":
        criterion = cross_entropy
    else:

        def criterion(z, t):
            return jnp.mean(_xent(z, t))

    loss = criterion(logits, targets)
    for a in aux:
        loss = loss + cfg.aux_loss_weight * criterion(a, targets)
    return loss


def distillation_loss(
    logits: jax.Array, teacher_logits: jax.Array, *, temperature: float, hard: bool
) -> jax.Array:
    """Knowledge distillation (Hinton et al., 2015): ``T^2 * KL(teacher_T || student_T)``
    averaged over the batch, the softmaxes taken at temperature ``T`` (the ``T^2`` keeps the
    gradient's scale independent of ``T``); with ``hard``, the cross-entropy against the
    teacher's argmax (hard pseudo-labels)."""
    if hard:
        pseudo = jax.nn.one_hot(jnp.argmax(teacher_logits, -1), logits.shape[-1])
        return jnp.mean(_xent(logits, pseudo))
    t = temperature
    p_t = jax.nn.softmax(teacher_logits / t)
    kl = jnp.sum(
        p_t * (jax.nn.log_softmax(teacher_logits / t) - jax.nn.log_softmax(logits / t)), -1
    )
    return t * t * jnp.mean(kl)


def all_finite(tree: Any) -> jax.Array:
    """Whether every element of every leaf is finite (a boolean scalar)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(tree)]))


def scaled_value_and_grad(
    loss_fn: Callable, params: Any, loss_scale: LossScale | None
) -> tuple[tuple[jax.Array, Any], Any]:
    """``((loss, aux), grads)`` of ``loss_fn(params) -> (loss, aux)``. With a loss scale the
    derivative is taken of ``loss * scale`` (float16's small gradients survive) and the
    gradients are divided by the scale again; the loss returned is the unscaled one."""
    if loss_scale is None:
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    def scaled(p):
        loss, aux = loss_fn(p)
        return loss * loss_scale.scale, (loss, aux)

    (_, out), grads = jax.value_and_grad(scaled, has_aux=True)(params)
    return out, jax.tree.map(lambda g: g / loss_scale.scale, grads)


def next_loss_scale(
    ls: LossScale, *, loss_ok: jax.Array, grads_ok: jax.Array, period: int
) -> tuple[LossScale, jax.Array]:
    """The loss scale after a step, and whether the step was an *overflow* (module
    docstring): a finite loss with non-finite gradients above the floor scale halves the
    scale (not below :data:`MIN_LOSS_SCALE`); ``period`` finite steps in a row double it;
    any non-finite step resets the count of finite ones."""
    finite = loss_ok & grads_ok
    overflow = loss_ok & ~grads_ok & (ls.scale > MIN_LOSS_SCALE)
    grow = finite & (ls.good_steps + 1 >= period)
    scale = jnp.where(
        overflow,
        jnp.maximum(ls.scale / 2, MIN_LOSS_SCALE),
        jnp.where(grow, ls.scale * 2, ls.scale),
    )
    good_steps = jnp.where(finite & ~grow, ls.good_steps + 1, 0).astype(jnp.int32)
    return LossScale(scale=scale, good_steps=good_steps), overflow


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """``decay * ema + (1 - decay) * params``, leaf by leaf (``None`` stays ``None``)."""
    if ema is None:
        return None
    return jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``finite`` is true, else ``old``: the non-finite guard, leaf by leaf over
    two trees of the same structure (a :class:`TrainState`, say)."""
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def train_metrics(
    loss: jax.Array,
    logits: jax.Array,
    labels: jax.Array,
    grads: Any,
    nonfinite: jax.Array,
    *,
    segmentation: bool,
) -> dict[str, jax.Array]:
    """A train step's ``loss``, ``accuracy`` (against the unmixed labels; for segmentation
    pixel accuracy over the labelled pixels), gradient global norm and ``nonfinite`` flag."""
    hit = jnp.argmax(logits, -1) == labels
    if segmentation:
        valid = labels != IGNORE_INDEX
        accuracy = jnp.sum(hit & valid) / jnp.maximum(jnp.sum(valid), 1)
    else:
        accuracy = jnp.mean(hit)
    return {
        "loss": loss,
        "accuracy": accuracy,
        "grad_norm": optax.tree.norm(grads),
        "nonfinite": nonfinite.astype(jnp.int32),
    }


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    cfg: StepConfig,
    mesh: Mesh,
    *,
    teacher: tuple[nn.Module, Any] | None = None,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """``train_step(state, batch, rng) -> (state, metrics)``, jitted, state donated.

    ``batch``: ``image`` float32 ``(B, H, W, C)`` in [0, 1], ``label`` int ``(B,)`` (or the
    ``(B, H, W)`` class map for segmentation; its ``accuracy`` is then pixel accuracy).
    ``teacher``: ``(module, variables)`` for knowledge distillation: the loss is
    ``(1 - a) * supervised + a * distillation`` (:func:`distillation_loss`).
    If ``state.loss_scale`` is set, the step scales the loss dynamically (module docstring)
    and adds ``overflow`` and ``loss_scale`` (the scale this step used) to the metrics.
    """
    seg = cfg.task == "segmentation"
    if cfg.distill_alpha and teacher is None:
        raise ValueError("distill_alpha > 0 needs a teacher model")
    if seg and (cfg.mixup_alpha or cfg.cutmix_alpha or cfg.label_smoothing or cfg.distill_alpha):
        raise ValueError(
            "segmentation steps take no mixup, cutmix, label smoothing or distillation"
        )
    distill = teacher is not None and cfg.distill_alpha

    def step(state: TrainState, batch: dict, rng: jax.Array):
        k_aug, k_mix, k_drop = jax.random.split(jax.random.fold_in(rng, state.step), 3)
        x, targets, labels = inputs_and_targets(k_aug, k_mix, batch, cfg)
        t_logits = _teacher_logits(teacher, x) if distill else None

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            out, upd = _apply(model, variables, x, k_drop, cfg.bn_groups, cfg.frozen_head)
            logits, aux = split_outputs(out)
            logits = logits.astype(jnp.float32)
            loss = supervised_loss(logits, aux, targets, cfg)
            if distill:
                kd = distillation_loss(
                    logits, t_logits, temperature=cfg.distill_temperature, hard=cfg.distill_hard
                )
                loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * kd
            return loss, (logits, upd.get("batch_stats", state.batch_stats))

        (loss, (logits, new_stats)), grads = scaled_value_and_grad(
            loss_fn, state.params, state.loss_scale
        )
        loss_ok, grads_ok = jnp.isfinite(loss), all_finite(grads)
        updates, new_opt = tx.update(grads, state.opt_state, state.params, value=loss)
        new_params = optax.apply_updates(state.params, updates)
        updated = state.replace(
            params=new_params,
            batch_stats=new_stats,
            opt_state=new_opt,
            ema_params=ema_update(state.ema_params, new_params, cfg.ema_decay),
        )
        new_state = keep_if_finite(loss_ok & grads_ok, updated, state)
        new_state = new_state.replace(step=state.step + 1)
        overflow = jnp.zeros((), bool)
        if state.loss_scale is not None:
            new_ls, overflow = next_loss_scale(
                state.loss_scale, loss_ok=loss_ok, grads_ok=grads_ok, period=cfg.loss_scale_period
            )
            new_state = new_state.replace(loss_scale=new_ls)
        nonfinite = ~(loss_ok & grads_ok) & ~overflow  # an overflow is not a divergence
        metrics = train_metrics(loss, logits, labels, grads, nonfinite, segmentation=seg)
        if state.loss_scale is not None:
            metrics["overflow"] = overflow.astype(jnp.int32)
            metrics["loss_scale"] = state.loss_scale.scale
        return new_state, metrics

    rep = replicated(mesh)
    return jax.jit(
        step,
        in_shardings=(rep, batch_sharding(mesh), rep),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
        compiler_options=_compiler_options(mesh),
    )


def _teacher_logits(teacher: tuple[nn.Module, Any], x: jax.Array) -> jax.Array:
    """The teacher's eval-mode float32 logits, a constant for the student's gradient."""
    t_model, t_vars = teacher
    out = split_outputs(t_model.apply(t_vars, x, train=False))[0]
    return jax.lax.stop_gradient(out.astype(jnp.float32))


def make_eval_step(
    model: nn.Module, cfg: StepConfig, mesh: Mesh, *, use_ema: bool = False
) -> Callable:
    """``eval_step(state, batch) -> metrics`` summed over the global batch; examples with
    ``mask == False`` (padding) do not count.

    Classification: ``{loss_sum, top1, top5, count}`` (``count`` images). Segmentation:
    ``{loss_sum, count, confusion}`` with ``count`` the labelled pixels and ``confusion``
    the ``(C, C)`` int32 confusion matrix of the batch (rows true class, columns predicted),
    to be summed over batches before mean IoU and pixel accuracy are read from it."""
    seg = cfg.task == "segmentation"

    def step(state: TrainState, batch: dict):
        params = state.ema_params if use_ema and state.ema_params is not None else state.params
        x = _normalise(batch["image"], cfg)
        out = model.apply({"params": params, "batch_stats": state.batch_stats}, x, train=False)
        logits = split_outputs(out)[0].astype(jnp.float32)
        if seg:
            keep = batch["mask"].reshape(-1, 1, 1)
            labels = jnp.where(keep, batch["label"], IGNORE_INDEX)
            count = jnp.sum(labels != IGNORE_INDEX)
            return {
                "loss_sum": cross_entropy(logits, labels) * count,
                "count": count,
                "confusion": confusion_matrix(jnp.argmax(logits, -1), labels, cfg.num_classes),
            }
        labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
        loss = _xent(logits, jax.nn.one_hot(labels, cfg.num_classes))
        k = min(5, cfg.num_classes)
        topk = jax.lax.top_k(logits, k)[1]
        hit = topk == labels[:, None]
        return {
            "loss_sum": jnp.sum(loss * mask),
            "top1": jnp.sum(hit[:, 0] * mask),
            "top5": jnp.sum(jnp.any(hit, -1) * mask),
            "count": jnp.sum(mask),
        }

    rep = replicated(mesh)
    return jax.jit(
        step,
        in_shardings=(rep, batch_sharding(mesh)),
        out_shardings=rep,
        compiler_options=_compiler_options(mesh),
    )
