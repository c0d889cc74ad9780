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
from .checks import ConfigError, check_dependencies, validate_config
from .optim import build_optimizer, resolve
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
    """Check ``cfg`` and build the model, mesh, optimizer and data sources. Every setting
    that cannot work fails here, as a :class:`ConfigError`, before anything is written."""
    check_dependencies()
    validate_config(cfg)
    devices = devices if devices is not None else jax.devices()
    info, spec = _dataset_and_spec(cfg)
    _check_task(cfg, spec, info)
    _check_batch_sizes(cfg, len(devices))
    _check_inputs(cfg)
    train_source, eval_source, num_classes = _data(cfg, info)
    model = _build_model(cfg, spec, info, num_classes)
    _check_image_size(model, cfg, info)
    steps_per_epoch = len(train_source) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"config.batch_size={cfg.batch_size} exceeds the train split ({len(train_source)})"
        )
    total = cfg.num_steps or cfg.num_epochs * steps_per_epoch
    step_cfg = _step_config(cfg, info, num_classes, _bn_groups(cfg, len(devices)))
    try:
        tx = build_optimizer(_optim_config(cfg, steps_per_epoch), total, head=_head_name(cfg.model))
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
        num_classes=num_classes,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
    )


def _dataset_and_spec(cfg: Any) -> tuple[data_lib.DatasetInfo, Any]:
    try:
        info = data_lib.get_dataset(cfg.dataset)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        spec = flaxcnn.get_model_spec(cfg.model)
    except ValueError as e:
        raise ConfigError(f"config.model: {e}") from None
    return info, spec


def _check_batch_sizes(cfg: Any, n_dev: int) -> None:
    """The global batches split evenly over the devices."""
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


def _check_inputs(cfg: Any) -> None:
    """Files and tools the run reads later (weights to fine-tune from, a teacher, the
    TensorBoard writer): found now, not after the workdir is made."""
    if cfg.init_from.weights and not os.path.exists(cfg.init_from.weights):
        raise ConfigError(f"config.init_from.weights: no file {cfg.init_from.weights!r}")
    d = cfg.distill
    if d.alpha and (not d.teacher or not d.checkpoint):
        raise ConfigError(
            "config.distill.alpha > 0 needs distill.teacher (a model name) and distill.checkpoint"
        )
    if d.alpha and not os.path.isdir(d.checkpoint):
        raise ConfigError(f"config.distill.checkpoint: no directory {d.checkpoint!r}")
    if d.alpha:
        try:
            flaxcnn.get_model_spec(d.teacher)
        except ValueError as e:
            raise ConfigError(f"config.distill.teacher: {e}") from None
    if cfg.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError(
            "config.tensorboard=True needs tensorboardX (in the [train] extra): "
            "pip install tensorboardX, or set config.tensorboard=False"
        )


def _data(cfg: Any, info: data_lib.DatasetInfo) -> tuple[Any, Any, int]:
    """The train and eval sources (prepared on first use) and the number of classes."""
    data_dir, manual_dir = cfg.data_dir or None, cfg.manual_dir or None
    try:
        train_source = data_lib.load_source(info, info.train_split, data_dir, manual_dir)
        eval_source = data_lib.load_source(info, info.eval_split, data_dir, manual_dir)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # not there, not prepared
        raise ConfigError(f"config.dataset={cfg.dataset!r}: {e}") from None
    num_classes = len(train_source.classes) if info.tfds_name is None else info.num_classes
    if cfg.num_classes and cfg.num_classes != num_classes:
        raise ConfigError(
            f"config.num_classes={cfg.num_classes} but dataset {info.name!r} has "
            f"{num_classes} classes; "
            f"set --config.num_classes={num_classes} (or 0 to take the dataset's)"
        )
    return train_source, eval_source, num_classes


def _build_model(cfg: Any, spec: Any, info: data_lib.DatasetInfo, num_classes: int) -> Any:
    try:
        return spec.build(
            num_classes=num_classes,
            in_chans=info.in_chans,
            dtype=_dtype(cfg.precision),
            **dict(cfg.model_kwargs),
        )
    except TypeError as e:
        raise ConfigError(f"config.model_kwargs: {e}") from None


