"""Input validation that speaks the user's language: NHWC vs NCHW, and images too small
for the model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from .._registry import model_name
from .padding import pool_output_size

__all__ = ["check_image_input", "smallest_side"]


def smallest_side(windows: Iterable[tuple[int, int, int] | tuple[int, int, int, bool]]) -> int:
    """The smallest input side that leaves at least one pixel after each of ``windows``:
    ``(kernel, stride, padding[, ceil_mode])`` of the convs and pools that shrink a map, in
    order (torch's output sizes, so torch refuses what is below it too). Convs that keep the
    size (3x3 padded 1) need not be listed; no window at all gives 1."""
    windows = list(windows)
    side = 1
    while True:
        try:
            n = side
            for k, s, p, *ceil in windows:
                n = pool_output_size(n, k, s, p, ceil_mode=bool(ceil and ceil[0]))
            return side
        except ValueError:  # a window left no pixel
            side += 1


def check_image_input(
    x: Any,
    module: nn.Module,
    *,
    in_chans: int | None = None,
    min_size: int | None = None,
    hint: str = "",
) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is a floating-point NHWC batch with the
    module's ``in_chans`` channels and sides of at least its ``min_input_size``.

    Every model calls it at the top of ``__call__``, so a bad input fails in one line naming
    the model (:func:`~flaxcnn._registry.model_name`) before any layer runs. The most common
    mistake when coming from PyTorch is passing NCHW: say so, instead of a shape error from
    inside ``lax.conv``. Below the minimum a pool would fail deep inside the model, or an
    empty map would reach a global pool and come out as NaN.

    Args:
        x: the input batch.
        module: the model being called.
        in_chans, min_size: what to require instead of ``module.in_chans`` and
            ``module.min_input_size`` (CLIP has no ``in_chans``; an aux head that runs only
            in train mode raises the minimum only there).
        hint: appended to the too-small error (what to do instead).
    """
    in_chans = module.in_chans if in_chans is None else in_chans
    shape = tuple(x.shape)
    if x.ndim != 4:
        hint3 = " (add a batch axis: x[None])" if x.ndim == 3 else ""
        raise ValueError(
            f"{model_name(module)} expects a 4-D NHWC batch (N, H, W, {in_chans}), "
            f"got shape {shape}{hint3}"
        )
    if shape[-1] != in_chans:
        nchw = ""
        if shape[1] == in_chans:
            nchw = " -- it looks like NCHW; transpose with x.transpose(0, 2, 3, 1)"
        raise ValueError(
            f"{model_name(module)} expects NHWC input with {in_chans} channels, "
            f"got shape {shape}{nchw}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{model_name(module)} expects a floating-point image batch, got dtype {x.dtype}; "
            "convert and normalise it first (e.g. x.astype(jnp.float32) / 255)"
        )
    smallest = module.min_input_size if min_size is None else min_size
    h, w = shape[1:3]
    if h < smallest or w < smallest:
        raise ValueError(
            f"{model_name(module)} needs inputs of at least {smallest}x{smallest} "
            f"(got {h}x{w}){hint}"
        )
