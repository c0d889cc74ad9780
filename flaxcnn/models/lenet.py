"""LeNet-5, in the two forms the course material teaches.

* ``lenet5``: LeCun et al., "Gradient-Based Learning Applied to Document Recognition",
  Proc. IEEE 1998. tanh, unpadded 5x5 convs on a 32x32 image, 2x2 average pooling,
  C5 a 5x5 conv to 120 channels (a fully connected layer on a 5x5 map), F6 84 units.
* ``lenet5_d2l``: the "Dive into Deep Learning" version for 28x28 MNIST: sigmoid, the first
  conv padded by 2 so 28x28 behaves as LeCun's 32x32, then flatten and FC 120-84-n.

Both have about 61.7k parameters (10 classes). No BatchNorm and no torch counterpart.
The first fully connected layer takes its input size from the image at init, as
the torch code does at 28x28/32x32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._registry import register_model
from ..layers import (
    Conv2d,
    FeatureMixin,
    avg_pool2d,
    check_image_input,
    get_act,
    smallest_side,
    stage_info,
)

__all__ = ["LeNet"]


class LeNet(FeatureMixin, nn.Module):
    """LeNet-5: two 5x5 conv + 2x2 average pool stages, then C5 (120), F6 (84), output.

    Attributes:
        act: ``'tanh'`` (LeCun) or ``'sigmoid'`` (d2l), after every hidden layer.
        conv1_padding: ``0`` (32x32 input) or ``2`` (28x28 input keeps 28x28).
        c5: ``'conv'``: C5 is a 5x5 conv to 120 channels (``conv3``), flattened;
            ``'fc'``: flatten the 16-channel map and a 120-unit ``fc1``.
        num_classes: outputs; ``0`` returns the 84 F6 features (the pre-logits; a
            flattening head, so there is no ``global_pool`` choice).
        in_chans: input channels (1 for digits, 3 for CIFAR).
        features_only: return the activated maps of ``conv1`` (stride 1), ``conv2``
            (stride 2) and, at stride 4, C5 ``conv3`` (``c5='conv'``) or the second pool
            (``'pool2'``, ``c5='fc'``): named after the Flax modules, as LeNet has no torch
            twin; selected by ``out_indices`` (``None``: all). Builds no FC layer.
    """

    act: str = "tanh"
    conv1_padding: int = 0
    c5: str = "conv"
    num_classes: int = 10
    in_chans: int = 1
    features_only: bool = False
    out_indices: Sequence[int] | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _stage_info(self) -> list[dict[str, Any]]:
        conv = self.c5 == "conv"
        return stage_info(
            [6, 16, 120 if conv else 16],
            [1, 2, 4],
            ["conv1", "conv2", "conv3" if conv else "pool2"],
        )

    @property
    def min_input_size(self) -> int:
        """conv 5x5, pool 2, conv 5x5, pool 2 and the 5x5 C5 conv leave 1x1 from 32 - 2p
        (``conv1_padding``); with ``c5='fc'`` the second pool's 1x1 from 16 - 2p."""
        c5 = [(5, 1, 0)] if self.c5 == "conv" else []
        return smallest_side([(5, 1, self.conv1_padding), (2, 2, 0), (5, 1, 0), (2, 2, 0), *c5])

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array | list[jax.Array]:
        small = self.c5 == "conv" and self.conv1_padding < 2
        hint = "; pad the image, or pass conv1_padding=2, which takes 28x28 digits" if small else ""
        check_image_input(x, self, hint=hint)
        if self.c5 not in ("conv", "fc"):
            raise ValueError(f"c5 must be 'conv' or 'fc', got {self.c5!r}")
        act = get_act(self.act)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = act(Conv2d(6, 5, padding=self.conv1_padding, name="conv1", **kw)(x))
        feats = [x]
        x = avg_pool2d(x, 2)
        x = act(Conv2d(16, 5, name="conv2", **kw)(x))
        feats.append(x)
        x = avg_pool2d(x, 2)
        if self.c5 == "conv":
            x = act(Conv2d(120, 5, name="conv3", **kw)(x))
        if self.features_only:
            return self._select_features([*feats, x])
        if self.c5 == "conv":
            x = x.reshape(x.shape[0], -1)
            names = ("fc1", "fc2")
        else:
            x = x.reshape(x.shape[0], -1)
            x = act(nn.Dense(120, name="fc1", **kw)(x))
            names = ("fc2", "fc3")
        x = act(nn.Dense(84, name=names[0], **kw)(x))
        if self.num_classes == 0:
            return x
        return nn.Dense(self.num_classes, name=names[1], **kw)(x)


LeNet5 = register_model(
    "lenet5",
    LeNet,
    {"act": "tanh", "conv1_padding": 0, "c5": "conv"},
    family="lenet",
    input_size=(32, 32, 1),
    classifier="fc2",
    first_conv="conv1",
    paper="LeCun et al., Gradient-Based Learning Applied to Document Recognition, Proc. IEEE 1998",
)
LeNet5D2L = register_model(
    "lenet5_d2l",
    LeNet,
    {"act": "sigmoid", "conv1_padding": 2, "c5": "fc"},
    family="lenet",
    input_size=(28, 28, 1),
    classifier="fc3",
    first_conv="conv1",
    paper="Zhang et al., Dive into Deep Learning, ch. 7.6 (LeNet)",
)
