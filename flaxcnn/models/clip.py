"""CLIP: Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021 (arXiv:2103.00020), as OpenAI released it.

An image tower and a text tower map images and texts into one embedding space; the
cosine similarity of the normalised embeddings, times ``exp(logit_scale)``, is the
logit of an (image, text) pair. Both OpenAI's ``clip`` package and ``open_clip``'s
``-quickgelu`` models build exactly this architecture with the same parameter names,
which the Flax names here follow (``visual/layer1_0/conv1``,
``transformer/resblocks_3/attn/in_proj_weight``, ``text_projection``).

* Image tower, ResNet (RN50 ... RN50x64): OpenAI's ``ModifiedResNet`` -- a three-conv stem
  with an average pool, bottlenecks whose stride-2 convs are replaced by an average pool
  before the last 1x1 ("anti-aliased" downsampling, also on the shortcut), and attention
  pooling (one query, the mean of the map, attending over all positions) instead of the
  global average pool.
* Image tower, ViT (ViT-B/32 ... ViT-L/14@336px): patches, a class embedding, learned
  positions, a LayerNorm before the transformer (``ln_pre``) and after it on the class
  token (``ln_post``), then the projection ``proj``.
* Text tower: token and position embeddings, a causally masked transformer,
  ``ln_final``, the features at the end-of-text token (the largest id in each row), then
  ``text_projection``.

The transformer blocks use QuickGELU (``x * sigmoid(1.702 x)``), which OpenAI's weights
were trained with, and torch's ``nn.MultiheadAttention`` parameters (``in_proj_weight``
stacking queries, keys and values; ``out_proj``). Images are NHWC at the tower's
``image_resolution`` (the position embeddings are stored for that grid and, as in
OpenAI's code, not resampled); texts are token ids from :func:`flaxcnn.clip.tokenize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .._registry import variants
from ..layers import BatchNorm2d, Conv2d, LayerNorm, avg_pool2d, check_image_input, get_act
from ..layers.params import shaped_param
from ..layers.transformer import dot_product_attention

__all__ = [
    "CLIP",
    "AttentionPool2d",
    "ModifiedResNet",
    "MultiheadAttention",
    "ResidualAttentionBlock",
    "Transformer",
    "VisionTransformer",
]


def _normal(std: float):
    return nn.initializers.normal(std)


class MultiheadAttention(nn.Module):
    """``torch.nn.MultiheadAttention`` (self-attention, no extra key/value biases):
    ``in_proj_weight`` ``(3C, C)`` and ``in_proj_bias`` ``(3C,)`` in torch's layout, queries
    then keys then values, and the ``out_proj`` linear."""

    num_heads: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        n, length, c = x.shape
        h = self.num_heads
        w = shaped_param(self, "in_proj_weight", _normal(c**-0.5), (3 * c, c), self.param_dtype)
        b = shaped_param(self, "in_proj_bias", nn.initializers.zeros, (3 * c,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        qkv = x.astype(dtype) @ w.astype(dtype).T + b.astype(dtype)
        q, k, v = jnp.moveaxis(qkv.reshape(n, length, 3, h, c // h), (2, 3), (0, 2))
        y = jnp.moveaxis(dot_product_attention(q, k, v, mask), 1, 2).reshape(n, length, c)
        return nn.Dense(c, dtype=self.dtype, param_dtype=self.param_dtype, name="out_proj")(y)


class ResidualAttentionBlock(nn.Module):
    """``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))`` with ``mlp`` = ``c_fc``, QuickGELU,
    ``c_proj`` (4x wide)."""

    num_heads: int
    act_layer: str = "quick_gelu"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x + MultiheadAttention(self.num_heads, name="attn", **dt)(
            LayerNorm(name="ln_1", **dt)(x), mask
        )
        return x + _Mlp(self.act_layer, name="mlp", **dt)(LayerNorm(name="ln_2", **dt)(x))


class _Mlp(nn.Module):
    """CLIP's block MLP: ``c_fc`` (C -> 4C), the activation, ``c_proj`` (4C -> C)."""

    act_layer: str = "quick_gelu"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        dense = partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        return dense(c, name="c_proj")(get_act(self.act_layer)(dense(4 * c, name="c_fc")(x)))


