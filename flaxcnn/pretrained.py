"""Pretrained weights: tags, local files, download through the source library, convert once, cache.

``create_model("resnet50", pretrained=...)`` returns ``(module, variables)``. ``pretrained``
is one of:

- ``True`` or a weight tag: torchvision's weights enums, timm's pretrained tags, OpenAI's
  CLIP checkpoints (``openai``) or open_clip's (``laion400m_e32``, ``metaclip_fullcc``...)
  (listed, with their preprocessing and metadata, in ``_data/pretrained_cfgs.json``,
  generated from the installed libraries by :mod:`flaxcnn.convert.pretrained_meta`). The
  first use downloads through that library's own mechanism (torch hub, the Hugging Face
  hub, the ``clip`` package's ``~/.cache/clip``), converts
  with :mod:`flaxcnn.convert`, and caches the Flax variables as safetensors plus a JSON
  config under ``$FLAXCNN_CACHE`` (default ``~/.cache/flaxcnn``); later uses need neither
  torch nor the network. Offline with nothing cached fails within seconds with an error
  naming the file to fetch and where to put it, never a silent random init.
- a local path: a folder of converted weights (``flaxcnn convert --out``, a cache entry),
  its ``variables.safetensors`` or ``config.json``, or a torch checkpoint
  (``.pth``/``.pt``/``.bin``/``.safetensors`` with its source's names, a TorchScript archive
  such as OpenAI's CLIP ``ViT-B-32.pt``, or a Hugging Face model folder holding one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
import functools
import importlib.util
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from ._registry import get_model_spec

__all__ = [
    "PretrainedCfg",
    "PretrainedUnavailable",
    "UnknownWeightTag",
    "adapt_input_conv",
    "cache_dir",
    "get_pretrained_cfg",
    "list_pretrained",
    "load_converted",
    "load_pretrained",
    "recorded_cfg",
    "save_converted",
]

log = logging.getLogger("flaxcnn")
_DATA = Path(__file__).parent / "_data"

# Suffixes that make a ``pretrained=`` string a path even when the file does not exist (so a
# typo reads "file not found", not "unknown weight tag"). No weight tag contains a dot.
_PATH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar", ".json")
# Torch weight files in a Hugging Face / timm model folder, in timm's order of preference.
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# open_clip's weight files on the Hugging Face hub, in its order of preference.
_OPEN_CLIP_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# A TCP connect to the weights' host answers within this many seconds when online.
_PROBE_TIMEOUT_S = 3.0
_TRUE = ("1", "ON", "YES", "TRUE")  # huggingface_hub's spelling of a true flag


def _pass_file(cli: str | None, model: str, path: str) -> str:
    """How to load a local file as ``model``'s weights: in Python (``cli=None``) or on the
    command line, where ``cli`` is the option that took the weight tag (``flaxcnn convert``
    takes files as --checkpoint)."""
    if cli is None:
        return f"load it with create_model({model!r}, pretrained={path!r})"
    if cli == "--weights":
        return f"pass --checkpoint {path}"
    return f"pass --model {model} {cli} {path}"


class PretrainedUnavailable(RuntimeError):
    """The weights are neither cached nor downloadable (offline, or the source failed).

    A record of what failed (``name``, ``reason``) and the way out (``fetch`` on a
    connected machine, then put it at ``put_at`` or pass it as a ``filename`` path; a
    ``hint``). :meth:`message` words it for Python or, with ``cli``, for the command line.
    """

    def __init__(
        self,
        name: str,
        reason: str,
        *,
        fetch: str | None = None,
        put_at: Path | None = None,
        filename: str | None = None,
        hint: str | None = None,
    ):
        self.name, self.reason, self.fetch = name, reason, fetch
        self.put_at, self.filename, self.hint = put_at, filename, hint
        super().__init__(self.message())

    def message(self, cli: str | None = None) -> str:
        parts = [f"could not fetch {self.name}: {self.reason}"]
        if self.fetch:
            put = f"put it at {self.put_at} or " if self.put_at else ""
            path = f"/path/to/{self.filename}"
            load = _pass_file(cli, self.name.partition(".")[0], path)
            parts.append(f"download {self.fetch} on a connected machine and {put}{load}")
        if self.hint:
            parts.append(self.hint)
        return "; ".join(parts)


class UnknownWeightTag(ValueError):
    """``pretrained=`` is neither a weight tag of ``model`` nor a local path.

    Keeps the model's ``tags`` (empty if no weights are known for it); :meth:`message`
    words the error for Python or, with ``cli`` (the option that took the tag), for the
    command line.
    """

    def __init__(self, model: str, tag: str | None, tags: list[str]):
        self.model, self.tag, self.tags = model, tag, list(tags)
        super().__init__(self.message())

    def message(self, cli: str | None = None) -> str:
        if cli == "--weights":
            files = "--checkpoint takes a local checkpoint file"
        else:
            files = (
                f"{cli or 'pretrained='} also takes a local checkpoint file or a folder "
                "written by `flaxcnn convert`"
            )
        if not self.tags:
            return f"no pretrained weights are known for {self.model}; {files}"
        close = difflib.get_close_matches(str(self.tag), self.tags, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        shown = ", ".join(self.tags[:12]) + (
            f" and {len(self.tags) - 12} more" if len(self.tags) > 12 else ""
        )
        pattern = f"{self.model}.*"
        listing = (
            f"flaxcnn list '{pattern}' --pretrained"
            if cli
            else f"flaxcnn.list_pretrained({pattern!r})"
        )
        return (
            f"unknown weight tag for {self.model} {self.tag!r}{hint}; its tags: {shown} "
            f"({listing} lists them); {files}"
        )


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


def _tags(name: str) -> list[str]:
    return [c.tag for c in _table().get(name, [])]


def get_pretrained_cfg(name: str, tag: str | bool | None = True) -> PretrainedCfg:
    """The :class:`PretrainedCfg` of ``name`` (``'resnet50'`` or ``'resnet50.a1_in1k'``).

    ``tag=True`` picks the default (torchvision's ``DEFAULT`` where there is one);
    ``'DEFAULT'`` is torchvision's default explicitly. An unknown tag raises
    :class:`UnknownWeightTag`, which lists the model's tags.
    """
    if "." in name:
        name, tag = name.split(".", 1)
    get_model_spec(name)  # unknown model names get their own error
    cfgs = _table().get(name)
    if not cfgs:
        raise UnknownWeightTag(name, None if tag is True else str(tag), [])
    if tag is True or tag is None:
        return cfgs[0]
    if tag == "DEFAULT":
        tv = [c for c in cfgs if c.source == "torchvision" and c.default]
        if tv:
            return tv[0]
    for c in cfgs:
        if c.tag == tag:
            return c
    raise UnknownWeightTag(name, str(tag), [c.tag for c in cfgs])


def cache_dir() -> Path:
    """``$FLAXCNN_CACHE``, else ``~/.cache/flaxcnn``."""
    return Path(os.environ.get("FLAXCNN_CACHE") or Path.home() / ".cache" / "flaxcnn")


# -- Fetching: the source library's cache, else its download, never a long wait offline --


def _reachable(url: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host (or the proxy the environment sets for
    it) opens within ``timeout`` seconds.

    Downloading offline is slow to fail: huggingface_hub retries five times with backoff
    (about 50 s) and urllib may wait on a dead resolver. The probe runs in a daemon thread
    because name resolution ignores socket timeouts.
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and host and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname, p.port or (443 if p.scheme == "https" else 80)
    if not host:
        return False
    opened, done = threading.Event(), threading.Event()

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.set()
        except OSError:
            pass
        finally:
            done.set()

    threading.Thread(target=probe, name="flaxcnn-probe", daemon=True).start()
    done.wait(timeout)
    return opened.is_set()


def _torch_hub_dir() -> Path:
    """torch.hub's directory (``$TORCH_HOME/hub``): ``torch.hub.get_dir()`` once torch is
    loaded, else the same rule without importing torch (seconds, on an offline error path)."""
    if "torch.hub" in sys.modules:
        return Path(sys.modules["torch.hub"].get_dir())
    home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def _hf_cached(repo: str, files: tuple[str, ...] = _HF_WEIGHT_FILES) -> bool:
    """Whether the Hugging Face cache holds one of ``files`` of ``repo`` (``owner/name[@rev]``)."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    return any(
        isinstance(try_to_load_from_cache(repo_id, f, revision=revision or None), str)
        for f in files
    )


