"""VGG family conversion: torchvision's names are flaxcnn's (``features_<i>``,
``classifier_0/3/6``); the first Linear is permuted because torch flattens the
512x7x7 map channel-major and the NHWC model flattens it channel-last."""

from __future__ import annotations

from .core import Rules, nchw_flatten_linear, register_rules

register_rules(
    "vgg", Rules(transforms=[nchw_flatten_linear(r"^params/classifier_0/kernel$", 7, 7)])
)