def _bn_groups(cfg: Any, n_dev: int) -> int:
    """Groups of the batch with their own BatchNorm statistics (1: synchronised BN)."""
    if cfg.batch_norm == "sync":
        return 1
    if n_dev % cfg.bn_group_devices:
        raise ConfigError(
            f"config.bn_group_devices={cfg.bn_group_devices} does not divide the {n_dev} devices"
        )
    return n_dev // cfg.bn_group_devices


def _step_config(
    cfg: Any, info: data_lib.DatasetInfo, num_classes: int, bn_groups: int
) -> StepConfig:
    return StepConfig(
        num_classes=num_classes,
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
        "augment.translate": cfg.augment.get("translate", 0),
        "augment.randaugment": cfg.augment.get("randaugment", ""),
    }
    on = [f"config.{k}={v!r}" for k, v in unsupported.items() if v]
    if on:
        raise ConfigError(
            f"segmentation training does not support {', '.join(on)}: switch "
            f"{'them' if len(on) > 1 else 'it'} off (the crop, flip, colour jitter and "
            "noise augmentations do apply)"
        )


def _check_image_size(model: Any, cfg: Any, info: data_lib.DatasetInfo) -> None:
    """The model must take ``image_size`` inputs, and a segmentation model must map them to
    logits of the same size (traced with ``eval_shape``: nothing is compiled)."""
    n = cfg.image_size
    shape = (1, n, n, info.in_chans)
    try:
        out = jax.eval_shape(
            lambda x: model.init_with_output(jax.random.key(0), x)[0],
            jax.ShapeDtypeStruct(shape, jnp.float32),
        )
    except ValueError as e:  # the model's own message (e.g. the nearest valid sizes)
        raise ConfigError(f"config.image_size={n}: {e}") from None
    except (TypeError, ArithmeticError, IndexError) as e:  # a shape that broke a layer
        raise ConfigError(
            f"config.image_size={n}: {cfg.model} cannot take {n}x{n} inputs "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "use a larger image_size"
        ) from None
    if info.task != "segmentation":
        return
    got = tuple(split_outputs(out)[0].shape[1:3])
    if got != shape[1:3]:
        raise ConfigError(
            f"config.model={cfg.model!r} maps {n}x{n} images to {got[0]}x{got[1]} "
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
    t_model = flaxcnn.create_model(
        d.teacher, num_classes=s.num_classes, in_chans=s.info.in_chans, **dict(d.teacher_kwargs)
    )
    like = _fresh_state(s, t_model, jax.random.key(0), tx=_null_tx())
    # Only the teacher's weights (its EMA weights if it kept an EMA: what it evaluated) and BN
    # statistics: its optimizer state and loss scale are not needed and need not match.
    return t_model, Checkpointer(d.checkpoint, async_save=False).restore_variables(
        {"params": like.params, "batch_stats": like.batch_stats}
    )


def _optim_config(cfg: Any, steps_per_epoch: int) -> Any:
    """``cfg.optim`` with the learning rate and warm-up made absolute for this run."""
    return resolve(cfg.optim, batch_size=cfg.batch_size, steps_per_epoch=steps_per_epoch)


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
        # The optimizer as built: its learning rate and warm-up depend on the batch size
        # and the epoch length too (lr_base_batch, warmup_epochs).
        json.dumps(_optim_config(s.cfg, s.steps_per_epoch).to_dict(), sort_keys=True, default=str),
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


@dataclasses.dataclass
class _Meter:
    """The host-side tally of the train steps' metrics: the current logging interval's
    sums of loss and accuracy over its counted steps, its float16 loss-scale overflows, the
    run of consecutive non-finite steps (across intervals), the last loss scale, and the
    images seen since the start (for the throughput)."""

    max_nonfinite: int
    nonfinite_run: int = 0
    overflows: int = 0
    loss_sum: float = 0.0
    accuracy_sum: float = 0.0
    count: int = 0
    loss_scale: float | None = None
    images: int = 0
    t0: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, step: int, m: Mapping[str, np.ndarray]) -> None:
        """Take one step's metrics (on the host). A skipped step (non-finite, or a float16
        loss-scale overflow) still advances the step counter, the data and the progress bar,
        and may be a checkpoint step: only its loss and accuracy stay out of the means."""
        if int(m["nonfinite"]):
            self.nonfinite_run += 1
            if self.nonfinite_run >= self.max_nonfinite:
                raise NonFiniteError(
                    f"{self.nonfinite_run} consecutive steps had a non-finite loss or gradient "
                    f"(last: step {step}); the updates were skipped. Lower "
                    "config.optim.learning_rate, set config.optim.grad_clip_norm, or use "
                    "precision=float32."
                )
        elif int(m.get("overflow", 0)):
            # Expected under dynamic loss scaling: the step halved the scale. It neither
            # counts towards nor resets the run of non-finite steps.
            self.overflows += 1
        else:
            self.nonfinite_run = 0
            self.loss_sum += float(m["loss"])
            self.accuracy_sum += float(m["accuracy"])
            self.count += 1
        if "loss_scale" in m:
            self.loss_scale = float(m["loss_scale"])

    def images_per_s(self) -> float:
        return self.images / max(time.perf_counter() - self.t0, 1e-9)

    def interval(self) -> dict[str, float]:
        """The interval's row entries (no means over an interval of skipped steps only);
        starts the next interval."""
        row: dict[str, float] = {}
        if self.count:
            row["train_loss"] = self.loss_sum / self.count
            row["train_accuracy"] = self.accuracy_sum / self.count
        row["img_per_s"] = self.images_per_s()
        if self.loss_scale is not None:
            row["loss_scale"] = self.loss_scale
            row["overflow_steps"] = self.overflows
        self.loss_sum, self.accuracy_sum, self.count, self.overflows = 0.0, 0.0, 0, 0
        return row


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


