"""GoogLeNet conversion: torchvision's names are flaxcnn's (``inception3a.branch2.0.conv``
-> ``inception3a/branch2_0/conv``). The aux heads' ``fc1`` follows a flatten of a
128x4x4 map, which torch flattens channel-major and the NHWC model channel-last;
whether the aux heads exist is read from the weights (``googlenet(aux_logits=False)``)."""

from __future__ import annotations

from .core import Rules, nchw_flatten_linear, register_rules

register_rules(
    "googlenet",
    Rules(
        transforms=[nchw_flatten_linear(r"^params/aux[12]/fc1/kernel$", 4, 4)],
        config=lambda sd: {"aux_logits": any(k.startswith("aux1.") for k in sd)},
    ),
)
