"""Transformer pieces with timm's names and torch's arithmetic, on ``(N, L, C)`` tokens.

``Attention`` is timm's (and, with the same ``qkv``/``proj`` weights, OpenAI CLIP's
``nn.MultiheadAttention`` after renaming): one linear ``qkv`` producing queries, keys and
values for every head, scaled dot-product attention, and the output projection ``proj``.
``Mlp`` is timm's two-layer MLP (``fc1``, activation, ``fc2``). ``LayerScale`` is timm's
per-channel ``gamma`` on a residual branch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .activations import get_act
from .drop import Dropout
from .params import shaped_param

__all__ = ["Attention", "LayerScale", "Mlp", "dot_product_attention"]

# timm initialises every transformer linear with a truncated normal of std 0.02.
trunc_normal = nn.initializers.truncated_normal(0.02)


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None = None,
    dropout: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """softmax(q kᵀ / √d + mask) v over ``(N, heads, L, d)``, the softmax in the wider of
    float32 and the compute dtype (as torch's ``scaled_dot_product_attention``).

    ``mask`` is additive, broadcastable to ``(N, heads, L, L)`` (``-inf`` where a query
    may not look, as OpenAI CLIP's causal mask); ``dropout`` is applied to the attention
    weights (timm's ``attn_drop``)."""
    acc = jnp.promote_types(q.dtype, jnp.float32)
    scale = q.shape[-1] ** -0.5
    scores = jnp.einsum("nhqd,nhkd->nhqk", q * jnp.asarray(scale, q.dtype), k)
    scores = scores.astype(acc)
    if mask is not None:
        scores = scores + mask.astype(acc)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    if dropout is not None:
        weights = dropout(weights)
    return jnp.einsum("nhqk,nhkd->nhqd", weights, v)


class Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` (C -> 3C), heads, ``proj`` (C -> C).

    timm's ``qkv`` output is laid out ``(3, heads, head_dim)``: the first C channels are
    the queries of every head, then the keys, then the values, which is also how
    ``nn.MultiheadAttention``'s ``in_proj_weight`` stacks them.
    """

    num_heads: int
    qkv_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = trunc_normal

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        n, length, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"embedding width {c} is not divisible by {self.num_heads} heads")
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init)
        qkv = nn.Dense(3 * c, use_bias=self.qkv_bias, name="qkv", **dense)(x)
        qkv = qkv.reshape(n, length, 3, self.num_heads, c // self.num_heads)
        q, k, v = jnp.moveaxis(qkv, (2, 3), (0, 2))  # each (N, heads, L, d)
        drop = Dropout(self.attn_drop, name="attn_drop")
        y = dot_product_attention(q, k, v, mask, lambda w: drop(w, train=train))
        y = jnp.moveaxis(y, 1, 2).reshape(n, length, c)
        y = nn.Dense(c, name="proj", **dense)(y)
        return Dropout(self.proj_drop, name="proj_drop")(y, train=train)


class Mlp(nn.Module):
    """timm's ``Mlp``: Linear ``fc1`` (C -> hidden), activation, dropout, Linear ``fc2``
    (ViT's blocks; ConvNeXt's on channels-last maps, whose linears it passes as ``dense``)."""

    hidden: int
    act_layer: str | Callable = "gelu"
    drop: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = trunc_normal
    dense: Callable[..., nn.Module] | None = None  # default: nn.Dense with the fields above

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        dense = self.dense or partial(
            nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init
        )
        out = x.shape[-1]
        x = get_act(self.act_layer)(dense(self.hidden, name="fc1")(x))
        x = Dropout(self.drop, name="drop1")(x, train=train)
        x = dense(out, name="fc2")(x)
        return Dropout(self.drop, name="drop2")(x, train=train)


class LayerScale(nn.Module):
    """timm's ``LayerScale``: ``x * gamma``, one learned scale per channel."""

    init_values: float = 1e-5
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        gamma = shaped_param(
            self, "gamma", nn.initializers.constant(self.init_values), (c,), self.param_dtype
        )
        return x * gamma.astype(x.dtype)
