"""Activation functions by name, each matching its torch counterpart exactly."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..xla import materialize

__all__ = ["ACTIVATIONS", "get_act", "hard_sigmoid", "hard_swish", "quick_gelu", "relu", "relu6"]


@jax.custom_jvp
def relu(x: jax.Array) -> jax.Array:
    """``torch.nn.ReLU``, values and gradients: what ``"relu"`` means everywhere in flaxcnn.

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


# torch's Hardsigmoid backward multiplies by ``1.0f / 6.0f``, a float32 constant, in every
# dtype and on every backend (its CPU and CUDA kernels): 3e-8 relative from 1/6, which a
# float64 gradient check sees (torchvision MobileNetV3-Small: 1e-10 of the largest gradient).
_TORCH_ONE_SIXTH = float(np.float32(1.0) / np.float32(6.0))


@jax.custom_jvp
def hard_sigmoid(x: jax.Array) -> jax.Array:
    """``torch.nn.Hardsigmoid``: relu6(x + 3) / 6 (jax.nn.hard_sigmoid is the same formula),
    with torch's derivative: ``dx * float32(1/6)`` strictly inside (-3, 3), computed in the
    wider of float32 and ``x``'s dtype, and 0 elsewhere (also at -3 and 3, where JAX's
    derivative of the clip would give 1/12, and at NaN)."""
    return relu6(x + 3.0) / 6.0


@hard_sigmoid.defjvp
def _hard_sigmoid_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    acc = jnp.promote_types(dx.dtype, jnp.float32)
    scaled = (dx.astype(acc) * jnp.asarray(_TORCH_ONE_SIXTH, acc)).astype(dx.dtype)
    return hard_sigmoid(x), jnp.where((x > -3) & (x < 3), scaled, jnp.zeros_like(dx))


def hard_swish(x: jax.Array) -> jax.Array:
    """``torch.nn.Hardswish``: x * relu6(x + 3) / 6. Not ``x * hard_sigmoid(x)``: torch's
    Hardswish derivative is ``x / 3 + 1/2`` in the input's precision, without Hardsigmoid's
    float32 1/6."""
    return x * relu6(x + 3.0) / 6.0


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's ``QuickGELU``: ``x * sigmoid(1.702 x)``, the sigmoid approximation of
    GELU its weights were trained with (exact GELU would shift every block's output)."""
    return x * jax.nn.sigmoid(1.702 * x)


def gelu(x: jax.Array) -> jax.Array:
    """``torch.nn.GELU()``: the exact erf form (jax.nn.gelu defaults to the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": relu,
    "relu6": relu6,
    "hard_swish": hard_swish,
    "hard_sigmoid": hard_sigmoid,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": gelu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": quick_gelu,
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