@contextlib.contextmanager
def _hf_offline(offline: bool):
    """huggingface_hub in offline mode (cache only, no retries) for the ``with`` block.

    It reads ``HF_HUB_OFFLINE`` once, at import; its module flag is what every request
    checks, so setting that flag is how a cached weight loads without the network.
    """
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


# What fetching each source's weights needs: (modules, how to install them).
_FETCH_NEEDS = {
    "torchvision": (("torch", "torchvision"), "pip install 'flaxcnn[convert]'"),
    "timm": (("torch", "timm"), "pip install 'flaxcnn[convert]'"),
    # OpenAI's `clip` imports pkg_resources, which setuptools 81 removed.
    "openai": (("torch", "clip"), "pip install torch clip-anytorch 'setuptools<81'"),
    "open_clip": (("torch", "open_clip"), "pip install torch open-clip-torch"),
}


def _fetch_state_dict(cfg: PretrainedCfg) -> dict[str, Any]:
    """The torch state dict of ``cfg``'s weights: from the source library's own cache
    (torch hub under ``$TORCH_HOME``, the Hugging Face cache under ``$HF_HOME``, the
    ``clip`` package's ``~/.cache/clip``), else downloaded. Offline with nothing cached
    raises :class:`PretrainedUnavailable` within seconds: the host is probed before any
    download is tried."""
    source = cfg.source
    # open_clip fetches OpenAI's weights too (its tag "openai"): either package will do.
    if (
        source == "openai"
        and importlib.util.find_spec("clip") is None
        and importlib.util.find_spec("open_clip") is not None
    ):
        return _fetch_openai_with_open_clip(cfg)
    needs, install = _FETCH_NEEDS[source]
    absent = [m for m in needs if importlib.util.find_spec(m) is None]
    if absent:
        alt = " (or open-clip-torch)" if source == "openai" else ""
        raise PretrainedUnavailable(
            cfg.full_name,
            f"it is not cached in {cache_dir()} and converting it needs "
            f"{' and '.join(absent)}: {install}{alt}",
        )
    if source == "openai":
        return _fetch_openai(cfg)
    if source == "open_clip":
        load = functools.partial(_open_clip_model, cfg.source_name, cfg.source_tag)
        if cfg.hf_hub_id:
            return _fetch_from_hf(cfg, files=_OPEN_CLIP_HF_FILES, load=load)
        return _fetch_open_clip_url(cfg, load)
    if source == "timm" and cfg.hf_hub_id:
        return _fetch_from_hf(cfg)
    return _fetch_from_url(cfg)


