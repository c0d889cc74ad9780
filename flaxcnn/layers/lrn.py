"""Local response normalisation across channels, as ``torch.nn.LocalResponseNorm``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["local_response_norm"]


def local_response_norm(
    x: jax.Array, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> jax.Array:
    """``torch.nn.functional.local_response_norm`` over the last (channel) axis of NHWC.

    ``b_c = a_c / (k + alpha / size * sum(a_j ** 2))) ** beta``, the sum over the channels
    ``c - size // 2 ... c + (size - 1) // 2`` that exist (torch zero-pads the channel axis
    and averages with the padding counted, so ``alpha`` is divided by ``size`` even at the
    edges). Note the ``/ size``: Krizhevsky et al. (section 3.3) write the sum without it, so
    their ``alpha = 1e-4`` is torch's ``alpha = 5e-4`` at ``size = 5``; Caffe divides like
    torch.

    Parameter-free. The squares are summed in float32 (or float64 under x64) whatever the
    compute dtype, as :class:`BatchNorm2d` reduces its statistics; the result has ``x``'s
    dtype. A ``reduce_window`` sum, the same on every backend.
    """
    if size < 1:
        raise ValueError(f"local_response_norm: size must be >= 1, got {size}")
    wide = jnp.promote_types(x.dtype, jnp.float32)
    xw = x.astype(wide)
    sq = jnp.pad(xw * xw, [(0, 0)] * (x.ndim - 1) + [(size // 2, (size - 1) // 2)])
    window = (1,) * (x.ndim - 1) + (size,)
    # a concrete zero, so JAX sees a window sum (differentiable), not a generic reduction
    s = lax.reduce_window(sq, np.zeros((), wide), lax.add, window, (1,) * x.ndim, "VALID")
    return (xw / (k + (alpha / size) * s) ** beta).astype(x.dtype)
