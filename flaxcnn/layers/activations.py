"""Activation functions by name, each matching its torch counterpart exactly."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ..xla import materialize

__all__ = ["ACTIVATIONS", "get_act", "hard_sigmoid", "hard_swish", "relu", "relu6"]


@jax.custom_jvp
def relu(x: jax.Array) -> jax.Array:
    """``torch.nn.ReLU``, values and gradients, for a residual stream.

    Two differences from ``jax.nn.relu``, both for XLA:CPU's training step: the derivative
    is read from the output (zero where ``y <= 0``, the same mask as ``x <= 0``; at NaN
    the gradient passes, as in torch, where ``jax.nn.relu`` zeroes it), and the output is
    kept in memory (:func:`flaxcnn.xla.materialize`). With ``jax.nn.relu``, the backward pass of
    a ResNet stage re-computed the stage's whole chain of BatchNorms, adds and ReLUs for
    each block's mask, because only the next convolution's copy of each block output was
    kept (ResNet-50 training step, batch 32: 1.06x faster, min of 12 steps;
    docs/performance-log.md).
    """
    return materialize(jnp.maximum(x, 0))


@relu.defjvp
def _relu_jvp(primals, tangents):
    y = relu(primals[0])
    (dx,) = tangents
    return y, jnp.where(y <= 0, jnp.zeros_like(dx), dx)


def relu6(x: jax.Array) -> jax.Array:
    """``torch.nn.ReLU6``: min(max(x, 0), 6)."""
    return jnp.clip(x, 0, 6)


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """``torch.nn.Hardsigmoid``: relu6(x + 3) / 6 (jax.nn.hard_sigmoid is the same formula)."""
    return relu6(x + 3.0) / 6.0


def hard_swish(x: jax.Array) -> jax.Array:
    """``torch.nn.Hardswish``: x * relu6(x + 3) / 6."""
    return x * hard_sigmoid(x)


def gelu(x: jax.Array) -> jax.Array:
    """``torch.nn.GELU()``: the exact erf form (jax.nn.gelu defaults to the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "relu6": relu6,
    "hard_swish": hard_swish,
    "hard_sigmoid": hard_sigmoid,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": gelu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "identity": lambda x: x,
}


def get_act(name: str | Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """Look an activation up by name (a callable is returned unchanged)."""
    if callable(name):
        return name
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None
