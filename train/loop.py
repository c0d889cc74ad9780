"""The training job: config in, trained checkpoint, metrics, plot and summary out.

Metrics go to ``<workdir>/metrics.jsonl`` (one JSON object per evaluation) and, with
``config.tensorboard``, as the same scalars (same names) to TensorBoard event files in the
workdir, written by ``tensorboardX`` (no TensorFlow needed).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

import flaxcnn
from flaxcnn.segmentation import mean_iou, pixel_accuracy

from . import data as data_lib
from .checkpoint import Checkpointer, CheckpointError
from .optim import build_optimizer
from .steps import (
    StepConfig,
    TrainState,
    create_train_state,
    make_eval_step,
    make_mesh,
    make_train_step,
    shard_batch,
    split_outputs,
    to_host,
)

__all__ = [
    "ConfigError",
    "NonFiniteError",
    "Setup",
    "evaluate",
    "evaluate_checkpoint",
    "plot_curves",
    "setup",
    "train",
]


class ConfigError(ValueError):
    """A setting that cannot work, found at start-up; the message says what to change."""


class NonFiniteError(RuntimeError):
    """Too many consecutive non-finite steps."""


@dataclasses.dataclass
class Setup:
    """Everything built from a config before the first step."""

    cfg: Any
    info: data_lib.DatasetInfo
    model: Any
    mesh: Any
    tx: Any
    step_cfg: StepConfig
    train_source: Any
    eval_source: Any
    num_classes: int
    steps_per_epoch: int
    total_steps: int


def _dtype(precision: str):
    table = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
    if precision not in table:
        raise ConfigError(f"config.precision must be one of {sorted(table)}, got {precision!r}")
    return table[precision]


def _head_name(model_name: str) -> str | None:
    """The registry's dotted classifier name (``fc``, ``classifier.6``, ``head.fc``)."""
    return flaxcnn.get_model_spec(model_name).classifier


