"""ConvNeXt: Liu et al., "A ConvNet for the 2020s", CVPR 2022 (arXiv:2201.03545).

A patchify stem (4x4/4 conv + LayerNorm), four stages of inverted-bottleneck
blocks (7x7 depthwise conv, LayerNorm, Linear 4x, GELU, Linear, layer scale,
stochastic depth) with 2x2/2 conv downsampling between them, then global
average pooling, LayerNorm and the classifier.

Submodule names follow timm (``stem_0``, ``stages_1/downsample_1``,
``stages_2/blocks_3/mlp/fc1``, ``gamma``, ``head/norm``, ``head/fc``);
torchvision's ``features.N`` / ``block.N`` / ``layer_scale`` names are renamed in
``flaxcnn.convert.convnext``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    smallest_side,
    stage_info,
)
from ..layers.params import shaped_param
from ..layers.transformer import Mlp

__all__ = ["ConvNeXt", "ConvNeXtBlock", "ConvNeXtStage"]

ModuleDef = Callable[..., nn.Module]
# Truncated normal, std 0.02, as both torch implementations initialise convs and linears.
_trunc_normal = nn.initializers.truncated_normal(0.02)


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> LayerNorm -> Linear 4C -> GELU -> Linear C -> layer scale -> + input."""

    conv: ModuleDef
    dense: ModuleDef
    norm: ModuleDef
    kernel_size: int = 7
    mlp_ratio: int = 4
    ls_init_value: float = 1e-6
    drop_path: float = 0.0
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        y = self.conv(c, self.kernel_size, padding=self.kernel_size // 2, groups=c, name="conv_dw")(
            x
        )
        y = self.norm(name="norm")(y)
        y = Mlp(self.mlp_ratio * c, dense=self.dense, name="mlp")(y)
        gamma = shaped_param(
            self, "gamma", nn.initializers.constant(self.ls_init_value), (c,), self.param_dtype
        )
        # Not cast to the compute dtype: under bf16 compute with float32 parameters the
        # product, and so the residual stream, stays float32, as under torch autocast (its
        # float32 layer scale promotes the branch). A bf16 stream would round away much of
        # the small update each layer-scaled branch adds.
        y = y * gamma
        return DropPath(self.drop_path, name="drop_path")(y, train=train) + x


class ConvNeXtStage(nn.Module):
    """Optional downsample (LayerNorm + 2x2/2 conv, ``downsample_0/1``), then ``blocks_j``."""

    features: int
    depth: int
    conv: ModuleDef
    dense: ModuleDef
    norm: ModuleDef
    downsample: bool = True
    ls_init_value: float = 1e-6
    drop_paths: Sequence[float] = ()
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if self.downsample:
            x = self.norm(name="downsample_0")(x)
            x = self.conv(self.features, 2, 2, name="downsample_1")(x)
        for j in range(self.depth):
            x = ConvNeXtBlock(
                self.conv,
                self.dense,
                self.norm,
                ls_init_value=self.ls_init_value,
                drop_path=self.drop_paths[j] if self.drop_paths else 0.0,
                param_dtype=self.param_dtype,
                name=f"blocks_{j}",
            )(x, train=train)
        return x


class ClassifierHead(nn.Module):
    """timm's ``NormMlpClassifierHead`` (no hidden layer) after its pool: LayerNorm, Linear."""

    num_classes: int
    norm: ModuleDef
    dense: ModuleDef
    drop_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = self.norm(name="norm")(x)
        if self.num_classes == 0:
            return x
        x = Dropout(self.drop_rate, name="drop")(x, train=train)
        return self.dense(self.num_classes, name="fc")(x)