class Transformer(nn.Module):
    """``resblocks_0 ... resblocks_{layers-1}`` on ``(N, L, C)`` tokens."""

    layers: int
    num_heads: int
    act_layer: str = "quick_gelu"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        for i in range(self.layers):
            x = ResidualAttentionBlock(
                self.num_heads,
                self.act_layer,
                self.dtype,
                self.param_dtype,
                name=f"resblocks_{i}",
            )(x, mask)
        return x


class VisionTransformer(nn.Module):
    """CLIP's ViT image tower: ``conv1`` patches (no bias), ``class_embedding``,
    ``positional_embedding``, ``ln_pre``, ``transformer``, ``ln_post`` on the class token,
    ``proj``."""

    image_resolution: int
    patch_size: int
    width: int
    layers: int
    output_dim: int
    act_layer: str = "quick_gelu"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        del train  # no BatchNorm, no dropout
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        p, c = self.patch_size, self.width
        x = Conv2d(c, p, p, use_bias=False, name="conv1", **dt)(x)
        n, gh, gw, _ = x.shape
        x = x.reshape(n, gh * gw, c)
        scale = c**-0.5
        cls = shaped_param(self, "class_embedding", _normal(scale), (c,), self.param_dtype)
        grid = self.image_resolution // p
        pos = shaped_param(
            self, "positional_embedding", _normal(scale), (grid * grid + 1, c), self.param_dtype
        )
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (n, 1, c)), x], axis=1)
        x = LayerNorm(name="ln_pre", **dt)(x + pos.astype(x.dtype))
        x = Transformer(self.layers, c // 64, self.act_layer, name="transformer", **dt)(x)
        x = LayerNorm(name="ln_post", **dt)(x[:, 0])
        proj = shaped_param(self, "proj", _normal(scale), (c, self.output_dim), self.param_dtype)
        return x @ proj.astype(x.dtype)


def _conv_bn_relu(module: nn.Module):
    """The ResNet tower's layers in ``module``'s dtypes: bias-free convs, BatchNorm, ReLU."""
    dt = dict(dtype=module.dtype, param_dtype=module.param_dtype)
    return partial(Conv2d, use_bias=False, **dt), partial(BatchNorm2d, **dt), get_act("relu")


class Bottleneck(nn.Module):
    """OpenAI's CLIP bottleneck: 1x1, 3x3, (2x2 average pool when strided), 1x1 x4; the
    shortcut, when needed, is an average pool, a 1x1 conv and a BN (``downsample_0/1``)."""

    planes: int
    stride: int = 1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        conv, norm, relu = _conv_bn_relu(self)
        out_ch = 4 * self.planes
        y = relu(norm(name="bn1")(conv(self.planes, 1, name="conv1")(x), train=train))
        y = relu(norm(name="bn2")(conv(self.planes, 3, padding=1, name="conv2")(y), train=train))
        if self.stride > 1:
            y = avg_pool2d(y, self.stride)
        y = norm(name="bn3")(conv(out_ch, 1, name="conv3")(y), train=train)
        if self.stride > 1 or x.shape[-1] != out_ch:
            if self.stride > 1:
                x = avg_pool2d(x, self.stride)
            x = norm(name="downsample_1")(conv(out_ch, 1, name="downsample_0")(x), train=train)
        return relu(y + x)


class AttentionPool2d(nn.Module):
    """Attention pooling: the mean of the ``(H*W)`` positions is prepended, position
    embeddings added, and that first token alone queries all of them (multi-head, with
    separate ``q_proj``/``k_proj``/``v_proj``); ``c_proj`` gives the output."""

    spacial_dim: int
    num_heads: int
    output_dim: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        dense = partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        pos = shaped_param(
            self,
            "positional_embedding",
            _normal(c**-0.5),
            (self.spacial_dim**2 + 1, c),
            self.param_dtype,
        )
        x = x.reshape(n, h * w, c)
        x = jnp.concatenate([jnp.mean(x, axis=1, keepdims=True), x], axis=1)
        x = x + pos.astype(x.dtype)
        heads = self.num_heads

        def split(t):  # (N, L, C) -> (N, heads, L, C / heads)
            return jnp.moveaxis(t.reshape(n, t.shape[1], heads, c // heads), 2, 1)

        q = split(dense(c, name="q_proj")(x[:, :1]))
        k = split(dense(c, name="k_proj")(x))
        v = split(dense(c, name="v_proj")(x))
        y = jnp.moveaxis(dot_product_attention(q, k, v), 1, 2).reshape(n, c)
        return dense(self.output_dim, name="c_proj")(y)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet image tower (see the module doc)."""

    layers: Sequence[int]
    output_dim: int
    num_heads: int
    image_resolution: int = 224
    width: int = 64
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        conv, norm, relu = _conv_bn_relu(self)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        w = self.width
        x = relu(norm(name="bn1")(conv(w // 2, 3, 2, padding=1, name="conv1")(x), train=train))
        x = relu(norm(name="bn2")(conv(w // 2, 3, padding=1, name="conv2")(x), train=train))
        x = relu(norm(name="bn3")(conv(w, 3, padding=1, name="conv3")(x), train=train))
        x = avg_pool2d(x, 2)
        for i, blocks in enumerate(self.layers):
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                x = Bottleneck(w * 2**i, stride, name=f"layer{i + 1}_{j}", **dt)(x, train=train)
        return AttentionPool2d(
            self.image_resolution // 32, self.num_heads, self.output_dim, name="attnpool", **dt
        )(x)


class CLIP(nn.Module):
    """OpenAI's CLIP (see the module doc); the fields are ``clip.model.CLIP``'s.

    ``module.apply(v, images, tokens)`` returns ``(logits_per_image, logits_per_text)``;
    ``method="encode_image"`` / ``"encode_text"`` the unnormalised embeddings ``(N,
    embed_dim)``. ``train=True`` runs the ResNet towers' BatchNorms on batch statistics
    (pass ``mutable=['batch_stats']``).

    Attributes:
        embed_dim: the shared embedding width.
        image_resolution: the input side the image tower is built for.
        vision_layers: bottlenecks per stage (a ResNet tower) or the number of
            transformer blocks (a ViT tower).
        vision_width: the ResNet's base width or the ViT's width (heads: width / 64 for
            the ViT, width * 32 / 64 for the attention pool, as OpenAI's ``build_model``).
        vision_patch_size: the ViT's patch side (``None`` for a ResNet tower).
        context_length, vocab_size: the text tower's sequence length and vocabulary.
        transformer_width, transformer_heads, transformer_layers: the text transformer.
        act_layer: the transformer MLP activation (QuickGELU for OpenAI's weights).
    """

    embed_dim: int = 512
    image_resolution: int = 224
    vision_layers: int | Sequence[int] = 12
    vision_width: int = 768
    vision_patch_size: int | None = 32
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12
    act_layer: str = "quick_gelu"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if isinstance(self.vision_layers, int):
            if self.vision_patch_size is None:
                raise ValueError("a ViT image tower (vision_layers an int) needs vision_patch_size")
            self.visual = VisionTransformer(
                self.image_resolution,
                self.vision_patch_size,
                self.vision_width,
                self.vision_layers,
                self.embed_dim,
                self.act_layer,
                **dt,
            )
        else:
            self.visual = ModifiedResNet(
                tuple(self.vision_layers),
                self.embed_dim,
                self.vision_width * 32 // 64,
                self.image_resolution,
                self.vision_width,
                **dt,
            )
        width = self.transformer_width
        self.transformer = Transformer(
            self.transformer_layers, self.transformer_heads, self.act_layer, **dt
        )
        self.token_embedding = nn.Embed(self.vocab_size, width, embedding_init=_normal(0.02), **dt)
        self.positional_embedding = self.param(
            "positional_embedding", _normal(0.01), (self.context_length, width), self.param_dtype
        )
        self.ln_final = LayerNorm(**dt)
        self.text_projection = self.param(
            "text_projection", _normal(width**-0.5), (width, self.embed_dim), self.param_dtype
        )
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(np.log(1 / 0.07)), (), self.param_dtype
        )

    def example_inputs(self, input_shape: Sequence[int] = (1,)) -> tuple[jax.Array, jax.Array]:
        """Zero images and token rows that ``init`` takes: ``input_shape[0]`` of each."""
        n, r = input_shape[0], self.image_resolution
        return jnp.zeros((n, r, r, 3), jnp.float32), jnp.zeros((n, self.context_length), jnp.int32)

    @property
    def min_input_size(self) -> int:
        """The image tower's ``image_resolution``: the only size it takes (see
        :meth:`encode_image`)."""
        return self.image_resolution

    def encode_image(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """``(N, R, R, 3)`` images -> ``(N, embed_dim)`` image embeddings (not normalised)."""
        check_image_input(images, self, in_chans=3)
        r = self.image_resolution
        if images.shape[1:3] != (r, r):
            raise ValueError(
                f"this CLIP image tower takes {r}x{r} images (its position embeddings are "
                f"stored for that grid), got {images.shape[1]}x{images.shape[2]}; "
                "preprocess with flaxcnn.preprocess"
            )
        return self.visual(images, train=train)

    def encode_text(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        """``(N, L)`` token ids (``L <= context_length``) -> ``(N, embed_dim)`` text
        embeddings (not normalised): the features at each row's end-of-text token, the
        largest id in it. ``train`` changes nothing (no BatchNorm or dropout here); it is
        accepted as every flaxcnn ``apply`` passes it."""
        del train
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"encode_text takes (N, L) integer token ids (flaxcnn.clip.tokenize), got "
                f"{tokens.dtype} {tuple(tokens.shape)}"
            )
        n, length = tokens.shape
        if length > self.context_length:
            raise ValueError(
                f"{length} tokens per text, more than context_length {self.context_length}"
            )
        x = self.token_embedding(tokens) + self.positional_embedding[:length].astype(
            self.dtype or self.param_dtype
        )
        causal = jnp.triu(jnp.full((length, length), -jnp.inf, jnp.float32), 1)
        x = self.ln_final(self.transformer(x, causal))
        eot = x[jnp.arange(n), jnp.argmax(tokens, axis=-1)]
        return eot @ self.text_projection.astype(eot.dtype)

    def __call__(
        self, images: jax.Array, tokens: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        """``(logits_per_image (N_img, N_txt), logits_per_text (N_txt, N_img))``: the
        cosine similarities times ``exp(logit_scale)``."""
        image = self.encode_image(images, train=train)
        text = self.encode_text(tokens, train=train)
        image = image / jnp.linalg.norm(image, axis=-1, keepdims=True)
        text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
        logits = jnp.exp(self.logit_scale).astype(image.dtype) * image @ text.T
        return logits, logits.T


_PAPER = (
    "Radford et al., Learning Transferable Visual Models From Natural Language Supervision, "
    "ICML 2021"
)

_register = variants(
    CLIP, family="clip", classifier=None, first_conv=None, paper=_PAPER, task="clip"
)


def _clip(name, openai, open_clip, embed, res, layers, width, patch, text_width, text_heads):
    return _register(
        name,
        {
            "embed_dim": embed,
            "image_resolution": res,
            "vision_layers": layers,
            "vision_width": width,
            "vision_patch_size": patch,
            "transformer_width": text_width,
            "transformer_heads": text_heads,
        },
        sources={"openai": openai, "open_clip": open_clip},
        input_size=(res, res, 3),
    )


# OpenAI's nine released models; open_clip's "-quickgelu" configs are the same networks.
CLIPRN50 = _clip("clip_rn50", "RN50", "RN50-quickgelu", 1024, 224, (3, 4, 6, 3), 64, None, 512, 8)
CLIPRN101 = _clip(
    "clip_rn101", "RN101", "RN101-quickgelu", 512, 224, (3, 4, 23, 3), 64, None, 512, 8
)
CLIPRN50x4 = _clip(
    "clip_rn50x4", "RN50x4", "RN50x4-quickgelu", 640, 288, (4, 6, 10, 6), 80, None, 640, 10
)
CLIPRN50x16 = _clip(
    "clip_rn50x16", "RN50x16", "RN50x16-quickgelu", 768, 384, (6, 8, 18, 8), 96, None, 768, 12
)
CLIPRN50x64 = _clip(
    "clip_rn50x64", "RN50x64", "RN50x64-quickgelu", 1024, 448, (3, 15, 36, 10), 128, None, 1024, 16
)
CLIPViTB32 = _clip("clip_vit_b32", "ViT-B/32", "ViT-B-32-quickgelu", 512, 224, 12, 768, 32, 512, 8)
CLIPViTB16 = _clip("clip_vit_b16", "ViT-B/16", "ViT-B-16-quickgelu", 512, 224, 12, 768, 16, 512, 8)
CLIPViTL14 = _clip(
    "clip_vit_l14", "ViT-L/14", "ViT-L-14-quickgelu", 768, 224, 24, 1024, 14, 768, 12
)
CLIPViTL14_336 = _clip(
    "clip_vit_l14_336", "ViT-L/14@336px", "ViT-L-14-336-quickgelu", 768, 336, 24, 1024, 14, 768, 12
)