def setup(cfg: Any, *, devices: list | None = None) -> Setup:
    """Validate ``cfg`` and build the model, mesh, optimizer and data sources."""
    devices = devices if devices is not None else jax.devices()
    n_dev = len(devices)
    try:
        info = data_lib.get_dataset(cfg.dataset)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        spec = flaxcnn.get_model_spec(cfg.model)
    except ValueError as e:
        raise ConfigError(f"config.model: {e}") from None
    _check_task(cfg, spec, info)
    if cfg.batch_size % n_dev:
        raise ConfigError(
            f"config.batch_size={cfg.batch_size} is not divisible by the {n_dev} devices; "
            f"use a multiple of {n_dev}"
        )
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    if eval_bs % n_dev:
        raise ConfigError(
            f"config.eval_batch_size={eval_bs} is not divisible by the {n_dev} devices"
        )
    data_dir = cfg.data_dir or None
    train_source = data_lib.load_source(info, info.train_split, data_dir, cfg.manual_dir or None)
    eval_source = data_lib.load_source(info, info.eval_split, data_dir, cfg.manual_dir or None)
    ds_classes = len(train_source.classes) if info.tfds_name is None else info.num_classes
    if cfg.num_classes and cfg.num_classes != ds_classes:
        raise ConfigError(
            f"config.num_classes={cfg.num_classes} but dataset {info.name!r} has "
            f"{ds_classes} classes; "
            f"set --config.num_classes={ds_classes} (or 0 to take the dataset's)"
        )
    try:
        model = spec.build(
            num_classes=ds_classes,
            in_chans=info.in_chans,
            dtype=_dtype(cfg.precision),
            **dict(cfg.model_kwargs),
        )
    except TypeError as e:
        raise ConfigError(f"config.model_kwargs: {e}") from None
    if info.task == "segmentation":
        _check_output_size(model, cfg, info)
    steps_per_epoch = len(train_source) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"config.batch_size={cfg.batch_size} exceeds the train split ({len(train_source)})"
        )
    total = cfg.num_steps or cfg.num_epochs * steps_per_epoch
    ls = cfg.loss_scale
    if cfg.precision == "float16" and not (1 <= ls.initial < float("inf") and ls.period >= 1):
        raise ConfigError(
            "config.loss_scale needs a finite initial >= 1 and period >= 1, got "
            f"initial={ls.initial}, period={ls.period}"
        )
    if cfg.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError(
            "config.tensorboard=True needs tensorboardX (in the [train] extra): "
            "pip install tensorboardX, or set config.tensorboard=False"
        )
    if cfg.batch_norm == "sync":
        bn_groups = 1
    elif cfg.batch_norm == "group":
        if n_dev % cfg.bn_group_devices:
            raise ConfigError(
                f"bn_group_devices={cfg.bn_group_devices} does not divide the {n_dev} devices"
            )
        bn_groups = n_dev // cfg.bn_group_devices
    else:
        raise ConfigError(f"config.batch_norm must be 'sync' or 'group', got {cfg.batch_norm!r}")
    step_cfg = StepConfig(
        num_classes=ds_classes,
        mean=tuple(info.mean),
        std=tuple(info.std),
        label_smoothing=cfg.label_smoothing,
        aux_loss_weight=cfg.aux_loss_weight,
        bn_groups=bn_groups,
        ema_decay=cfg.ema_decay,
        augment=tuple(sorted(dict(cfg.augment).items())),
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
        distill_alpha=cfg.distill.alpha,
        distill_temperature=cfg.distill.temperature,
        distill_hard=cfg.distill.hard,
        loss_scale_period=int(cfg.loss_scale.period),
        task=info.task,
        frozen_head=(_head_name(cfg.model) or "") if cfg.optim.get("freeze_backbone") else "",
    )
    try:
        tx = build_optimizer(cfg.optim, total, head=_head_name(cfg.model))
    except ValueError as e:
        raise ConfigError(f"config.optim: {e}") from None
    return Setup(
        cfg=cfg,
        info=info,
        model=model,
        mesh=make_mesh(devices),
        tx=tx,
        step_cfg=step_cfg,
        train_source=train_source,
        eval_source=eval_source,
        num_classes=ds_classes,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
    )


def _check_task(cfg: Any, spec: Any, info: data_lib.DatasetInfo) -> None:
    """The model and the dataset must be for the same task; segmentation takes no recipe
    that mixes or softens per-image labels, and no augmentation that would leave labels on
    pixels it changed."""
    if spec.task != info.task:
        same = sorted(n for n, d in data_lib.DATASETS.items() if d.task == spec.task)
        hint = f"one of {same}" if same else "a dataset of that task"
        raise ConfigError(
            f"config.model={cfg.model!r} is a {spec.task} model but config.dataset="
            f"{cfg.dataset!r} is a {info.task} dataset: set config.dataset to {hint}, or "
            f"choose a {info.task} model"
        )
    if info.task != "segmentation":
        return
    unsupported = {
        "mixup_alpha": cfg.mixup_alpha,
        "cutmix_alpha": cfg.cutmix_alpha,
        "label_smoothing": cfg.label_smoothing,
        "distill.alpha": cfg.distill.alpha,
        "augment.erase_prob": cfg.augment.erase_prob,
    }
    on = [f"config.{k}={v}" for k, v in unsupported.items() if v]
    if on:
        raise ConfigError(
            f"segmentation training does not support {', '.join(on)}: set "
            f"{'them' if len(on) > 1 else 'it'} to 0 (the crop, flip, colour jitter and noise "
            "augmentations do apply)"
        )


