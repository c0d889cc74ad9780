"""SENet-154 (timm ``legacy_senet154``) verify preparation; names convert by the generic rule.

timm's SENet applies its classifier dropout functionally (``F.dropout(...,
training=self.training)``), which switching dropout *modules* to eval cannot reach,
so the hook sets ``drop_rate`` to 0 for the deterministic train-mode comparison.
"""

from __future__ import annotations

from typing import Any

from .verify import register_verify_hook

__all__ = ["disable_functional_dropout"]


def disable_functional_dropout(model: Any, generator: Any) -> None:
    """``model.drop_rate = 0``: stochastic regularisers off, as verify requires."""
    del generator
    model.drop_rate = 0.0


register_verify_hook("senet", disable_functional_dropout)
