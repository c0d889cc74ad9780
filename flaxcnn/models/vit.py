"""Vision Transformer: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale", ICLR 2021 (arXiv:2010.11929), as timm defines it.

The image is cut into ``patch_size`` squares by a strided conv (``patch_embed/proj``), a
learned class token is prepended and learned position embeddings added (``cls_token``,
``pos_embed``, timm's "embed class" layout: the class token has its own position), then
``depth`` pre-norm blocks (LayerNorm, multi-head attention, residual; LayerNorm, MLP,
residual), a final LayerNorm and the classifier on the class token.

Any input size works, as timm's ``dynamic_img_size=True``: the patch grid is
``(H / patch, W / patch)`` (sides must be multiples of the patch, as timm asserts, unless
``dynamic_img_pad`` pads them on the bottom and right with zeros, as timm's does) and the
position embeddings of the patches are resampled to it with torch's bicubic ``antialias=True`` interpolation,
exactly as timm's ``resample_abs_pos_embed`` does; at the trained size they are used as
stored. Submodule names are timm's (``blocks_3/attn/qkv``, ``blocks_3/mlp/fc1``, ``head``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import variants
from ..layers import (
    Conv2d,
    Dropout,
    DropPath,
    FeatureMixin,
    LayerNorm,
    check_image_input,
    interpolate,
    pair,
    stage_info,
)
from ..layers.params import shaped_param
from ..layers.transformer import Attention, LayerScale, Mlp, trunc_normal

__all__ = ["Block", "VisionTransformer", "resample_pos_embed"]

VIT_POOLS = ("token", "avg", "max", "avgmax", "")


def resample_pos_embed(
    pos_embed: jax.Array, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int
) -> jax.Array:
    """timm's ``resample_abs_pos_embed``: the ``(1, prefix + h*w, C)`` embeddings with the
    patch part resized from ``old_grid`` to ``new_grid`` (bicubic, ``antialias=True``, in
    the wider of float32 and its dtype); the prefix (class token) part is kept."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    c = grid.shape[-1]
    acc = jnp.promote_types(grid.dtype, jnp.float32)
    grid = grid.reshape(1, *old_grid, c).astype(acc)
    grid = interpolate(grid, size=tuple(new_grid), mode="bicubic", antialias=True)
    grid = grid.reshape(1, new_grid[0] * new_grid[1], c).astype(pos_embed.dtype)
    return jnp.concatenate([prefix, grid], axis=1)