def _check_output_size(model: Any, cfg: Any, info: data_lib.DatasetInfo) -> None:
    """A segmentation model must map ``image_size`` to logits of the same size (traced with
    ``eval_shape``: nothing is compiled)."""
    shape = (1, cfg.image_size, cfg.image_size, info.in_chans)
    try:
        out = jax.eval_shape(
            lambda x: model.init_with_output(jax.random.key(0), x)[0],
            jax.ShapeDtypeStruct(shape, jnp.float32),
        )
    except ValueError as e:
        raise ConfigError(f"config.image_size={cfg.image_size}: {e}") from None
    got = tuple(split_outputs(out)[0].shape[1:3])
    if got != shape[1:3]:
        raise ConfigError(
            f"config.model={cfg.model!r} maps {shape[1]}x{shape[2]} images to {got[0]}x{got[1]} "
            "logits; the trainer needs per-pixel logits at the input size (a padded model, "
            "e.g. unet_padded)"
        )


def _initial_variables(s: Setup) -> Mapping[str, Any] | None:
    """Converted torch weights for fine-tuning, with a fresh head where the shapes differ."""
    init = s.cfg.init_from
    if not init.weights:
        return None
    from flaxcnn.convert import from_torch

    _, converted = from_torch(init.source_name or s.cfg.model, init.weights, source=init.source)
    shape = (1, s.cfg.image_size, s.cfg.image_size, s.info.in_chans)
    fresh = s.model.init(jax.random.key(s.cfg.seed), jnp.zeros(shape))

    def pick(new, old):
        return old if getattr(old, "shape", None) == new.shape else new

    flat_old = traverse_util.flatten_dict(converted)
    merged = {k: pick(v, flat_old.get(k)) for k, v in traverse_util.flatten_dict(fresh).items()}
    return traverse_util.unflatten_dict(merged)


def _teacher(s: Setup):
    d = s.cfg.distill
    if not d.alpha:
        return None
    if not d.teacher or not d.checkpoint:
        raise ConfigError(
            "config.distill.alpha > 0 needs distill.teacher (a model name) and distill.checkpoint"
        )
    t_model = flaxcnn.create_model(
        d.teacher, num_classes=s.num_classes, in_chans=s.info.in_chans, **dict(d.teacher_kwargs)
    )
    like = _fresh_state(s, t_model, jax.random.key(0), tx=_null_tx())
    # Only the teacher's weights (its EMA weights if it kept an EMA: what it evaluated) and BN
    # statistics: its optimizer state and loss scale are not needed and need not match.
    return t_model, Checkpointer(d.checkpoint, async_save=False).restore_variables(
        {"params": like.params, "batch_stats": like.batch_stats}
    )


def _null_tx():
    import optax

    return optax.identity()


def _fresh_state(s: Setup, model=None, rng=None, tx=None, variables=None) -> TrainState:
    shape = (1, s.cfg.image_size, s.cfg.image_size, s.info.in_chans)
    own = model is None  # the model being trained, not a teacher
    fp16 = own and s.cfg.precision == "float16"
    return create_train_state(
        model or s.model,
        tx or s.tx,
        rng if rng is not None else jax.random.key(s.cfg.seed),
        shape,
        s.mesh,
        ema=s.cfg.ema_decay > 0 and own,
        loss_scale=float(s.cfg.loss_scale.initial) if fp16 else None,
        variables=variables,
    )


_COMPILED: dict[Any, tuple[Callable, Callable]] = {}


def _steps(s: Setup) -> tuple[Callable, Callable]:
    """The jitted train and eval steps; reused (not recompiled) by a later run in the same
    process with the same model, optimizer, step settings and devices (e.g. a resume)."""
    teacher = _teacher(s)
    ema = s.cfg.ema_decay > 0
    key = (
        s.model,
        s.step_cfg,
        tuple(d.id for d in s.mesh.devices.flat),
        json.dumps(s.cfg.optim.to_dict(), sort_keys=True, default=str),
        s.total_steps,
        ema,
    )
    try:
        hash(key)
    except TypeError:
        key = None
    if teacher is None and key in _COMPILED:
        return _COMPILED[key]
    fns = (
        make_train_step(s.model, s.tx, s.step_cfg, s.mesh, teacher=teacher),
        make_eval_step(s.model, s.step_cfg, s.mesh, use_ema=ema),
    )
    if teacher is None and key is not None:
        _COMPILED[key] = fns
    return fns


