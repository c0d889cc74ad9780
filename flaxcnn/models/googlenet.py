"""GoogLeNet (Inception v1): Szegedy et al., "Going Deeper with Convolutions", CVPR 2015
(arXiv:1409.4842), in torchvision's form and as published.

``googlenet`` is torchvision's version, kept for weight compatibility: every conv is a
:class:`~flaxcnn.layers.BasicConv2d` (conv, BN with eps 1e-3, ReLU); the "5x5" branch
of each Inception module uses a 3x3 conv (torchvision's choice, which its weights
carry); max pools use ``ceil_mode=True``. Two auxiliary classifiers (``aux1`` after
inception4a, ``aux2`` after inception4d) run only in train mode, where the model
returns ``(logits, aux2_logits, aux1_logits)`` -- torchvision's ``GoogLeNetOutputs``
order; in eval mode it returns the logits alone.

``googlenet_paper`` is the network of the paper's Table 1 and Figure 3, which predates
BatchNorm: convs with biases and ReLU, local response normalisation after the stem's first
pool and after ``conv3`` (size 5, alpha 1e-4 in torch's convention, beta 0.75, k 1: the
constants of the BVLC Caffe model the paper's authors released), 5x5 convs in the 5x5
branches, dropout 0.4, and auxiliary heads that average-pool 5x5 with stride 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import register_model
from ..layers import (
    BasicConv2d,
    Dropout,
    FeatureMixin,
    adaptive_avg_pool2d,
    avg_pool2d,
    check_image_input,
    local_response_norm,
    max_pool2d,
    smallest_side,
    stage_info,
)

__all__ = ["GoogLeNet", "Inception", "InceptionAux", "transform_input"]


def transform_input(x: jax.Array) -> jax.Array:
    """torchvision's ``transform_input``: re-normalise an ImageNet-normalised NHWC batch
    to the (x - 0.5) / 0.5 scaling Google's original weights were trained with."""
    mean = jnp.asarray([0.485, 0.456, 0.406], x.dtype)
    std = jnp.asarray([0.229, 0.224, 0.225], x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


class Inception(nn.Module):
    """Four branches concatenated: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | 3x3 max pool -> 1x1."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    conv: Any = BasicConv2d
    branch3_kernel: int = 3

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        b1 = self.conv(self.ch1x1, 1, name="branch1")(x, train=train)
        b2 = self.conv(self.ch3x3red, 1, name="branch2_0")(x, train=train)
        b2 = self.conv(self.ch3x3, 3, padding=1, name="branch2_1")(b2, train=train)
        b3 = self.conv(self.ch5x5red, 1, name="branch3_0")(x, train=train)
        # 3x3 by default, not the paper's 5x5: torchvision's architecture (and weights).
        k = self.branch3_kernel
        b3 = self.conv(self.ch5x5, k, padding=k // 2, name="branch3_1")(b3, train=train)
        b4 = max_pool2d(x, 3, 1, padding=1, ceil_mode=True)
        b4 = self.conv(self.pool_proj, 1, name="branch4_1")(b4, train=train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv to 128, FC 1024, dropout, FC.

    The pool is torchvision's adaptive one, or with ``paper_pool`` the paper's 5x5 stride 3
    (the same at 224 px, where the map is 14x14; other sizes differ).
    """

    num_classes: int
    drop_rate: float = 0.7
    conv: Any = BasicConv2d
    paper_pool: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = avg_pool2d(x, 5, 3) if self.paper_pool else adaptive_avg_pool2d(x, 4)
        x = self.conv(128, 1, name="conv")(x, train=train)
        # NHWC flatten; the converter permutes torch's (NCHW-flattened) fc1.
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(1024, name="fc1", **kw)(x))
        x = Dropout(self.drop_rate, name="dropout")(x, train=train)
        return nn.Dense(self.num_classes, name="fc2", **kw)(x)


def _check_with_aux(model: nn.Module, x: jax.Array, aux_runs: bool) -> None:
    """The input check of a model with aux heads (GoogLeNet, Inception v3), whose minimum
    is ``model._min_side(aux_runs)``: where the heads raise it, the error says how to
    avoid them."""
    smallest, without = model._min_side(aux_runs), model._min_side(False)
    hint = ""
    if smallest > without:
        hint = (
            f" at init and in train mode, where its aux heads run; eval takes {without}x"
            f"{without} (aux_logits=False drops the heads)"
        )
    check_image_input(x, model, min_size=smallest, hint=hint)


# The BVLC GoogLeNet's LRN (Caffe divides alpha by the size, as torch does).
CAFFE_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)

