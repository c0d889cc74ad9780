"""Pretrained weights: tags, download through the source library, convert once, cache.

``create_model("resnet50", pretrained=True)`` returns ``(module, variables)``. Weights
come from torchvision's weights enums or timm's pretrained tags (listed, with their
preprocessing and metadata, in ``_data/pretrained_cfgs.json``, generated from the
installed libraries by :mod:`flaxcnn.convert.pretrained_meta`). The first use downloads
through that library's own mechanism (torch hub / Hugging Face hub), converts with
:mod:`flaxcnn.convert`, and caches the Flax variables as safetensors plus a JSON config
under ``$FLAXCNN_CACHE`` (default ``~/.cache/flaxcnn``); later uses need neither torch
nor the network. Offline with nothing cached is an error naming the file to fetch and
where to put it, never a silent random init.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from ._registry import _unknown, get_model_spec

__all__ = [
    "PretrainedCfg",
    "PretrainedUnavailable",
    "adapt_input_conv",
    "cache_dir",
    "get_pretrained_cfg",
    "list_pretrained",
    "load_converted",
    "load_pretrained",
    "save_converted",
]

log = logging.getLogger("flaxcnn")
_DATA = Path(__file__).parent / "_data"


class PretrainedUnavailable(RuntimeError):
    """The weights are neither cached nor downloadable (offline, or the source failed)."""


@dataclasses.dataclass(frozen=True)
class PretrainedCfg:
    """One weight tag: where it comes from and how its inputs must be preprocessed.

    ``resize_size`` is the shorter side the eval transform resizes to before the
    centre crop to ``input_size``; ``crop_pct = crop / resize``.
    """

    name: str
    tag: str
    source: str
    source_name: str
    source_tag: str
    default: bool
    url: str | None
    hf_hub_id: str | None
    num_classes: int
    input_size: tuple[int, int, int]
    resize_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    top1: float | None
    top5: float | None
    license: str | None
    recipe: str | None

    @property
    def full_name(self) -> str:
        return f"{self.name}.{self.tag}"

    @property
    def labels(self) -> list[str] | None:
        """Class names (the ImageNet-1k labels for 1000-class weights)."""
        return imagenet_labels() if self.num_classes == 1000 else None


@functools.cache
def _table() -> dict[str, list[PretrainedCfg]]:
    raw = json.loads((_DATA / "pretrained_cfgs.json").read_text())
    table: dict[str, list[PretrainedCfg]] = {}
    for name, entries in raw.items():
        cfgs = [
            PretrainedCfg(
                name=name,
                **{
                    **e,
                    "input_size": tuple(e["input_size"]),
                    "mean": tuple(e["mean"]),
                    "std": tuple(e["std"]),
                },
            )
            for e in entries
        ]
        # torchvision's DEFAULT first: pretrained=True means what torchvision users get.
        cfgs.sort(key=lambda c: (not c.default, c.source != "torchvision"))
        table[name] = cfgs
    return table


@functools.cache
def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in torchvision's order."""
    return (_DATA / "imagenet1k_labels.txt").read_text().splitlines()


def list_pretrained(pattern: str = "*") -> list[str]:
    """``['resnet50.IMAGENET1K_V1', 'resnet50.a1_in1k', ...]`` matching an fnmatch pattern."""
    return sorted(
        c.full_name
        for cfgs in _table().values()
        for c in cfgs
        if fnmatch.fnmatchcase(c.full_name, pattern)
    )


def get_pretrained_cfg(name: str, tag: str | bool | None = True) -> PretrainedCfg:
    """The :class:`PretrainedCfg` of ``name`` (``'resnet50'`` or ``'resnet50.a1_in1k'``).

    ``tag=True`` picks the default (torchvision's ``DEFAULT`` where there is one);
    ``'DEFAULT'`` is torchvision's default explicitly.
    """
    if "." in name:
        name, tag = name.split(".", 1)
    get_model_spec(name)  # unknown model names get their own error
    cfgs = _table().get(name)
    if not cfgs:
        raise ValueError(f"no pretrained weights are known for {name!r}")
    if tag is True or tag is None:
        return cfgs[0]
    if tag == "DEFAULT":
        tv = [c for c in cfgs if c.source == "torchvision" and c.default]
        if tv:
            return tv[0]
    for c in cfgs:
        if c.tag == tag:
            return c
    raise _unknown(str(tag), [c.tag for c in cfgs], f"weight tag for {name}") from None


