"""Padding arithmetic, and window taps, shared by convolutions and pools.

PyTorch pads symmetrically by a fixed amount; TensorFlow's ``'SAME'`` pads
asymmetrically (the extra pixel goes bottom/right) by an amount that depends on
the input size. Weights trained with one padding are wrong with the other, so
every layer here takes the padding explicitly and models that load TF-ported
weights say so in their name (as timm's ``tf_`` prefix does).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Padding = int | tuple[int, int] | str

__all__ = [
    "Padding",
    "conv_padding",
    "explicit_padding",
    "pair",
    "pool_output_size",
    "window_taps",
]


def pair(v: int | Sequence[int]) -> tuple[int, int]:
    """``3 -> (3, 3)``; a pair is returned as a tuple."""
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) for i in v):
        raise ValueError(f"expected an int or a pair of ints, got {v!r}")
    return v  # type: ignore[return-value]


def conv_padding(padding: Padding) -> str | tuple[tuple[int, int], tuple[int, int]]:
    """Translate a torch-style padding spec into the form ``lax.conv`` takes.

    ``int`` or ``(ph, pw)`` pad symmetrically, as ``torch.nn.Conv2d`` does.
    ``'same'`` is TensorFlow's dynamic 'SAME' (asymmetric when the total is odd),
    for TF-ported weights; ``'valid'`` means no padding.
    """
    if isinstance(padding, str):
        p = padding.lower()
        if p not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        return p.upper()
    ph, pw = pair(padding)
    return ((ph, ph), (pw, pw))


def explicit_padding(
    padding: Padding, size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]
):
    """Per-side padding ``((top, bottom), (left, right))`` of a torch or TF-'SAME' spec
    for an input of spatial ``size``."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return ((0, 0), (0, 0))
        if padding.lower() != "same":
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        out = []
        for n, k, s in zip(size, kernel, stride, strict=True):
            total = max((-(-n // s) - 1) * s + k - n, 0)  # TF: the extra pixel goes bottom/right
            out.append((total // 2, total - total // 2))
        return tuple(out)
    ph, pw = pair(padding)
    return ((ph, ph), (pw, pw))


def pool_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Output length of a torch pooling window along one axis (``ceil_mode`` included).

    With ``ceil_mode`` torch drops a last window that would start in the right
    padding only, never one that starts inside the input or the left padding: so a window
    larger than the padded input still gives one output if it starts there (ResNet-D's
    2x2/2 average pool of a 1x1 map). No window at all raises ``ValueError``, as torch.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise ValueError(
            f"pooling window (kernel {kernel}, dilation {dilation}) is larger than the "
            f"padded input ({size} + 2*{padding})"
        )
    return out


def window_taps(
    x: jax.Array,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pads,
    fill: float = 0.0,
) -> tuple[list[jax.Array], tuple[int, int]]:
    """Tap ``(i, j)`` of every window of NHWC ``x`` padded by ``pads``
    (``((top, bottom), (left, right))``) with ``fill``: ``kh * kw`` strided slices of shape
    ``(N, out_h, out_w, C)`` in row-major window order, and ``(out_h, out_w)``."""
    xp = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
    n, c = xp.shape[0], xp.shape[3]
    (sh, sw), (dh, dw) = stride, dilation
    oh, ow = (
        (xp.shape[1 + a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1 for a in (0, 1)
    )
    taps = [
        lax.slice(
            xp,
            (0, i * dh, j * dw, 0),
            (n, i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1, c),
            (1, sh, sw, 1),
        )
        for i in range(kernel[0])
        for j in range(kernel[1])
    ]
    return taps, (oh, ow)
