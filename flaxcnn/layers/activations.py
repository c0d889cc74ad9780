"""Activation functions by name, each matching its torch counterpart exactly."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "get_act", "hard_sigmoid", "hard_swish", "relu6"]


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
