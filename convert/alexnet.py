"""AlexNet family conversion: torchvision's names are flaxcnn's (``features_0``,
``classifier_1``); only the first Linear is permuted, because torch flattens the
256x6x6 map channel-major and the NHWC model flattens it channel-last."""

from __future__ import annotations

from .core import Rules, nchw_flatten_linear, register_rules

register_rules(
    "alexnet", Rules(transforms=[nchw_flatten_linear(r"^params/classifier_1/kernel$", 6, 6)])
)