def _clip_cache_dir() -> Path:
    """Where OpenAI's ``clip.load`` keeps its checkpoints by default (``~/.cache/clip``)."""
    return Path(os.path.expanduser("~/.cache/clip"))


def _import_clip():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its pkg_resources deprecation warning, at import
        import clip.clip
    return clip.clip


def _fetch_openai(cfg: PretrainedCfg) -> dict[str, Any]:
    """OpenAI's CLIP checkpoint, through the ``clip`` package's own download (into
    ``~/.cache/clip``, SHA-256 checked): a TorchScript archive (:func:`_read_torch_file`)."""
    fname = os.path.basename(urllib.parse.urlsplit(cfg.url).path)
    root = _clip_cache_dir()
    where = root / fname

    def unavailable(reason: str) -> PretrainedUnavailable:
        return PretrainedUnavailable(
            cfg.full_name, reason, fetch=cfg.url, put_at=where, filename=fname
        )

    if not where.is_file() and not _reachable(cfg.url):
        host = urllib.parse.urlsplit(cfg.url).hostname
        raise unavailable(f"{host} is unreachable (offline?) and it is not cached in {root}")
    try:
        path = _import_clip()._download(cfg.url, str(root))
    except Exception as e:
        raise unavailable(_first_line(e)) from None
    return _read_torch_file(Path(path))


def _open_clip_model(name: str, tag: str):
    import open_clip

    # Without require_pretrained, open_clip logs a warning and returns random weights when
    # it finds none to load.
    return open_clip.create_model(name, pretrained=tag, require_pretrained=True)


def _fetch_open_clip_url(cfg: PretrainedCfg, load: Any) -> dict[str, Any]:
    """open_clip's weights that are not on the Hugging Face hub: open_clip downloads them
    into its cache (``~/.cache/clip``, as OpenAI's package)."""
    fname = os.path.basename(urllib.parse.urlsplit(cfg.url).path)
    where = _clip_cache_dir() / fname

    def unavailable(reason: str) -> PretrainedUnavailable:
        return PretrainedUnavailable(
            cfg.full_name, reason, fetch=cfg.url, put_at=where, filename=fname
        )

    if not where.is_file() and not _reachable(cfg.url):
        host = urllib.parse.urlsplit(cfg.url).hostname
        raise unavailable(
            f"{host} is unreachable (offline?) and it is not cached in {where.parent}"
        )
    try:
        return load().state_dict()
    except Exception as e:
        raise unavailable(_first_line(e)) from None


