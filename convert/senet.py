"""Legacy SENet (timm ``legacy_senet154``, ``legacy_seresnext26_32x4d``) verify preparation;
names convert by the generic rule.

timm's SENet applies its classifier dropout functionally (``F.dropout(...,
training=self.training)``), which switching dropout *modules* to eval cannot reach,
so the hook sets ``drop_rate`` to 0 for the deterministic train-mode comparison.

It also makes residual branches contractive, as :mod:`flaxcnn.convert.resnet` does.
Measured after :func:`~flaxcnn.convert.verify.randomize_bn` alone, train mode at
97x131: torch float32 against torch float64 differ by 1.5e-4 relative in the output
and 8.3e-5 in the running statistics (bounds 1e-4 and 1e-5), so no float32
implementation can meet the bound on that network; with the hook, flaxcnn matches
torch within 2.3e-6 (output) and 1.7e-6 (statistics).
"""

from __future__ import annotations

from typing import Any

from .resnet import make_residual_branches_contractive
from .verify import register_verify_hook

__all__ = ["prepare_senet"]


def prepare_senet(model: Any, generator: Any) -> None:
    """Dropout off (``model.drop_rate = 0``); last BN of every block U(0.1, 0.3)."""
    model.drop_rate = 0.0
    make_residual_branches_contractive(model, generator)


register_verify_hook("senet", prepare_senet)