class ConvNeXt(FeatureMixin, nn.Module):
    """ConvNeXt in NHWC, timm's and torchvision's architecture (they agree exactly).

    Attributes:
        depths: blocks per stage (``(3, 3, 9, 3)`` for ConvNeXt-T).
        dims: channels per stage.
        num_classes: classifier outputs; ``0`` returns the pooled, normalised features
            (timm's pre-logits: pool, then ``head.norm``); with ``global_pool=''`` the
            unpooled last stage's map (timm's ``forward_features``, no ``head.norm``).
        in_chans: input channels.
        features_only: return the maps ``[stages.0, ..., stages.3]`` (strides 4, 8, 16, 32)
            selected by ``out_indices`` (``None``: all), and build no ``head``.
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (none).
        ls_init_value: initial layer scale (``gamma``), 1e-6 as in the paper.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linear over blocks up to this rate
            (torchvision trains T/S/B/L with 0.1/0.4/0.5/0.5; timm defaults to 0).
        ln_eps: LayerNorm epsilon (1e-6 in both torch libraries, not torch's 1e-5 default).
        depthwise_impl: how the 7x7 depthwise convs run (:class:`~flaxcnn.layers.Conv2d`):
            ``'auto'`` as :func:`flaxcnn.kernels` says (shifted slices on XLA:CPU), else as named.
        dtype, param_dtype: computation and parameter dtypes. With ``dtype=jnp.bfloat16``
            and float32 parameters the residual stream (and so ``features_only`` maps) is
            float32, as under torch autocast; the logits are bf16.
    """

    depths: Sequence[int] = (3, 3, 9, 3)
    dims: Sequence[int] = (96, 192, 384, 768)
    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    ls_init_value: float = 1e-6
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    ln_eps: float = 1e-6
    depthwise_impl: str = "auto"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        n = len(self.dims)
        return stage_info(
            self.dims, [4 * 2**i for i in range(n)], [f"stages.{i}" for i in range(n)]
        )

    @property
    def min_input_size(self) -> int:
        """32 for four stages: the 4x4/4 patchify stem and each later stage's 2x2/2
        downsampling conv, all unpadded."""
        return smallest_side([(4, 4, 0)] + [(2, 2, 0)] * (len(self.depths) - 1))

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        if len(self.depths) != len(self.dims):
            raise ValueError(f"depths {self.depths} and dims {self.dims} must have the same length")
        check_image_input(x, self)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = partial(Conv2d, kernel_init=_trunc_normal, depthwise_impl=self.depthwise_impl, **dt)
        dense = partial(nn.Dense, kernel_init=_trunc_normal, **dt)
        norm = partial(LayerNorm, eps=self.ln_eps, **dt)

        x = conv(self.dims[0], 4, 4, name="stem_0")(x)
        x = norm(name="stem_1")(x)
        total = sum(self.depths)
        rates = [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        start = 0
        feats = []
        for i, (depth, dim) in enumerate(zip(self.depths, self.dims, strict=True)):
            x = ConvNeXtStage(
                dim,
                depth,
                conv,
                dense,
                norm,
                downsample=i > 0,
                ls_init_value=self.ls_init_value,
                drop_paths=tuple(rates[start : start + depth]),
                param_dtype=self.param_dtype,
                name=f"stages_{i}",
            )(x, train=train)
            start += depth
            feats.append(x)
        if self.features_only:
            return self._select_features(feats)
        x = self._pool(x)
        if self.num_classes == 0 and self.global_pool == "":
            return x
        return ClassifierHead(self.num_classes, norm, dense, self.drop_rate, name="head")(
            x, train=train
        )


_PAPER = "Liu et al., A ConvNet for the 2020s, CVPR 2022"


_register = variants(
    ConvNeXt,
    family="convnext",
    sources=("torchvision", "timm"),
    classifier="head.fc",
    first_conv="stem.0",
    paper=_PAPER,
)
ConvNeXtTiny = _register("convnext_tiny", {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768)})
ConvNeXtSmall = _register("convnext_small", {"depths": (3, 3, 27, 3), "dims": (96, 192, 384, 768)})
ConvNeXtBase = _register("convnext_base", {"depths": (3, 3, 27, 3), "dims": (128, 256, 512, 1024)})
ConvNeXtLarge = _register(
    "convnext_large", {"depths": (3, 3, 27, 3), "dims": (192, 384, 768, 1536)}
)