def _fetch_openai_with_open_clip(cfg: PretrainedCfg) -> dict[str, Any]:
    """OpenAI's weights through open_clip (its ``-quickgelu`` model, tag ``openai``), for
    users who have open_clip and not OpenAI's ``clip``: the same tensors, same names."""
    from open_clip.pretrained import get_pretrained_cfg as open_clip_cfg

    name = get_model_spec(cfg.name).sources["open_clip"]
    hub = os.path.split(open_clip_cfg(name, "openai").get("hf_hub", ""))[0]
    via = dataclasses.replace(cfg, source="open_clip", source_name=name, source_tag="openai")
    load = functools.partial(_open_clip_model, name, "openai")
    if hub:
        return _fetch_from_hf(
            dataclasses.replace(via, hf_hub_id=hub), files=_OPEN_CLIP_HF_FILES, load=load
        )
    return _fetch_open_clip_url(via, load)


def _read_torch_file(path: Path) -> dict[str, Any]:
    """A torch checkpoint as ``{key: numpy array}``; a TorchScript archive (OpenAI's CLIP
    ``.pt`` files) by ``torch.jit.load``, which runs no Python, and whose state dict holds
    exactly the archive's tensors (``clip.load(jit=False)`` would rebuild the model in half
    precision first, which rounds a float32 checkpoint). Half-precision tensors widen
    exactly to float32."""
    from .convert import read_state_dict
    from .convert.errors import CheckpointError

    if not _is_torchscript(path):
        return read_state_dict(path)
    import torch

    try:
        with warnings.catch_warnings():
            # torch deprecates TorchScript, but OpenAI's checkpoints are TorchScript archives.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise CheckpointError(
            f"{path} is a TorchScript archive that could not be loaded ({_first_line(e)}); "
            "it may be truncated"
        ) from None
    return read_state_dict(module.state_dict())


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``constants.pkl``) rather
    than a ``torch.save`` file (a zip without it)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _fetch_from_url(cfg: PretrainedCfg) -> dict[str, Any]:
    """torchvision's weights, and timm's few that are not on the Hugging Face hub: both
    libraries keep them in torch hub's ``checkpoints`` folder."""
    fname = os.path.basename(urllib.parse.urlsplit(cfg.url).path)
    where = _torch_hub_dir() / "checkpoints" / fname

    def unavailable(reason: str) -> PretrainedUnavailable:
        return PretrainedUnavailable(
            cfg.full_name, reason, fetch=cfg.url, put_at=where, filename=fname
        )

    if not where.is_file() and not _reachable(cfg.url):
        host = urllib.parse.urlsplit(cfg.url).hostname
        raise unavailable(f"{host} is unreachable (offline?) and it is not cached")
    try:
        if cfg.source == "torchvision":
            import torch.hub

            return torch.hub.load_state_dict_from_url(
                cfg.url, map_location="cpu", progress=True, weights_only=True
            )
        import timm

        model = timm.create_model(f"{cfg.source_name}.{cfg.source_tag}", pretrained=True)
    except Exception as e:
        raise unavailable(_first_line(e)) from None
    return model.state_dict()


