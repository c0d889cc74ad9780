"""Input validation that speaks the user's language (NHWC vs NCHW)."""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["check_image_input"]


def check_image_input(x: jnp.ndarray, in_chans: int, model: str) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is an NHWC batch with ``in_chans`` channels.

    The most common mistake when coming from PyTorch is passing NCHW; say so
    instead of failing with a shape error from inside ``lax.conv``.
    """
    shape = tuple(x.shape)
    if x.ndim != 4:
        hint = " (add a batch axis: x[None])" if x.ndim == 3 else ""
        raise ValueError(
            f"{model} expects a 4-D NHWC batch (N, H, W, {in_chans}), got shape {shape}{hint}"
        )
    if shape[-1] != in_chans:
        hint = ""
        if shape[1] == in_chans:
            hint = " -- it looks like NCHW; transpose with x.transpose(0, 2, 3, 1)"
        raise ValueError(
            f"{model} expects NHWC input with {in_chans} channels, got shape {shape}{hint}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{model} expects a floating-point image batch, got dtype {x.dtype}; "
            "convert and normalise it first (e.g. x.astype(jnp.float32) / 255)"
        )
