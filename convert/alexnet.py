"""AlexNet family conversion: torchvision's names are flaxcnn's (``features_0``,
``classifier_1``); only the first Linear is permuted, because torch flattens the
256x6x6 map channel-major and the NHWC model flattens it channel-last."""

from __future__ import annotations

from .core import Rules, nchw_flatten_linear, register_rules

register_rules(
    "alexnet", Rules(transforms=[(r"^params/classifier_1/kernel$", *nchw_flatten_linear(6, 6))])
)