def _fetch_from_hf(
    cfg: PretrainedCfg,
    *,
    files: tuple[str, ...] = _HF_WEIGHT_FILES,
    load: Any = None,
) -> dict[str, Any]:
    """Weights on the Hugging Face hub, through their library: timm's (which applies its
    checkpoint filters) by default, else ``load()`` (open_clip's, whose weight ``files``
    have their own names). A cached file loads in offline mode when the hub is unreachable."""
    from huggingface_hub import constants

    # The environment as it is now, too: huggingface_hub read it when it was imported.
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE
    repo = cfg.hf_hub_id.partition("@")[0]
    cache = constants.HF_HUB_CACHE

    def unavailable(reason: str, hint: str | None) -> PretrainedUnavailable:
        return PretrainedUnavailable(
            cfg.full_name,
            reason,
            fetch=f"{files[0]} from {constants.ENDPOINT}/{repo}",
            filename=files[0],
            hint=hint,
        )

    cached = _hf_cached(cfg.hf_hub_id, files)
    if not cached and offline:
        raise unavailable(
            f"HF_HUB_OFFLINE is set and it is not in the Hugging Face cache ({cache})",
            "or unset HF_HUB_OFFLINE to download it",
        )
    if not offline and not _reachable(constants.ENDPOINT):
        if not cached:
            host = urllib.parse.urlsplit(constants.ENDPOINT).hostname
            raise unavailable(
                f"{host} is unreachable (offline?) and it is not in the Hugging Face "
                f"cache ({cache})",
                "or copy a Hugging Face cache (HF_HOME) that holds it here; "
                "HF_HUB_OFFLINE=1 skips the network check",
            )
        offline = True  # load the cached file without the hub's retries
    if load is None:
        import timm

        def load():
            return timm.create_model(f"{cfg.source_name}.{cfg.source_tag}", pretrained=True)

    try:
        with _hf_offline(offline):
            model = load()
    except Exception as e:
        raise unavailable(
            _first_line(e),
            "HF_HUB_OFFLINE=1 loads from the Hugging Face cache only" if not offline else None,
        ) from None
    return model.state_dict()


# -- Converted weights on disk: the cache, `flaxcnn convert --out`, local checkpoints --


def _entry_dir(cfg: PretrainedCfg, root: Path | None) -> Path:
    return (root or cache_dir()) / cfg.full_name


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; restored at once
    os.umask(mask)
    return mask


def save_converted(
    entry: Path, model: str, config: dict[str, Any], variables, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``variables.safetensors`` + ``config.json`` into the folder ``entry``, atomically.

    ``config`` holds the module fields that differ from the registered variant
    (``num_classes``, ``in_chans``); :func:`load_converted` and ``pretrained=entry``
    rebuild the module from it. The folder and files get the permissions of any folder and
    file the user creates (``0o777``/``0o666`` less the umask), not those of the private
    temporary folder they are written in.
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
        mask = _umask()
        for f in tmp.iterdir():
            f.chmod(0o666 & ~mask)
        tmp.chmod(0o777 & ~mask)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()
        tmp.rename(entry)  # atomic: a half-written entry is never visible
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def load_converted(entry: str | os.PathLike):
    """``(module, variables)`` from a folder written by :func:`save_converted` (the cache,
    or ``flaxcnn convert --out``), exactly as saved; ``pretrained=entry`` does the same
    and also adapts ``num_classes``/``in_chans``."""
    meta, variables = _read_converted(Path(entry) / "variables.safetensors", cache=False)
    module = get_model_spec(meta["model"]).build(**meta["config"])
    return module, jax.tree.map(jax.numpy.asarray, variables)


def recorded_cfg(path: str | os.PathLike) -> PretrainedCfg | None:
    """The :class:`PretrainedCfg` recorded with converted weights (a cache entry, or
    ``flaxcnn convert --weights TAG --out``): a folder or one of its files. ``None`` for
    weights converted from a local checkpoint, whose preprocessing is not known."""
    path = Path(path)
    config = (path if path.is_dir() else path.parent) / "config.json"
    try:
        raw = json.loads(config.read_text()).get("pretrained_cfg")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(raw, dict):
        return None
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields}
    try:
        return PretrainedCfg(**raw)
    except TypeError:
        return None


