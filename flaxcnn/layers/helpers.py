"""Small arithmetic shared by the families' builders."""

from __future__ import annotations

__all__ = ["make_divisible"]


def make_divisible(
    v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9
) -> int:
    """Round a channel count ``v`` to the nearest multiple of ``divisor`` (at least
    ``min_value``, default ``divisor``), one ``divisor`` up if rounding lost more than
    ``1 - round_limit`` of ``v``.

    The rule of the TF reference implementations, which timm's ``make_divisible`` and
    torchvision's ``_make_divisible`` both reproduce: widths must match theirs exactly for
    weights to convert.
    """
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v