class Block(nn.Module):
    """timm's ``Block``: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    init_values: float | None = None
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    drop_path: float = 0.0
    act_layer: str = "gelu"
    ln_eps: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        c = x.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = partial(LayerNorm, eps=self.ln_eps, **dt)

        def scaled(y, name):
            if self.init_values is None:
                return y
            return LayerScale(self.init_values, self.param_dtype, name=name)(y)

        y = Attention(
            self.num_heads, self.qkv_bias, self.attn_drop, self.proj_drop, name="attn", **dt
        )(norm(name="norm1")(x), mask, train=train)
        x = x + DropPath(self.drop_path, name="drop_path1")(scaled(y, "ls1"), train=train)
        y = Mlp(int(c * self.mlp_ratio), self.act_layer, self.proj_drop, name="mlp", **dt)(
            norm(name="norm2")(x), train=train
        )
        return x + DropPath(self.drop_path, name="drop_path2")(scaled(y, "ls2"), train=train)


class VisionTransformer(FeatureMixin, nn.Module):
    """ViT in NHWC, timm's ``VisionTransformer`` with a class token and learned position
    embeddings (``dynamic_img_size`` semantics: any input at least one patch large).

    Attributes:
        img_size: the size the position embeddings are stored for (``(H, W)`` or one int).
        patch_size: side of the square patches (also the stride of the feature maps).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the transformer's shape.
        init_values: layer scale (``ls1``/``ls2`` ``gamma``) initial value; ``None``: none.
        num_classes: classifier outputs; ``0``: the pooled features (the class token after
            ``norm``); with ``global_pool=''`` the normalised tokens ``(N, 1 + h*w, C)``
            (timm's ``forward_features``).
        in_chans: input channels.
        dynamic_img_pad: zero-pad inputs whose sides are not multiples of ``patch_size`` on
            the bottom and right (timm's ``dynamic_img_pad``); otherwise they are refused.
        global_pool: ``'token'`` (the class token), ``'avg'``, ``'max'``, ``'avgmax'``
            (over the patch tokens) or ``''`` (no pooling, only with ``num_classes=0``).
        fc_norm: put the final LayerNorm after the pool (``fc_norm``) instead of before it
            (``norm``); ``None``: as timm, for the ``avg``-like pools.
        features_only: return the patch tokens of the blocks picked by ``out_indices`` as
            NHWC maps ``(N, H // patch, W // patch, C)`` (no final norm, as timm's
            ``features_only``); blocks after the last picked one are not built.
        out_indices: block indices for ``features_only``; timm's default is the last three.
        drop_rate, pos_drop_rate, attn_drop_rate, proj_drop_rate, drop_path_rate: dropout of
            the head input, after the position embeddings, of the attention weights, after
            each projection/MLP, and stochastic depth (linear over blocks up to this rate).
        ln_eps: LayerNorm epsilon (timm's ViTs use 1e-6).
        act_layer: the MLP activation (``'gelu'``, exact).
        dtype, param_dtype: computation and parameter dtypes.
    """

    img_size: int | Sequence[int] = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    init_values: float | None = None
    num_classes: int = 1000
    in_chans: int = 3
    dynamic_img_pad: bool = False
    global_pool: str = "token"
    fc_norm: bool | None = None
    features_only: bool = False
    out_indices: Sequence[int] | None = (-3, -2, -1)
    drop_rate: float = 0.0
    pos_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    ln_eps: float = 1e-6
    act_layer: str = "gelu"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    num_prefix_tokens = 1  # the class token

    def _stage_info(self) -> list[dict[str, Any]]:
        d = self.depth
        return stage_info(
            [self.embed_dim] * d, [self.patch_size] * d, [f"blocks.{i}" for i in range(d)]
        )

    @property
    def grid_size(self) -> tuple[int, int]:
        """The patch grid the position embeddings are stored for."""
        h, w = pair(self.img_size)
        return h // self.patch_size, w // self.patch_size

    def _pooled(self, x: jax.Array) -> jax.Array:
        if self.global_pool == "token":
            return x[:, 0]
        patches = x[:, self.num_prefix_tokens :]
        if self.global_pool == "avg":
            return jnp.mean(patches, axis=1)
        if self.global_pool == "max":
            return jnp.max(patches, axis=1)
        return 0.5 * (jnp.mean(patches, axis=1) + jnp.max(patches, axis=1))

    @property
    def min_input_size(self) -> int:
        """One patch; with ``dynamic_img_pad`` any size, padded up to one."""
        return 1 if self.dynamic_img_pad else self.patch_size

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        if self.global_pool not in VIT_POOLS:
            raise ValueError(f"global_pool must be one of {VIT_POOLS}, got {self.global_pool!r}")
        if self.num_classes and self.global_pool == "":
            raise ValueError(
                "global_pool='' returns the unpooled tokens and needs num_classes=0, "
                f"got num_classes={self.num_classes}"
            )
        check_image_input(x, self)
        n, h, w, _ = x.shape
        p = self.patch_size
        if self.dynamic_img_pad:
            x = jnp.pad(x, ((0, 0), (0, -h % p), (0, -w % p), (0, 0)))
        elif h % p or w % p:
            raise ValueError(
                f"{type(self).__name__}: input {h}x{w} is not a multiple of the patch size {p} "
                "(as timm, which asserts it); crop or resize it, or pass dynamic_img_pad=True "
                "to zero-pad the bottom and right"
            )
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = partial(LayerNorm, eps=self.ln_eps, **dt)

        x = _PatchEmbed(self.embed_dim, p, name="patch_embed", **dt)(x)
        grid = x.shape[1:3]
        x = x.reshape(n, grid[0] * grid[1], self.embed_dim)

        c = self.embed_dim
        cls_token = shaped_param(
            self, "cls_token", nn.initializers.normal(1e-6), (1, 1, c), self.param_dtype
        )
        pos_embed = shaped_param(
            self,
            "pos_embed",
            trunc_normal,
            (1, self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1], c),
            self.param_dtype,
        )
        pos_embed = resample_pos_embed(pos_embed, self.grid_size, grid, self.num_prefix_tokens)
        x = jnp.concatenate([jnp.broadcast_to(cls_token.astype(x.dtype), (n, 1, c)), x], axis=1)
        x = x + pos_embed.astype(x.dtype)
        x = Dropout(self.pos_drop_rate, name="pos_drop")(x, train=train)

        picked = self._select_features(list(range(self.depth))) if self.features_only else None
        last = picked[-1] if picked else self.depth - 1
        rates = [self.drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]
        feats = []
        for i in range(last + 1):
            x = Block(
                self.num_heads,
                self.mlp_ratio,
                self.qkv_bias,
                self.init_values,
                self.attn_drop_rate,
                self.proj_drop_rate,
                rates[i],
                self.act_layer,
                self.ln_eps,
                name=f"blocks_{i}",
                **dt,
            )(x, train=train)
            if picked and i in picked:
                feats.append(x[:, self.num_prefix_tokens :].reshape(n, *grid, c))
        if self.features_only:
            return feats

        use_fc_norm = (
            self.global_pool in ("avg", "max", "avgmax") if self.fc_norm is None else self.fc_norm
        )
        if not use_fc_norm:
            x = norm(name="norm")(x)
        if self.global_pool == "":
            return x
        x = self._pooled(x)
        if use_fc_norm:
            x = norm(name="fc_norm")(x)
        if self.num_classes == 0:
            return x
        x = Dropout(self.drop_rate, name="head_drop")(x, train=train)
        return nn.Dense(self.num_classes, kernel_init=trunc_normal, name="head", **dt)(x)


class _PatchEmbed(nn.Module):
    """timm's ``PatchEmbed``: a ``patch x patch`` conv with stride ``patch`` (``proj``)."""

    embed_dim: int
    patch_size: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.patch_size
        return Conv2d(
            self.embed_dim, p, p, dtype=self.dtype, param_dtype=self.param_dtype, name="proj"
        )(x)


_PAPER = (
    "Dosovitskiy et al., An Image is Worth 16x16 Words: Transformers for Image Recognition "
    "at Scale, ICLR 2021"
)

# timm builds these with dynamic_img_size=True for the odd-size proof: the same weights,
# position embeddings resampled to the input's patch grid, as this module always does.
_register = variants(
    VisionTransformer,
    family="vit",
    sources=("timm",),
    classifier="head",
    first_conv="patch_embed.proj",
    paper=_PAPER,
    torch_kwargs={"dynamic_img_size": True},
)


def _vit(size: str, patch: int, img: int = 224, **config: Any) -> Any:
    width, depth, heads = {
        "tiny": (192, 12, 3),
        "small": (384, 12, 6),
        "base": (768, 12, 12),
        "large": (1024, 24, 16),
    }[size]
    shape = dict(patch_size=patch, embed_dim=width, depth=depth, num_heads=heads)
    return _register(
        f"vit_{size}_patch{patch}_{img}",
        {**shape, "img_size": img, **config},
        input_size=(img, img, 3),
        # timm's ViTs run only on multiples of the patch: a 7x11 patch grid (5x7 for /32)
        verify_size=(7 * patch, 11 * patch) if patch == 16 else (5 * patch, 7 * patch),
    )


ViTTinyPatch16_224 = _vit("tiny", 16)
ViTSmallPatch16_224 = _vit("small", 16)
ViTSmallPatch32_224 = _vit("small", 32)
ViTBasePatch16_224 = _vit("base", 16)
ViTBasePatch32_224 = _vit("base", 32)
ViTLargePatch16_224 = _vit("large", 16)