def cache_dir() -> Path:
    """``$FLAXCNN_CACHE``, else ``~/.cache/flaxcnn``."""
    return Path(os.environ.get("FLAXCNN_CACHE") or Path.home() / ".cache" / "flaxcnn")


def _fetch_state_dict(cfg: PretrainedCfg) -> dict[str, Any]:
    """Download (or find in the source library's own cache) the torch state dict."""
    try:
        import torch.hub
    except ImportError as e:
        raise PretrainedUnavailable(
            f"{cfg.full_name} is not cached in {cache_dir()} and converting it needs torch: "
            "pip install 'flaxcnn[convert]'"
        ) from e
    if cfg.source == "torchvision":
        fname = os.path.basename(cfg.url)
        where = Path(torch.hub.get_dir()) / "checkpoints" / fname
        try:
            return torch.hub.load_state_dict_from_url(
                cfg.url, map_location="cpu", progress=True, weights_only=True
            )
        except Exception as e:
            raise PretrainedUnavailable(
                f"could not fetch {cfg.full_name} ({type(e).__name__}: {e}). Offline? Download "
                f"{cfg.url} on a connected machine and put it at {where}, or pass "
                f"pretrained='/path/to/{fname}'."
            ) from None
    import timm

    try:
        model = timm.create_model(f"{cfg.source_name}.{cfg.source_tag}", pretrained=True)
    except Exception as e:
        hub = f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
        raise PretrainedUnavailable(
            f"could not fetch {cfg.full_name} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"Offline? Fetch model.safetensors from {hub} on a connected machine and pass "
            "pretrained='/path/to/model.safetensors', or populate the Hugging Face cache "
            "(HF_HOME) there and copy it here."
        ) from None
    return model.state_dict()


def _entry_dir(cfg: PretrainedCfg, root: Path | None) -> Path:
    return (root or cache_dir()) / cfg.full_name