class _RunLog:
    """Where a run reports, on the lead process only: ``metrics.jsonl`` (one row per
    evaluation; a fresh run starts it anew), TensorBoard events (``config.tensorboard``),
    the progress bar (``config.progress``) and the start and end lines."""

    def __init__(self, s: Setup, workdir: str, *, resume: bool, start: int):
        cfg = s.cfg
        self.lead = jax.process_index() == 0
        self.metrics_path = os.path.join(workdir, "metrics.jsonl")
        self.bar = self.tb = None
        if not self.lead:
            return
        if not resume and os.path.exists(self.metrics_path):
            os.remove(self.metrics_path)
        print(
            f"training {cfg.model} on {cfg.dataset}: {s.total_steps} steps of "
            f"{cfg.batch_size} images "
            f"on {len(s.mesh.devices.flat)} devices ({jax.process_count()} process(es)); "
            f"checkpoints -> {os.path.join(workdir, 'checkpoints')}, "
            f"metrics -> {self.metrics_path}",
            flush=True,
        )
        if cfg.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=s.total_steps, initial=start, unit="step", dynamic_ncols=True)
        if cfg.tensorboard:
            self.tb = _tensorboard_writer(workdir, resume=resume, start=start)

    def step(self, m: Mapping[str, np.ndarray], meter: _Meter) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{float(m['loss']):.3f}",
                acc=f"{float(m['accuracy']):.3f}",
                img_s=f"{meter.images_per_s():.0f}",
            )
            self.bar.update(1)

    def row(self, row: dict[str, float]) -> None:
        if not self.lead:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, row["step"])
            self.tb.flush()

    def close_events(self) -> None:
        if self.tb is not None:
            self.tb.close()

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _open_checkpoints(s: Setup, ckpt_dir: str, *, resume: bool) -> Checkpointer:
    """The run's checkpointer (it creates ``ckpt_dir`` and the workdir above it), once
    ``--resume`` agrees with what ``ckpt_dir`` holds: a resume needs a checkpoint, a fresh
    start must not overwrite one. A resume into a missing directory creates nothing."""
    if resume and not os.path.isdir(ckpt_dir):
        raise CheckpointError(
            f"--resume: no checkpoint in {ckpt_dir}; drop --resume to start afresh"
        )
    ckpt = Checkpointer(
        ckpt_dir, keep=s.cfg.keep_checkpoints, best_metric=_best_metric(s.info.task)
    )
    latest = ckpt.latest_step()
    if resume and latest is None:
        ckpt.close()
        raise CheckpointError(
            f"--resume: no checkpoint in {ckpt_dir}; drop --resume to start afresh"
        )
    if not resume and latest is not None:
        ckpt.close()
        raise ConfigError(
            f"{ckpt_dir} already holds checkpoints (step {latest}): pass --resume to "
            "continue that run, or choose another --config.workdir"
        )
    return ckpt


