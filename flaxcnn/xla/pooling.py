"""Max pooling as XLA runs it fastest: the one function :func:`flaxcnn.layers.max_pool2d` calls.

Under the portable kernels (:mod:`flaxcnn.xla._switch`; what GPUs and TPUs always run) the
pool is ``lax.reduce_window`` with JAX's own derivative. Under ``'auto'`` on CPU it is the
maximum of the window's taps as strided slices, with :func:`_max_pool_jvp`'s derivative
(the same taps and one ``select_n``), which XLA:CPU runs several times faster than JAX's
generic ``select_and_scatter_add`` rule, and its input and output are kept in memory
(:func:`materialize`): when the pool was a ``reduce_window``, XLA:CPU otherwise handed it
to YNNPACK together with the convolution before it and the classifier after it.

Forward values are identical on both paths (a maximum is exact). Gradients differ only at
ties (docs/conversion.md): the CPU rule gives each window's gradient to torch's argmax, the
first maximum in row-major window order, never a padding position, or the last NaN;
JAX's ``reduce_window`` rule (an ``select_and_gather_add`` pairing values with tangents)
picks one of the tied elements by XLA's reduction order, which is not specified.
"""

from __future__ import annotations

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..layers.padding import window_taps
from ._options import materialize
from ._switch import cpu_kernels

__all__ = ["max_pool"]


def max_pool(x: jax.Array, k, s, d, pads) -> jax.Array:
    """NHWC max pool with window ``k``, stride ``s``, dilation ``d`` and explicit per-side
    ``pads`` (``((top, bottom), (left, right))``, padding counts as -inf)."""
    if not cpu_kernels():
        return _reduce_window_max(x, k, s, d, pads)
    x = materialize(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return materialize(_max_pool_taps(x, k, s, d, pads))
    return materialize(_reduce_window_max(x, k, s, d, pads))


def _reduce_window_max(x, k, s, d, pads):
    init = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
    # Init values are NumPy scalars: JAX differentiates reduce_window only for a concrete identity.
    return lax.reduce_window(
        x,
        np.array(init, x.dtype),  # concrete: JAX then picks the differentiable max-pool primitive
        lax.max,
        (1, *k, 1),
        (1, *s, 1),
        [(0, 0), *pads, (0, 0)],
        window_dilation=(1, *d, 1),
    )


def _in_bounds(size: int, lo: int, k: int, s: int, d: int, out: int) -> np.ndarray:
    """``(k, out)``: whether tap ``i`` of window ``o`` reads the input, not the padding."""
    pos = np.arange(out)[None, :] * s + np.arange(k)[:, None] * d - lo
    return (pos >= 0) & (pos < size)


@partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool_taps(x, k, s, d, pads):
    """The max of the window's taps as strided slices: one fused loop on XLA:CPU, faster
    than its ``reduce_window``. Max propagates NaN, as torch's and ``reduce_window``'s do."""
    taps, _ = window_taps(x, k, s, d, pads, -jnp.inf)
    return functools.reduce(jnp.maximum, taps)


@_max_pool_taps.defjvp
def _max_pool_jvp(k, s, d, pads, primals, tangents):
    """Tangent = the tangent at each window's first maximum (torch's argmax).

    ``which`` (int32, one per output) is all the backward pass keeps, where JAX's generic
    rule keeps four int32 index maps; its transpose is a sum of strided pads. ``which`` is
    materialised: XLA:CPU otherwise re-computes it from the input's taps inside the
    transposed pads, once per window that covers an input element.
    """
    (x,), (dx,) = primals, tangents
    taps, out_hw = window_taps(x, k, s, d, pads, -jnp.inf)
    y = functools.reduce(jnp.maximum, taps)
    rows, cols = (
        _in_bounds(x.shape[1 + a], pads[a][0], k[a], s[a], d[a], out_hw[a]) for a in (0, 1)
    )
    # torch's argmax as torch finds it: a running maximum that a tap replaces when it is
    # larger (`val > max`) or NaN (`|| isnan(val)`), from each window's first input position.
    # Not `tap == y`: under jit XLA may compute the pool's input (a BatchNorm and ReLU) again
    # in each fusion that reads it, and in float64 the copies can differ in the last bit
    # (measured: y and the taps 4e-16 apart); then no tap, or not the maximal one, equals y
    # and the gradient went astray (Inception-V3's float64 training step was 1.08 of its
    # largest gradient away from torch's). A comparison of taps with taps cannot miss.
    first = np.zeros(out_hw, np.int32)
    for t in reversed(range(len(taps))):
        first = np.where(np.outer(rows[t // k[1]], cols[t % k[1]]), t, first)
    which = jnp.broadcast_to(jnp.asarray(first[None, :, :, None], jnp.int32), y.shape)
    best = jnp.full(y.shape, -jnp.inf, x.dtype)
    for t, tap in enumerate(taps):
        take = (tap > best) | jnp.isnan(tap)
        inside = np.outer(rows[t // k[1]], cols[t % k[1]])
        if not inside.all():  # only windows at a padded edge can pick a padding position
            take = take & inside[None, :, :, None]
        which = jnp.where(take, t, which)
        best = jnp.where(take, tap, best)
    which = materialize(which)
    dtaps, _ = window_taps(dx, k, s, d, pads)
    return y, lax.select_n(which, *dtaps)
