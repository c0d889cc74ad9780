"""FCN conversion notes.

torchvision's FCN keeps the ResNet's module names under ``backbone`` and names its
heads ``classifier.0`` ... ``classifier.4`` (an ``nn.Sequential``); flaxcnn's FCN mirrors
both, so the generic rule converts it with no extra rules. ``num_classes`` is read from
``classifier.4``. A torch FCN built without the auxiliary head (torchvision's default
when no pretrained weights are asked for) converts with ``aux_loss=False``.

For :func:`flaxcnn.convert.verify`, the dilated ResNet backbone is conditioned as the
ResNet family's is (see :func:`flaxcnn.convert.resnet.make_residual_branches_contractive`).
"""

from __future__ import annotations

from .resnet import make_residual_branches_contractive
from .verify import register_verify_hook

register_verify_hook("fcn", make_residual_branches_contractive)