def save_converted(
    entry: Path, model: str, config: dict[str, Any], variables, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``variables.safetensors`` + ``config.json`` into the folder ``entry``, atomically.

    ``config`` holds the module fields that differ from the registered variant
    (``num_classes``, ``in_chans``); :func:`load_converted` rebuilds the module from it.
    """
    from safetensors.numpy import save_file

    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        flat = {
            "/".join(k): np.asarray(v)
            for k, v in traverse_util.flatten_dict(dict(variables)).items()
        }
        save_file(flat, str(tmp / "variables.safetensors"))
        meta = {"model": model, "config": config, **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(meta, indent=1))
        if entry.exists():
            shutil.rmtree(entry)
        tmp.rename(entry)  # atomic: a half-written entry is never visible
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def load_converted(entry: str | os.PathLike):
    """``(module, variables)`` from a folder written by :func:`save_converted`
    (the cache, or ``flaxcnn convert --out``)."""
    meta, variables = _load_cached(Path(entry))
    module = get_model_spec(meta["model"]).build(**meta["config"])
    return module, jax.tree.map(jax.numpy.asarray, variables)


def _load_cached(entry: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.numpy import load_file

    from .convert.errors import CheckpointError

    try:
        meta = json.loads((entry / "config.json").read_text())
        flat = load_file(str(entry / "variables.safetensors"))
    except Exception as e:
        raise CheckpointError(
            f"the cached weights in {entry} are unreadable ({type(e).__name__}: {e}); "
            f"delete that folder to convert them again"
        ) from None
    variables = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    return meta, variables


def _convert(cfg: PretrainedCfg, weights: Any):
    from .convert import from_torch

    return from_torch(cfg.source_name, weights, source=cfg.source)


def _local_file(name: str, path: Path, overrides: dict[str, Any]):
    """Convert a local checkpoint, trying each source's naming.

    ``overrides`` shape the architecture before conversion, so a checkpoint of a
    configuration that is not registered (``stage_sizes=(1, 1, 1, 1)``) converts strictly
    against the module it came from."""
    from .convert import ConversionError, from_torch, read_state_dict

    spec = get_model_spec(name)
    sd = read_state_dict(path)
    errors = []
    for source, src_name in spec.sources.items():
        try:
            return from_torch(src_name, sd, source=source, **overrides)
        except ConversionError as e:
            errors.append(f"as {source} {src_name!r}: {e}")
    raise ConversionError(f"{path} does not fit {name}:\n" + "\n".join(errors))


def _module_path(spec, torch_name: str, flat) -> tuple[str, ...] | None:
    """The Flax module path (without leaf) a torch module name maps to."""
    from .convert.core import get_rules, leaves_by_module

    target = get_rules(spec.family).target(f"{torch_name}.weight", leaves_by_module(flat))
    return target[:-1]


def adapt_input_conv(kernel: np.ndarray, in_chans: int) -> np.ndarray:
    """Adapt an HWIO first-conv kernel trained on RGB to ``in_chans`` inputs, as timm does.

    One channel: sum over the RGB filters. More: repeat the RGB filters and scale by
    ``3 / in_chans`` so activations keep their magnitude.
    """
    kernel = np.asarray(kernel)
    i = kernel.shape[2]
    if in_chans == i:
        return kernel
    if in_chans == 1:
        if i > 3:
            if i % 3:
                raise ValueError(f"cannot adapt a first conv with {i} input channels to 1")
            return kernel.reshape(*kernel.shape[:2], i // 3, 3, kernel.shape[3]).sum(3)
        return kernel.sum(2, keepdims=True)
    if i != 3:
        raise ValueError(f"can only adapt 3-channel first convs to {in_chans} channels, got {i}")
    reps = math.ceil(in_chans / 3)
    return np.tile(kernel, (1, 1, reps, 1))[:, :, :in_chans] * (3.0 / in_chans)


def load_pretrained(
    name: str,
    pretrained: bool | str | os.PathLike = True,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    cache: str | os.PathLike | None = None,
    seed: int = 0,
    **overrides: Any,
):
    """``(module, variables)`` of ``name`` with converted pretrained weights.

    Args:
        name: registry name, optionally with a tag (``'resnet50.a1_in1k'``).
        pretrained: ``True`` (default tag), a tag (``'IMAGENET1K_V2'``, ``'DEFAULT'``,
            ``'a1_in1k'``), or a local ``.pth``/``.safetensors`` file.
        num_classes: if it differs from the weights', the classifier is re-initialised
            (LeCun normal, zero bias) and everything else loaded; logged.
        in_chans: if not 3, the first conv is adapted (:func:`adapt_input_conv`); logged.
        cache: cache root (default :func:`cache_dir`).
        overrides: other module fields (e.g. ``dtype=jnp.bfloat16``).
    """
    base = name.split(".", 1)[0]
    spec = get_model_spec(base)
    unknown = sorted(set(overrides) - set(spec.fields))
    if unknown:
        raise TypeError(
            f"{base}: unknown argument(s) {unknown}; {spec.cls.__name__} accepts: {', '.join(spec.fields)}"
        )
    if isinstance(pretrained, (str, os.PathLike)) and (
        os.path.sep in str(pretrained)
        or Path(pretrained).suffix in (".pth", ".pt", ".bin", ".safetensors")
    ):
        module, variables = _local_file(base, Path(pretrained), overrides)
        cfg = None
    else:
        cfg = get_pretrained_cfg(name, pretrained if "." not in name else None)
        entry = _entry_dir(cfg, Path(cache) if cache else None)
        if (entry / "config.json").exists():
            meta, variables = _load_cached(entry)
            module = spec.build(**meta["config"])
        else:
            module, variables = _convert(cfg, _fetch_state_dict(cfg))
            save_converted(
                entry,
                cfg.name,
                {k: getattr(module, k) for k in ("num_classes", "in_chans") if k in spec.fields},
                variables,
                {"pretrained_cfg": dataclasses.asdict(cfg)},
            )
            log.info("converted %s and cached it in %s", cfg.full_name, entry)

    flat = traverse_util.flatten_dict(dict(variables))
    changes: dict[str, Any] = dict(overrides)
    key = jax.random.key(seed)
    head = None
    if num_classes is not None and num_classes != getattr(module, "num_classes", num_classes):
        head = _module_path(spec, spec.classifier, flat) if spec.classifier else None
        changes["num_classes"] = num_classes
        flat = {k: v for k, v in flat.items() if head is None or k[: len(head)] != head}
        log.info(
            "%s: re-initialised the classifier %r for %d classes (the weights have %d)",
            name,
            spec.classifier,
            num_classes,
            module.num_classes,
        )
    if in_chans is not None and in_chans != getattr(module, "in_chans", in_chans):
        stem = _module_path(spec, spec.first_conv, flat)
        kpath = (*stem, "kernel")
        flat[kpath] = adapt_input_conv(flat[kpath], in_chans)
        changes["in_chans"] = in_chans
        log.info(
            "%s: adapted the first conv %r from %d to %d input channels",
            name,
            spec.first_conv,
            module.in_chans,
            in_chans,
        )
    if changes:
        module = module.clone(**changes)
    # Fill what the weights do not provide (a new head) from a fresh initialisation.
    h, w, c = spec.input_size
    shapes = traverse_util.flatten_dict(
        dict(
            jax.eval_shape(
                module.init,
                key,
                jax.ShapeDtypeStruct((1, h, w, getattr(module, "in_chans", c)), np.float32),
            )
        )
    )
    _check_fits(name, flat, shapes, head, overrides)
    missing = [k for k in shapes if k not in flat]
    if missing:
        flat.update(_init_leaves(shapes, missing, key))
    variables = traverse_util.unflatten_dict({k: jax.numpy.asarray(flat[k]) for k in shapes})
    return module, variables


def _check_fits(name, flat, shapes, head, overrides) -> None:
    """Raise unless the loaded weights fill the (possibly overridden) module exactly, the
    re-initialised classifier ``head`` aside: an override that changes the architecture
    (``stage_sizes``) must not silently drop or re-initialise pretrained tensors. The
    error carries a :class:`~flaxcnn.convert.ConversionReport`, like a failed conversion."""
    from .convert import ConversionError, ConversionReport

    def fresh(k):
        return head is not None and k[: len(head)] == head

    report = ConversionReport(
        missing=["/".join(k) for k in shapes if k not in flat and not fresh(k)],
        unexpected=["/".join(k) for k in flat if k not in shapes],
        mismatched=[
            f"{'/'.join(k)}: weights {tuple(np.shape(flat[k]))}, module {shapes[k].shape}"
            for k in shapes
            if k in flat and tuple(np.shape(flat[k])) != tuple(shapes[k].shape)
        ],
    )
    if report.ok:
        return
    problems = [f"missing {k}" for k in report.missing]
    problems += [f"unexpected {k}" for k in report.unexpected]
    problems += [f"mis-shaped {k}" for k in report.mismatched]
    shown = "\n  ".join(problems[:10]) + (
        f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    )
    raise ConversionError(
        f"{name}: the pretrained weights do not fit the module with overrides "
        f"{sorted(overrides)}:\n  {shown}",
        report,
    )


def _init_leaves(shapes, paths, key) -> dict:
    """Fresh values for the given variable paths: kernels LeCun normal, scales one, rest zero."""
    out = {}
    for i, p in enumerate(paths):
        shape, dtype = shapes[p].shape, shapes[p].dtype
        leaf = p[-1]
        k = jax.random.fold_in(key, i)
        if leaf == "kernel":
            out[p] = jax.nn.initializers.lecun_normal()(k, shape, dtype)
        elif leaf in ("scale", "var"):
            out[p] = jax.numpy.ones(shape, dtype)
        else:
            out[p] = jax.numpy.zeros(shape, dtype)
    return out