def _initial_state(s: Setup, ckpt: Checkpointer | None) -> tuple[TrainState, Any]:
    """The state and the train-data iterator to start from: fresh (or fine-tuned from
    converted weights), or with ``ckpt`` those of its latest checkpoint."""
    state = _fresh_state(s, variables=_initial_variables(s))
    it = iter(
        data_lib.train_loader(
            s.train_source,
            s.info,
            size=s.cfg.image_size,
            global_batch_size=s.cfg.batch_size,
            seed=s.cfg.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    )
    if ckpt is not None:
        state = ckpt.restore(state, it)
    return state, it


def train(
    cfg: Any, *, resume: bool = False, devices: list | None = None, stop_at: int | None = None
) -> dict[str, Any]:
    """Run the job described by ``cfg``; returns the final summary (and the state under
    ``'state'``). ``stop_at`` ends early after that step (as if killed there; tests use it)."""
    s = setup(cfg, devices=devices)
    workdir = os.path.abspath(cfg.workdir)
    ckpt = _open_checkpoints(s, os.path.join(workdir, "checkpoints"), resume=resume)
    os.makedirs(workdir, exist_ok=True)
    try:
        state, it = _initial_state(s, ckpt if resume else None)
        train_step, eval_step = _steps(s)  # a distillation teacher is restored here
    except BaseException:
        ckpt.close()
        raise
    start = int(to_host(state.step))
    log = _RunLog(s, workdir, resume=resume, start=start)
    rng = jax.random.key(cfg.seed + 1)
    every = cfg.checkpoint_every_steps or s.steps_per_epoch
    end = s.total_steps if stop_at is None else min(stop_at, s.total_steps)
    best = _best_metric(s.info.task)
    meter = _Meter(cfg.max_nonfinite)
    last_eval: dict[str, float] = {}

    def record(step: int, m: dict[str, jax.Array]) -> None:
        m = to_host(m)
        meter.add(step, m)
        log.step(m, meter)

    # Each step's metrics are read on the host only after the next step has been dispatched
    # (JAX dispatches asynchronously): reading them waits for that step to finish, and the
    # device would sit idle while the host fetched, sharded and dispatched the next batch.
    # At a checkpoint, evaluation or preemption step nothing is dispatched ahead, so the
    # saved state and data position are those of that step.
    pending: tuple[int, dict[str, jax.Array]] | None = None
    try:
        for step in range(start, end):
            batch = next(it)
            state, m = train_step(
                state, shard_batch({"image": batch["image"], "label": batch["label"]}, s.mesh), rng
            )
            done = step + 1
            meter.images += cfg.batch_size
            if pending is not None:
                record(*pending)
            pending = (step, m)
            boundary = done % every == 0 or done == s.total_steps
            preempted = not boundary and ckpt.reached_preemption(done)
            if boundary or preempted:
                record(*pending)
                pending = None
            if boundary:
                last_eval = evaluate(s, state, eval_step)
                row = {"step": done, "epoch": done / s.steps_per_epoch, **meter.interval()}
                log.row({**row, **last_eval})
                ckpt.save(state, it, metrics={best: last_eval[best]})
            elif preempted:
                ckpt.save(state, it, force=True)
                break
        if pending is not None:  # stop_at between checkpoints
            record(*pending)
    finally:
        log.close_events()
        # Also when the run fails (non-finite, interrupted): a checkpoint still being
        # written in the background is finished, not lost.
        ckpt.wait()
        ckpt.close()
    log.close_bar()
    return _summary(s, state, eval_step, log, last_eval, workdir, finished=end == s.total_steps)


def _summary(
    s: Setup,
    state: TrainState,
    eval_step: Callable,
    log: _RunLog,
    last_eval: dict[str, float],
    workdir: str,
    *,
    finished: bool,
) -> dict[str, Any]:
    """The run's summary; a finished run adds its final eval metrics and plots its curves."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    summary: dict[str, Any] = {
        "step": int(to_host(state.step)),
        "workdir": workdir,
        "checkpoints": ckpt_dir,
    }
    if finished:
        last_eval = last_eval or evaluate(s, state, eval_step)
        summary.update(last_eval)
        plot = os.path.join(workdir, "curves.png")
        if log.lead:
            plot_curves(log.metrics_path, plot)
            summary["plot"] = plot
            print(
                f"done: {s.cfg.model} on {s.cfg.dataset} {_headline(last_eval)} after "
                f"{summary['step']} steps; "
                f"checkpoints {ckpt_dir}, metrics {log.metrics_path}, plot {plot}",
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
