"""Reading torch checkpoints (``.pth``/``.pt``/``.bin`` and ``.safetensors``) into numpy.

Every failure (missing file, truncated archive, a pickle that is not a state
dict) becomes a :class:`CheckpointError` that names the file and says what is
wrong, rather than a traceback from inside torch's unpickler.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError

__all__ = ["load_checkpoint", "to_numpy_state_dict"]

# Wrappers that training scripts put around the weights.
_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "net")


def load_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a checkpoint file as ``{torch key: float32/int numpy array}``.

    ``.safetensors`` is read with safetensors; anything else with
    ``torch.load(map_location='cpu', weights_only=True)`` (no arbitrary pickles).
    A training checkpoint whose weights sit under ``'state_dict'``/``'model'`` is
    unwrapped, and a DataParallel ``module.`` prefix stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted download?")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - part of the [convert] extra
            raise ImportError("reading .safetensors needs `pip install flaxcnn[convert]`") from e
        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as e:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); "
                "it may be truncated or not a checkpoint"
            ) from None
    else:
        torch = _torch()
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{path} could not be read as a PyTorch checkpoint ({type(e).__name__}: {msg}). "
                "It may be truncated, corrupt, or not a checkpoint at all; only tensors are "
                "loaded (weights_only=True), never arbitrary pickled objects."
            ) from None
    return to_numpy_state_dict(obj, origin=str(path))


def to_numpy_state_dict(obj: Any, *, origin: str = "state dict") -> dict[str, np.ndarray]:
    """A torch module, a state dict (of tensors or arrays) or a wrapped checkpoint as numpy."""
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{origin} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)"
        )
    for key in _WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping) and not _is_array(obj[key]):
            return to_numpy_state_dict(obj[key], origin=f"{origin}[{key!r}]")
    out: dict[str, np.ndarray] = {}
    bad = []
    for k, v in obj.items():
        if not isinstance(k, str):
            bad.append(repr(k))
        elif _is_array(v):
            out[k] = _as_numpy(v)
        else:
            bad.append(f"{k} ({type(v).__name__})")
    if bad:
        raise CheckpointError(
            f"{origin} is not a state dict of tensors; these entries are not: {', '.join(bad[:10])}"
            + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        )
    if not out:
        raise CheckpointError(f"{origin} holds no tensors")
    if all(k.startswith("module.") for k in out):  # saved from DataParallel / DDP
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def _is_array(v: Any) -> bool:
    return isinstance(v, np.ndarray) or type(v).__name__ in ("Tensor", "Parameter", "ArrayImpl")


def _as_numpy(v: Any) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    if type(v).__name__ in ("Tensor", "Parameter"):
        v = v.detach().cpu()
        if v.is_floating_point() and v.dtype != _torch().float64:
            v = v.float()  # bf16/fp16 have no numpy equivalent; widen, cast to the target later
        return v.numpy().copy()  # torch updates buffers in place; never share its memory
    return np.asarray(v)


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "converting PyTorch weights needs torch: pip install 'flaxcnn[convert]'"
        ) from e
    return torch
