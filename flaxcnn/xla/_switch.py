"""The one kernel decision: which implementation of a layer runs.

Every backend branch in flaxcnn asks :func:`cpu_kernels`; nothing else reads
``jax.default_backend()`` to choose an implementation.

* ``'auto'`` (default): on CPU, the XLA:CPU lowerings of :mod:`flaxcnn.xla` (depthwise convs
  as shifted slices, grouped convs split per group, custom derivatives for convs and max
  pooling, optimisation barriers); elsewhere the portable ones.
* ``'portable'``: on every backend, exactly what runs on GPU and TPU: ``lax`` convolutions
  with ``feature_group_count``, ``reduce_window`` max pooling with JAX's own derivative, no
  barriers. This is how the accelerator code paths are proven on a CPU-only machine.

Set it with the ``FLAXCNN_KERNELS`` environment variable, read when a layer is traced, or in
Python with :func:`kernels` (a context manager) or :func:`set_kernels` (for the rest of the
process). The Python setting is part of ``jax.jit``'s cache key: a function jitted once
is traced again, not reused, when it is called under another setting. Changing the
environment variable inside a running process does not reach functions already traced (as
with any value read at trace time): use :func:`kernels` there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import jax

__all__ = ["KERNEL_MODES", "cpu_kernels", "kernel_mode", "kernels", "set_kernels"]

KERNEL_MODES = ("auto", "portable")
ENV_VAR = "FLAXCNN_KERNELS"


def _check(mode: str | None, where: str) -> str | None:
    if mode is not None and mode not in KERNEL_MODES:
        raise ValueError(f"{where}={mode!r}: flaxcnn kernels must be one of {KERNEL_MODES}")
    return mode


def _make_state():
    """A JAX configuration state included in jit's cache key (JAX's own mechanism for
    trace-time settings such as ``jax_default_matmul_precision``). It lives in JAX's private
    config module; where that is not available, a process-wide value that jit does not see."""
    try:
        from jax._src import config as jax_config

        return jax_config.optional_enum_state(
            "flaxcnn_kernels",
            list(KERNEL_MODES),
            None,
            help=f"flaxcnn's kernel paths ({' or '.join(KERNEL_MODES)}); None: ${ENV_VAR}.",
            include_in_jit_key=True,
            include_in_trace_context=True,
        )
    except (ImportError, AttributeError, TypeError, ValueError):
        return None


_STATE = _make_state()
_FALLBACK: list[str | None] = [None]


def kernel_mode() -> str:
    """The kernel mode in force: the Python setting, else ``$FLAXCNN_KERNELS``, else ``'auto'``."""
    mode = _STATE.value if _STATE is not None else _FALLBACK[0]
    if mode is None:
        mode = _check(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", ENV_VAR)
    return mode


def cpu_kernels() -> bool:
    """Whether layers take their XLA:CPU implementations (``'auto'`` on the CPU backend)."""
    return kernel_mode() == "auto" and jax.default_backend() == "cpu"


@contextlib.contextmanager
def kernels(mode: str) -> Iterator[str]:
    """Run (and trace) the block with the kernel paths ``mode`` (module docstring)::

    with flaxcnn.kernels("portable"):
        logits = jax.jit(model.apply)(variables, x)  # the GPU/TPU implementations
    """
    _check(mode, "kernels")
    if _STATE is not None:
        with _STATE(mode):
            yield mode
        return
    prev, _FALLBACK[0] = _FALLBACK[0], mode
    try:
        yield mode
    finally:
        _FALLBACK[0] = prev


def set_kernels(mode: str | None) -> None:
    """Set the kernel paths for the rest of the process (``None``: back to ``$FLAXCNN_KERNELS``)."""
    _check(mode, "set_kernels")
    if _STATE is not None:
        jax.config.update("flaxcnn_kernels", mode)
    else:
        _FALLBACK[0] = mode
