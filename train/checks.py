"""Start-up checks, run before anything is built or written: the ``[train]`` extra's
dependencies are importable, and every field of a config has a type and range that can work.

A bad setting is one line naming the field, the value and what is allowed
(``config.batch_size=0: must be an integer >= 1``), raised as :class:`ConfigError` before
the workdir exists; without this, a zero batch divided by zero, a negative one reached the
data pipeline, a zero-length run failed after creating its workdir, and a negative learning
rate trained silently. Checks that need the model or the dataset (the registry name, the
input size the model accepts, divisibility by the device count) are in
:func:`flaxcnn.train.loop.setup`. This module imports nothing beyond the standard library,
so the command line runs it before JAX starts.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "ConfigError",
    "MissingDependencyError",
    "TRAIN_DEPENDENCIES",
    "check_dependencies",
    "parse_randaugment",
    "validate_config",
]

INSTALL = "pip install 'flaxcnn[train]'"

# Import name -> distribution, for the `[train]` extra of pyproject.toml (tensorboardX is
# optional: checked only when config.tensorboard is set).
TRAIN_DEPENDENCIES = {
    "optax": "optax",
    "orbax.checkpoint": "orbax-checkpoint",
    "grain": "grain",
    "tensorflow_datasets": "tensorflow-datasets",
    "importlib_resources": "importlib_resources",
    "ml_collections": "ml_collections",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
}


class ConfigError(ValueError):
    """A setting that cannot work, found at start-up; the message says what to change."""


class MissingDependencyError(ImportError):
    """A package of the ``[train]`` extra is not installed."""


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package; a module without a spec
        return False


def check_dependencies() -> None:
    """Raise :class:`MissingDependencyError` naming every missing package of the extra and
    the command that installs them. Nothing is imported (``find_spec`` only), so this is
    cheap enough to run first, before a config file imports ``ml_collections`` or a
    finished run imports ``matplotlib`` for its plot."""
    missing = [dist for mod, dist in TRAIN_DEPENDENCIES.items() if not _importable(mod)]
    if missing:
        raise MissingDependencyError(
            f"flaxcnn.train needs {', '.join(missing)} (the [train] extra): {INSTALL}"
        )


# --- Config fields -------------------------------------------------------------------------

# A check takes the value and returns None if it is allowed, else what is allowed.
Check = Callable[[Any], "str | None"]


def _integer(lo: int, hi: int | None = None) -> Check:
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"

    def check(v):
        ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
        return None if ok and v >= lo and (hi is None or v <= hi) else allowed

    return check


def _real(lo: float, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False):
    """A finite number in the interval; ``hi=inf`` reads as ``>= lo`` / ``> lo``."""
    if hi == math.inf:
        allowed = f"a finite number {'>' if lo_open else '>='} {lo:g}"
    else:
        allowed = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def check(v):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            return allowed
        above = v > lo if lo_open else v >= lo
        below = v < hi if hi_open else v <= hi
        return None if above and below else allowed

    return check


def _choice(*names: str) -> Check:
    return lambda v: None if v in names else f"one of {', '.join(map(repr, names))}"


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "True or False"


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) else "a string"


def _nonempty_text(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


def _mapping(v: Any) -> str | None:
    ok = isinstance(v, Mapping) or callable(getattr(v, "items", None))  # or a ConfigDict
    return None if ok else "a mapping of keyword arguments"


def _fractions(v: Any) -> str | None:
    allowed = "an increasing sequence of numbers in (0, 1)"
    if not isinstance(v, Sequence) or isinstance(v, str):
        return allowed
    ok = all(_real(0, 1, lo_open=True, hi_open=True)(f) is None for f in v)
    return None if ok and list(v) == sorted(set(v)) else allowed


# --- RandAugment's setting -----------------------------------------------------------------

RANDAUGMENT_FORMS = (
    "'' (off), timm's 'rand-m<M>-n<N>' (M in 0..10, N >= 0) or (num_ops, magnitude) "
    "(torchvision's bins, magnitude in 0..30)"
)
# timm's sections (timm.data.auto_augment.rand_augment_transform) this RandAugment, which is
# torchvision's, has no counterpart for.
_TIMM_UNSUPPORTED = {
    "mstd": "magnitude noise per op",
    "mmax": "a magnitude bound other than 10",
    "inc": "its increasing-severity op set",
    "p": "applying each op with a probability; every drawn op is applied, as torchvision",
}


def _randaugment_spec(value: Any) -> tuple[tuple[int, int] | None, str | None]:
    """``((num_ops, magnitude bin), None)``, ``(None, None)`` for off, or ``(None, why)``."""
    if value is None or (isinstance(value, (str, numbers.Number)) and not value):
        return None, None  # '', None, False, 0: off
    if isinstance(value, str):
        parts = value.split("-")
        if parts[0] != "rand":
            return None, "a timm string starts with 'rand'"
        # timm's defaults: magnitude 10 of 10, two ops.
        found = {"m": 10, "n": 2}
        seen = set()
        for part in parts[1:]:
            if part.startswith("t"):
                return None, f"timm's transform sets ({part!r}) are not supported"
            key, val = re.fullmatch(r"([a-z]*)(.*)", part).groups()
            if key in _TIMM_UNSUPPORTED:
                return None, f"timm's {key!r} ({_TIMM_UNSUPPORTED[key]}) is not supported"
            if key not in found:
                return None, f"unknown section {part!r}"
            if key in seen:
                return None, f"{key!r} is given twice"
            if not re.fullmatch(r"[0-9]+", val):
                return None, f"{key!r} takes a non-negative integer, not {val!r}"
            seen.add(key)
            found[key] = int(val)
        if found["m"] > 10:
            return None, f"m{found['m']} is above timm's maximum magnitude, 10"
        # timm's magnitude m is m/10 of each op's range: bin 3m of torchvision's 31 (m9:
        # rotations up to 27 degrees, as timm; torchvision's magnitude=9 is 9 degrees).
        return (found["n"], 3 * found["m"]), None
    if isinstance(value, Sequence) and len(value) == 2:
        ints = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
        if ints and value[0] >= 0 and 0 <= value[1] <= 30:
            return (int(value[0]), int(value[1])), None
        return None, "num_ops must be an integer >= 0 and magnitude an integer in [0, 30]"
    return None, "neither a string nor a pair"


def parse_randaugment(value: Any) -> tuple[int, int] | None:
    """The RandAugment setting as ``(num_ops, magnitude)`` on torchvision's 31 magnitude
    bins, or ``None`` for off ('', None, False or 0).

    timm's string ``'rand-m<M>-n<N>'`` (sections in any order; timm's defaults M=10, N=2
    when left out) reads M on timm's 0..10 scale, so it maps to bin ``3 M`` (the same
    fraction of each op's range; timm's ``rand-m9`` rotates up to 27 degrees, as bin 27
    does). The ops are torchvision's RandAugment's, not timm's: timm's op set (Invert,
    SolarizeAdd, its translate of 0.45 of the size and its posterize levels, no Identity),
    its per-op probability 0.5 (``p``), magnitude noise (``mstd``), ``mmax``, ``inc`` and
    transform sets (``t...``) are not reproduced, and a string with any of them, an unknown
    section, or M > 10 is refused. A pair ``(num_ops, magnitude)`` is torchvision's
    ``RandAugment(num_ops, magnitude)`` as it is. Raises ``ValueError`` in one line."""
    spec, problem = _randaugment_spec(value)
    if problem is not None:
        raise ValueError(f"randaugment={value!r}: must be {RANDAUGMENT_FORMS}; {problem}")
    return spec


def _randaugment(v: Any) -> str | None:
    problem = _randaugment_spec(v)[1]
    return None if problem is None else f"{RANDAUGMENT_FORMS}; {problem}"


UNIT = _real(0, 1)  # [0, 1]
NON_NEGATIVE = _real(0)

# Every field of train/configs/default.py. Fields that name things the registry or the
# dataset table know (model, dataset, distill.teacher, init_from.source) are checked
# against those in setup, with suggestions.
FIELDS: dict[str, Check] = {
    "name": _text,
    "seed": _integer(0, 2**31 - 2),  # a uint32 PRNG seed; the loop also uses seed + 1
    "model": _nonempty_text,
    "model_kwargs": _mapping,
    "precision": _choice("float32", "bfloat16", "float16"),
    "loss_scale.initial": _real(1),
    "loss_scale.period": _integer(1),
    "batch_norm": _choice("sync", "group"),
    "bn_group_devices": _integer(1),
    "dataset": _nonempty_text,
    "data_dir": _text,
    "manual_dir": _text,
    "num_classes": _integer(0),
    "image_size": _integer(1),
    "crop_pct": _real(0, 1, lo_open=True),
    "batch_size": _integer(1),
    "eval_batch_size": _integer(0),
    "augment.crop_scale_min": UNIT,
    "augment.translate": _integer(0),
    "augment.hflip": _boolean,
    "augment.randaugment": _randaugment,
    "augment.color_jitter": NON_NEGATIVE,
    "augment.noise_std": NON_NEGATIVE,
    "augment.salt_pepper": UNIT,
    "augment.erase_prob": UNIT,
    "mixup_alpha": NON_NEGATIVE,
    "cutmix_alpha": NON_NEGATIVE,
    "num_epochs": _integer(0),
    "num_steps": _integer(0),
    "optim.optimizer": _choice("sgd", "adamw"),
    "optim.learning_rate": _real(0, lo_open=True),
    "optim.momentum": _real(0, 1, hi_open=True),
    "optim.nesterov": _boolean,
    "optim.b1": _real(0, 1, hi_open=True),
    "optim.b2": _real(0, 1, hi_open=True),
    "optim.weight_decay": NON_NEGATIVE,
    "optim.schedule": _choice("constant", "step", "cosine", "plateau"),
    "optim.lr_base_batch": _integer(0),
    "optim.warmup_steps": _integer(0),
    "optim.warmup_epochs": NON_NEGATIVE,
    "optim.step_fractions": _fractions,
    "optim.plateau_factor": _real(0, 1, lo_open=True, hi_open=True),
    "optim.plateau_patience": _integer(0),
    "optim.plateau_accumulation": _integer(1),
    "optim.grad_clip_norm": NON_NEGATIVE,
    "optim.freeze_backbone": _boolean,
    "label_smoothing": _real(0, 1, hi_open=True),
    "aux_loss_weight": NON_NEGATIVE,
    "ema_decay": _real(0, 1, hi_open=True),
    "distill.teacher": _text,
    "distill.teacher_kwargs": _mapping,
    "distill.checkpoint": _text,
    "distill.alpha": UNIT,
    "distill.temperature": _real(0, lo_open=True),
    "distill.hard": _boolean,
    "init_from.weights": _text,
    "init_from.source": _nonempty_text,
    "init_from.source_name": _text,
    "workdir": _nonempty_text,
    "checkpoint_every_steps": _integer(0),
    "keep_checkpoints": _integer(1),
    "tensorboard": _boolean,
    "max_nonfinite": _integer(1),
    "progress": _boolean,
}


_MISSING = object()


def _get(cfg: Any, path: str) -> Any:
    node = cfg
    for key in path.split("."):
        if not isinstance(node, Mapping) and not hasattr(node, "keys"):
            return _MISSING
        if key not in node:
            return _MISSING
        node = node[key]
    return node


def validate_config(cfg: Any) -> None:
    """Raise :class:`ConfigError` for the first field outside its range (in the order of
    ``default.py``), or for a run of no steps. A field the config does not have is left to
    its default (the optimizer's ``momentum``, say, when a config defines its own ``optim``)."""
    for path, check in FIELDS.items():
        value = _get(cfg, path)
        if value is _MISSING:
            continue
        allowed = check(value)
        if allowed is not None:
            raise ConfigError(f"config.{path}={value!r}: must be {allowed}")
    if _get(cfg, "optim.warmup_steps") not in (0, _MISSING) and _get(
        cfg, "optim.warmup_epochs"
    ) not in (0, _MISSING):
        raise ConfigError(
            f"config.optim.warmup_steps={cfg.optim.warmup_steps} and "
            f"config.optim.warmup_epochs={cfg.optim.warmup_epochs}: set one of them, not both"
        )
    if _get(cfg, "num_steps") == 0 and _get(cfg, "num_epochs") == 0:
        raise ConfigError(
            "config.num_steps=0 and config.num_epochs=0: the run would take no step; "
            "set one of them >= 1"
        )