# inception3a ... inception5b: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), Table 1.
INCEPTIONS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNet(FeatureMixin, nn.Module):
    """GoogLeNet / Inception v1, torchvision's architecture in NHWC.

    Attributes:
        num_classes: outputs; ``0`` returns the pooled 1024 features (pre-logits, and no aux
            heads); with ``global_pool=''`` the unpooled ``inception5b`` map (what timm
            calls ``forward_features``).
        features_only: return the maps ``[conv1, conv3, inception3b, inception4e,
            inception5b]`` (strides 2, 4, 8, 16, 32; each before the max pool that follows
            it) selected by ``out_indices`` (``None``: all); no ``fc`` and no aux heads.
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (none).
        aux_logits: build the two auxiliary classifiers (returned in train mode).
        transform_input: apply :func:`transform_input` first, as torchvision does for its
            pretrained weights (``googlenet(weights=...)`` turns it on).
        drop_rate: dropout before ``fc`` (0.2; the paper's 0.4); ``aux_drop_rate`` in the
            aux heads (0.7).
        batch_norm: BatchNorm after every conv (torchvision); ``False``: biased convs, as
            published.
        lrn: the paper's two local response normalisations (after the first max pool and
            after ``conv3``).
        branch3_kernel: the kernel of each Inception module's "5x5" branch: 3 (torchvision)
            or 5 (the paper).
        aux_paper_pool: the aux heads' 5x5/3 average pool of the paper instead of
            torchvision's adaptive 4x4.
        bn_eps: 1e-3, as torchvision.
    """

    num_classes: int = 1000
    in_chans: int = 3
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    global_pool: str = "avg"
    aux_logits: bool = True
    transform_input: bool = False
    drop_rate: float = 0.2
    aux_drop_rate: float = 0.7
    batch_norm: bool = True
    lrn: bool = False
    branch3_kernel: int = 3
    aux_paper_pool: bool = False
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        names = ["conv1", "conv3", "inception3b", "inception4e", "inception5b"]
        chans = [64, 192] + [sum(INCEPTIONS[n][i] for i in (0, 2, 4, 5)) for n in names[2:]]
        return stage_info(chans, [2, 4, 8, 16, 32], names)

    @property
    def _aux(self) -> bool:
        """Whether the aux heads are built (at init; computed in train mode)."""
        return self.aux_logits and self.num_classes > 0 and not self.features_only

    def _min_side(self, aux: bool) -> int:
        # conv1 7x7/2 and the ceil-mode max pools: 3x3/2 after conv1, before inception3a and
        # 4a, and 2x2/2 before 5a (the rest is padded).
        to_4a = [(7, 2, 3), (3, 2, 0, True), (3, 2, 0, True), (3, 2, 0, True)]
        side = smallest_side([*to_4a, (2, 2, 0, True)])
        if aux and self.aux_paper_pool:  # the paper's 5x5/3 pool of inception4a's map
            side = max(side, smallest_side([*to_4a, (5, 3, 0)]))
        return side

    @property
    def min_input_size(self) -> int:
        """15, or with the paper's aux pool 79 (its 5x5 window on the stride-16 map) at
        init and in train mode, where the aux heads run; eval takes 15."""
        return self._min_side(self._aux)

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False
    ) -> jax.Array | list[jax.Array] | tuple[jax.Array, jax.Array, jax.Array]:
        _check_with_aux(self, x, self._aux and (train or self.is_initializing()))
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = partial(
            BasicConv2d,
            batch_norm=self.batch_norm,
            bn_eps=self.bn_eps,
            bn_momentum=self.bn_momentum,
            **kw,
        )
        aux = self._aux
        if self.transform_input:
            x = transform_input(x)
        x = conv(64, 7, 2, padding=3, name="conv1")(x, train=train)
        feats = [x]
        x = max_pool2d(x, 3, 2, ceil_mode=True)
        if self.lrn:
            x = local_response_norm(x, **CAFFE_LRN)
        x = conv(64, 1, name="conv2")(x, train=train)
        x = conv(192, 3, padding=1, name="conv3")(x, train=train)
        if self.lrn:
            x = local_response_norm(x, **CAFFE_LRN)
        feats.append(x)
        x = max_pool2d(x, 3, 2, ceil_mode=True)
        aux_out = {}
        for name, cfg in INCEPTIONS.items():
            x = Inception(*cfg, conv=conv, branch3_kernel=self.branch3_kernel, name=name)(
                x, train=train
            )
            if name in ("inception3b", "inception4e"):
                feats.append(x)
            if name == "inception3b":
                x = max_pool2d(x, 3, 2, ceil_mode=True)
            elif name == "inception4e":
                x = max_pool2d(x, 2, 2, ceil_mode=True)
            elif aux and name in ("inception4a", "inception4d"):
                head = "aux1" if name == "inception4a" else "aux2"
                mod = InceptionAux(
                    self.num_classes,
                    self.aux_drop_rate,
                    conv=conv,
                    paper_pool=self.aux_paper_pool,
                    name=head,
                    **kw,
                )
                # Built at init so the parameters exist; computed only in train mode.
                if train or self.is_initializing():
                    aux_out[head] = mod(x, train=train)
        if self.features_only:
            return self._select_features([*feats, x])
        x = self._pool(x)
        if self.num_classes == 0:
            return x
        x = Dropout(self.drop_rate, name="dropout")(x, train=train)
        x = nn.Dense(self.num_classes, name="fc", **kw)(x)
        if train and aux:
            return x, aux_out["aux2"], aux_out["aux1"]
        return x


InceptionV1 = register_model(
    "googlenet",
    GoogLeNet,
    family="googlenet",
    sources=("torchvision",),
    classifier="fc",
    first_conv="conv1.conv",
    paper="Szegedy et al., Going Deeper with Convolutions, CVPR 2015",
)
GoogLeNetPaper = register_model(
    "googlenet_paper",
    GoogLeNet,
    {
        "batch_norm": False,
        "lrn": True,
        "branch3_kernel": 5,
        "aux_paper_pool": True,
        "drop_rate": 0.4,
    },
    family="googlenet",
    classifier="fc",
    first_conv="conv1.conv",
    paper="Szegedy et al., Going Deeper with Convolutions, CVPR 2015 (Table 1, as published)",
)