def _read_converted(
    variables_file: Path, *, cache: bool
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``(config.json beside the file or None, variables)`` of converted weights."""
    from safetensors.numpy import load_file

    from .convert.errors import CheckpointError

    config = variables_file.parent / "config.json"
    try:
        meta = json.loads(config.read_text()) if config.is_file() or cache else None
        if meta is not None and not isinstance(meta.get("model"), str):
            raise ValueError(f"{config} names no 'model'")
        flat = load_file(str(variables_file))
    except Exception as e:
        what = (
            f"the cached weights in {variables_file.parent} are unreadable"
            if cache
            else f"{variables_file} (converted weights) is unreadable"
        )
        todo = (
            "delete that folder to convert them again"
            if cache
            else "it may be truncated; convert the weights again"
        )
        raise CheckpointError(f"{what} ({_first_line(e)}); {todo}") from None
    variables = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    return meta, variables


def _local_path(name: str, pretrained: Any) -> Path | None:
    """The local file or folder ``pretrained`` names, or ``None`` for a weight tag.

    A string is a path if it looks like one (a separator, ``~``, a checkpoint or JSON
    suffix) or, not being one of ``name``'s tags, names something that exists (``out_r18``).
    """
    if isinstance(pretrained, os.PathLike):
        return Path(pretrained).expanduser()
    if not isinstance(pretrained, str):
        return None
    path = Path(pretrained).expanduser()
    seps = {"/", os.sep, os.altsep or "/"}
    if (
        any(s in pretrained for s in seps)
        or pretrained.startswith("~")
        or path.suffix.lower() in _PATH_SUFFIXES
    ):
        return path
    if pretrained not in (*_tags(name), "DEFAULT") and path.exists():
        return path
    return None


def _is_flax_variables(path: Path) -> bool:
    """Whether a safetensors file holds Flax variables (``params/conv1/kernel``) rather
    than a torch state dict (``conv1.weight``); reads only its header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
    except Exception:
        return False  # unreadable: the checkpoint reader says why
    return bool(keys) and all(k.split("/", 1)[0] in ("params", "batch_stats") for k in keys)


def _load_local(name: str, path: Path, overrides: dict[str, Any]):
    """``(module, variables)`` from a converted folder, its files, or a torch checkpoint."""
    from .convert.errors import CheckpointError

    if path.is_dir():
        if (path / "variables.safetensors").is_file():
            return _load_flax(name, path / "variables.safetensors")
        for fname in _HF_WEIGHT_FILES:
            if (path / fname).is_file():
                return _local_file(name, path / fname, overrides)
        raise CheckpointError(
            f"{path} holds neither converted weights (variables.safetensors and config.json, "
            f"as `flaxcnn convert --out` writes them) nor a torch checkpoint "
            f"({' or '.join(_HF_WEIGHT_FILES)})"
        )
    if not path.exists():
        raise CheckpointError(f"no such checkpoint file or folder: {path}")
    if path.suffix == ".json":
        if not (path.parent / "variables.safetensors").is_file():
            raise CheckpointError(f"{path} has no variables.safetensors beside it")
        return _load_flax(name, path.parent / "variables.safetensors")
    if path.suffix == ".safetensors" and _is_flax_variables(path):
        return _load_flax(name, path)
    return _local_file(name, path, overrides)


def _load_flax(name: str, file: Path):
    """Converted Flax variables; the module from the ``config.json`` beside them, else
    from the registered variant with ``num_classes``/``in_chans`` read off the shapes."""
    from .convert.errors import ConversionError

    meta, variables = _read_converted(file, cache=False)
    spec = get_model_spec(name)
    if meta is None:
        config = _config_from_variables(spec, traverse_util.flatten_dict(variables))
    elif meta["model"] != name:
        raise ConversionError(f"{file.parent} holds converted {meta['model']} weights, not {name}")
    else:
        config = meta.get("config", {})
    return spec.build(**config), variables


def _config_from_variables(spec, flat) -> dict[str, int]:
    config = {}
    for field, torch_name, axis in (
        ("num_classes", spec.classifier, -1),
        ("in_chans", spec.first_conv, 2),  # HWIO
    ):
        if torch_name and field in spec.fields:
            kernel = flat.get((*_module_path(spec, torch_name, flat), "kernel"))
            if kernel is not None and kernel.ndim >= 2:
                config[field] = int(kernel.shape[axis])
    return config


def _convert(cfg: PretrainedCfg, weights: Any):
    from .convert import from_torch

    return from_torch(cfg.source_name, weights, source=cfg.source)


def _local_file(name: str, path: Path, overrides: dict[str, Any]):
    """Convert a local torch checkpoint, trying each source's naming.

    ``overrides`` shape the architecture before conversion, so a checkpoint of a
    configuration that is not registered (``stage_sizes=(1, 1, 1, 1)``) converts strictly
    against the module it came from. The error carries the report of the naming that
    came closest."""
    from .convert import ConversionError, from_torch

    spec = get_model_spec(name)
    sd = _read_torch_file(path)
    failures = []
    for source, src_name in spec.sources.items():
        try:
            return from_torch(src_name, sd, source=source, **overrides)
        except ConversionError as e:
            failures.append((source, src_name, e))
    if not failures:
        raise ConversionError(f"{name} has no torchvision or timm counterpart to convert {path} as")

    def size(e):
        r = e.report
        return len(r.missing) + len(r.unexpected) + len(r.mismatched) if r else math.inf

    source, src_name, best = min(failures, key=lambda f: size(f[2]))
    details = "\n".join(f"as {s} {n!r}: {e}" for s, n, e in failures)
    raise ConversionError(
        f"{path} does not fit {name} (closest: {source}'s {src_name!r} naming):\n{details}",
        best.report,
    )


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
            ``'a1_in1k'``), or a local path: a folder of converted weights (written by
            ``flaxcnn convert --out`` or :func:`save_converted`) or its
            ``variables.safetensors``/``config.json``; a torch checkpoint
            (``.pth``/``.pt``/``.bin``/``.safetensors``) with torchvision's or timm's
            names, or a Hugging Face model folder holding one. A bare name that is not a
            tag is taken as a path if it exists.
        num_classes: if it differs from the weights', the classifier is re-initialised
            (LeCun normal, zero bias) and everything else loaded; logged.
        in_chans: if not 3, the first conv is adapted (:func:`adapt_input_conv`); logged.
        cache: cache root (default :func:`cache_dir`).
        overrides: other module fields (e.g. ``dtype=jnp.bfloat16``).

    Raises:
        UnknownWeightTag: ``pretrained`` is neither a tag nor an existing path.
        PretrainedUnavailable: the weights are not cached and cannot be downloaded.
        flaxcnn.convert.ConversionError: the weights do not fit the module (a
            :class:`~flaxcnn.convert.CheckpointError` if a file is unreadable).
    """
    base, _, name_tag = name.partition(".")
    spec = get_model_spec(base)
    unknown = sorted(set(overrides) - set(spec.fields))
    if unknown:
        raise TypeError(
            f"{base}: unknown argument(s) {unknown}; it accepts: {', '.join(spec.fields)}"
        )
    for field, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if value is not None and field not in spec.fields:
            raise TypeError(f"{base} has no {field} to adapt; it accepts: {', '.join(spec.fields)}")
    local = _local_path(base, pretrained)
    if name_tag and (local is not None or (isinstance(pretrained, str) and pretrained != name_tag)):
        raise ValueError(
            f"{name!r} names the weight tag {name_tag!r} and pretrained={str(pretrained)!r} "
            f"other weights; give one: create_model({name!r}) alone, or "
            f"create_model({base!r}, pretrained={str(pretrained)!r})"
        )
    if local is not None:
        module, variables = _load_local(base, local, overrides)
    else:
        cfg = get_pretrained_cfg(name, pretrained if not name_tag else None)
        entry = _entry_dir(cfg, Path(cache) if cache else None)
        if (entry / "config.json").exists():
            meta, variables = _read_converted(entry / "variables.safetensors", cache=True)
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
    shapes = traverse_util.flatten_dict(
        dict(jax.eval_shape(module.init, key, *_init_inputs(spec, module)))
    )
    _check_fits(name, flat, shapes, head, overrides)
    missing = [k for k in shapes if k not in flat]
    if missing:
        flat.update(_init_leaves(shapes, missing, key))
    variables = traverse_util.unflatten_dict({k: jax.numpy.asarray(flat[k]) for k in shapes})
    return module, variables


def _init_inputs(spec, module) -> tuple[Any, ...]:
    """Shapes of the inputs ``module.init`` takes: one image, and for two-input models
    (CLIP's images and token ids) what their ``example_inputs`` builds."""
    make = getattr(module, "example_inputs", None)
    if make is not None:
        return tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in jax.eval_shape(make))
    h, w, c = spec.input_size
    return (jax.ShapeDtypeStruct((1, h, w, getattr(module, "in_chans", c)), np.float32),)


def _check_fits(name, flat, shapes, head, overrides) -> None:
    """Raise unless the loaded weights fill the (possibly overridden) module exactly, the
    re-initialised classifier ``head`` aside: an override that changes the architecture
    (``stage_sizes``) must not silently drop or re-initialise pretrained tensors. The
    error carries a :class:`~flaxcnn.convert.ConversionReport`, like a failed conversion."""
    from .convert import ConversionError, ConversionReport, Mismatch

    def fresh(k):
        return head is not None and k[: len(head)] == head

    report = ConversionReport(
        missing=["/".join(k) for k in shapes if k not in flat and not fresh(k)],
        unexpected=["/".join(k) for k in flat if k not in shapes],
        mismatched=[
            Mismatch(
                "/".join(k),
                "/".join(k),
                tuple(np.shape(flat[k])),
                tuple(shapes[k].shape),
                ("weights", "module"),
            )
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
