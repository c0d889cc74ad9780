"""What a model's ``init`` and ``apply`` take, for code that builds any registered model.

Image models take one NHWC batch. A model whose inputs differ (CLIP: images and token
ids) defines ``example_inputs(input_shape)``; converters, the NNX wrapper and the tests
ask :func:`example_inputs` rather than assuming one image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["example_inputs"]


def example_inputs(module: Any, input_shape: Sequence[int]) -> tuple[jax.Array, ...]:
    """Zero arguments for ``module.init``/``apply``: ``module.example_inputs(input_shape)``
    where the module defines it, else one float32 image batch of ``input_shape``
    ``(N, H, W, C)``."""
    make = getattr(module, "example_inputs", None)
    return tuple(make(input_shape)) if make is not None else (jnp.zeros(input_shape, jnp.float32),)