def evaluate(s: Setup, state: TrainState, eval_step: Callable | None = None) -> dict[str, float]:
    """Metrics over the whole eval split (all processes): the mean loss and top-1/top-5, or
    for segmentation the mean per-pixel loss, mean IoU and pixel accuracy, read from the
    confusion matrix summed over every batch (each step already sums over all devices and
    processes). Batch results are summed on the host in 64 bits, so counts stay exact."""
    eval_step = eval_step or _steps(s)[1]
    outs = [
        eval_step(state, shard_batch(batch, s.mesh))
        for batch in data_lib.eval_batches(
            s.eval_source,
            s.info,
            size=s.cfg.image_size,
            global_batch_size=s.cfg.eval_batch_size or s.cfg.batch_size,
            crop_pct=s.cfg.crop_pct,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    ]
    t: dict[str, np.ndarray] = {}
    for out in outs:
        for k, v in to_host(out).items():
            wide = np.int64 if np.issubdtype(v.dtype, np.integer) else np.float64
            t[k] = t.get(k, 0) + v.astype(wide)
    n = float(t["count"])
    res = {"eval_loss": float(t["loss_sum"]) / n}
    if s.info.task == "segmentation":
        confusion = t["confusion"].astype(np.float64)
        res["miou"] = float(mean_iou(confusion)[0])
        res["pixel_accuracy"] = float(pixel_accuracy(confusion))
    else:
        res["top1"] = float(t["top1"]) / n
        res["top5"] = float(t["top5"]) / n
    return res


def _best_metric(task: str) -> str:
    """The eval metric that picks the best checkpoint."""
    return "miou" if task == "segmentation" else "top1"


def _headline(res: dict[str, float]) -> str:
    if "miou" in res:
        return f"test mIoU {res['miou']:.2%} pixel accuracy {res['pixel_accuracy']:.2%}"
    return f"test top-1 {res['top1']:.2%} top-5 {res['top5']:.2%}"


def plot_curves(metrics_path: str, out_path: str) -> None:
    """Loss and accuracy curves (train per log interval, eval per epoch) as a PNG; for
    segmentation the test curves are mean IoU and pixel accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f]
    tr = [r for r in rows if "train_loss" in r]
    ev = [r for r in rows if "eval_loss" in r]
    names = {"top1": "test top-1", "miou": "test mIoU", "pixel_accuracy": "test pixel accuracy"}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot([r["step"] for r in tr], [r["train_loss"] for r in tr], label="train")
    a1.plot([r["step"] for r in ev], [r["eval_loss"] for r in ev], "o-", label="test")
    a1.set(xlabel="step", ylabel="loss", title="loss")
    a2.plot([r["step"] for r in tr], [r["train_accuracy"] for r in tr], label="train")
    for key, label in names.items():
        if ev and key in ev[0]:
            a2.plot([r["step"] for r in ev], [r[key] for r in ev], "o-", label=label)
    a2.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def _tensorboard_writer(workdir: str, *, resume: bool, start: int):
    """A ``tensorboardX`` writer into ``workdir`` when ``config.tensorboard`` is set.

    A fresh run removes earlier event files (as it does ``metrics.jsonl``); a resumed run
    writes with ``purge_step=start`` so TensorBoard drops what the earlier run logged after
    the checkpoint it resumes from."""
    from tensorboardX import SummaryWriter

    if not resume:
        for name in os.listdir(workdir):
            if name.startswith("events.out.tfevents."):
                os.remove(os.path.join(workdir, name))
    return SummaryWriter(workdir, purge_step=start if resume else None)


def train(
    cfg: Any, *, resume: bool = False, devices: list | None = None, stop_at: int | None = None
) -> dict[str, Any]:
    """Run the job described by ``cfg``; returns the final summary (and the state under
    ``'state'``). ``stop_at`` ends early after that step (as if killed there; tests use it)."""
    s = setup(cfg, devices=devices)
    lead = jax.process_index() == 0
    workdir = os.path.abspath(cfg.workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    os.makedirs(workdir, exist_ok=True)
    best = _best_metric(s.info.task)
    ckpt = Checkpointer(ckpt_dir, keep=cfg.keep_checkpoints, best_metric=best)
    if resume and ckpt.latest_step() is None:
        raise CheckpointError(
            f"--resume: no checkpoint in {ckpt_dir}; drop --resume to start afresh"
        )
    if not resume and ckpt.latest_step() is not None:
        raise ConfigError(
            f"{ckpt_dir} already holds checkpoints (step {ckpt.latest_step()}): pass --resume to "
            "continue that run, or choose another --config.workdir"
        )
    state = _fresh_state(s, variables=_initial_variables(s))
    loader = data_lib.train_loader(
        s.train_source,
        s.info,
        size=cfg.image_size,
        global_batch_size=cfg.batch_size,
        seed=cfg.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    it = iter(loader)
    if resume:
        state = ckpt.restore(state, it)
    elif lead and os.path.exists(metrics_path):
        os.remove(metrics_path)
    start = int(to_host(state.step))
    train_step, eval_step = _steps(s)
    rng = jax.random.key(cfg.seed + 1)
    every = cfg.checkpoint_every_steps or s.steps_per_epoch
    end = s.total_steps if stop_at is None else min(stop_at, s.total_steps)

    if lead:
        print(
            f"training {cfg.model} on {cfg.dataset}: {s.total_steps} steps of "
            f"{cfg.batch_size} images "
            f"on {len(s.mesh.devices.flat)} devices ({jax.process_count()} process(es)); "
            f"checkpoints -> {ckpt_dir}, metrics -> {metrics_path}",
            flush=True,
        )
    bar = None
    if lead and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=s.total_steps, initial=start, unit="step", dynamic_ncols=True)
    tb = None
    if lead and cfg.tensorboard:
        tb = _tensorboard_writer(workdir, resume=resume, start=start)
    nonfinite_run, overflows = 0, 0
    acc_loss, acc_acc, n_acc, t0, n_img = 0.0, 0.0, 0, time.perf_counter(), 0
    last_eval: dict[str, float] = {}

    def record(step: int, m: dict[str, jax.Array]) -> None:
        """Take one step's metrics into the interval's means and the progress bar."""
        nonlocal nonfinite_run, overflows, acc_loss, acc_acc, n_acc, loss_scale
        m = to_host(m)
        # A skipped step (non-finite, or a float16 loss-scale overflow) still advances the
        # step counter, the data and the progress bar, and may be a checkpoint step: only
        # its loss and accuracy stay out of the interval's means.
        if int(m["nonfinite"]):
            nonfinite_run += 1
            if nonfinite_run >= cfg.max_nonfinite:
                raise NonFiniteError(
                    f"{nonfinite_run} consecutive steps had a non-finite loss or gradient "
                    f"(last: step {step}); the updates were skipped. Lower "
                    "config.optim.learning_rate, set config.optim.grad_clip_norm, or use "
                    "precision=float32."
                )
        elif int(m.get("overflow", 0)):
            # Expected under dynamic loss scaling: the step halved the scale. It neither
            # counts towards nor resets the run of non-finite steps.
            overflows += 1
        else:
            nonfinite_run = 0
            acc_loss += float(m["loss"])
            acc_acc += float(m["accuracy"])
            n_acc += 1
        if bar is not None:
            ips = n_img / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(
                loss=f"{float(m['loss']):.3f}",
                acc=f"{float(m['accuracy']):.3f}",
                img_s=f"{ips:.0f}",
            )
            bar.update(1)
        if "loss_scale" in m:
            loss_scale = float(m["loss_scale"])

    # Each step's metrics are read on the host only after the next step has been dispatched
    # (JAX dispatches asynchronously): reading them waits for that step to finish, and the
    # device would sit idle while the host fetched, sharded and dispatched the next batch.
    # At a checkpoint, evaluation or preemption step nothing is dispatched ahead, so the
    # saved state and data position are those of that step.
    pending: tuple[int, dict[str, jax.Array]] | None = None
    loss_scale: float | None = None
    try:
        for step in range(start, end):
            batch = next(it)
            state, m = train_step(
                state, shard_batch({"image": batch["image"], "label": batch["label"]}, s.mesh), rng
            )
            done = step + 1
            n_img += cfg.batch_size
            if pending is not None:
                record(*pending)
            pending = (step, m)
            boundary = done % every == 0 or done == s.total_steps
            preempted = not boundary and ckpt.reached_preemption(done)
            if boundary or preempted:
                record(*pending)
                pending = None
            if boundary:
                row: dict[str, float] = {"step": done, "epoch": done / s.steps_per_epoch}
                if n_acc:  # no means over an interval of skipped steps only
                    row["train_loss"] = acc_loss / n_acc
                    row["train_accuracy"] = acc_acc / n_acc
                row["img_per_s"] = n_img / max(time.perf_counter() - t0, 1e-9)
                if loss_scale is not None:
                    row["loss_scale"] = loss_scale
                    row["overflow_steps"] = overflows
                last_eval = evaluate(s, state, eval_step)
                row.update(last_eval)
                if lead:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(row) + "\n")
                if tb is not None:
                    for k, v in row.items():
                        if k != "step":
                            tb.add_scalar(k, v, done)
                    tb.flush()
                ckpt.save(state, it, metrics={best: last_eval[best]})
                acc_loss, acc_acc, n_acc, overflows = 0.0, 0.0, 0, 0
            elif preempted:
                ckpt.save(state, it, force=True)
                break
        if pending is not None:  # stop_at between checkpoints
            record(*pending)
    finally:
        if tb is not None:
            tb.close()
        # Also when the run fails (non-finite, interrupted): a checkpoint still being
        # written in the background is finished, not lost.
        ckpt.wait()
        ckpt.close()
    if bar is not None:
        bar.close()
    summary: dict[str, Any] = {
        "step": int(to_host(state.step)),
        "workdir": workdir,
        "checkpoints": ckpt_dir,
    }
    if end == s.total_steps:
        if not last_eval:
            last_eval = evaluate(s, state, eval_step)
        summary.update(last_eval)
        plot = os.path.join(workdir, "curves.png")
        if lead:
            plot_curves(metrics_path, plot)
            summary["plot"] = plot
            print(
                f"done: {cfg.model} on {cfg.dataset} {_headline(last_eval)} after "
                f"{summary['step']} steps; "
                f"checkpoints {ckpt_dir}, metrics {metrics_path}, plot {plot}",
                flush=True,
            )
    summary["state"] = state
    return summary


def evaluate_checkpoint(
    cfg: Any, checkpoint_dir: str | None = None, *, step: int | None = None
) -> dict[str, float]:
    """Top-1/top-5 (segmentation: mean IoU, pixel accuracy) of a trained checkpoint, or of
    converted torch weights (``cfg.init_from``)."""
    s = setup(cfg)
    if checkpoint_dir:
        # The weights only (the EMA weights where the run kept an EMA, as it evaluated them):
        # the optimizer, precision and loss scale of the evaluating config need not match.
        like = _fresh_state(s)
        variables = Checkpointer(checkpoint_dir, async_save=False).restore_variables(
            {"params": like.params, "batch_stats": like.batch_stats}, step=step
        )
        state = _fresh_state(s, variables=variables)
    elif cfg.init_from.weights:
        state = _fresh_state(s, variables=_initial_variables(s))
    else:
        raise ConfigError("evaluate needs --checkpoint DIR or --config.init_from.weights=FILE")
    return evaluate(s, state)
