"""Feature maps and heads, the same for every classification family (timm's API).

A family describes its stages once, as :func:`stage_info` entries in stage order; the
:class:`FeatureMixin` then gives it ``feature_info()`` and the ``features_only`` output,
and :func:`apply_global_pool` its ``global_pool`` choice. Every model thereby follows one
contract:

* ``features_only=True``: a list of NHWC maps, the stages picked by ``out_indices``
  (``None``: all; negative indices count from the end, as in timm), and no classifier
  parameters;
* ``num_classes=0``: the pooled pre-logits features, ``(N, C)``;
* ``num_classes=0, global_pool=''``: the final unpooled feature map, i.e. timm's
  ``forward_features``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from .pooling import global_avg_pool, global_max_pool

__all__ = [
    "POOL_TYPES",
    "FeatureMixin",
    "apply_global_pool",
    "check_global_pool",
    "feature_indices",
    "stage_info",
]

# timm's SelectAdaptivePool2d names: 'avgmax' is 0.5 * (avg + max); '' does not pool.
POOL_TYPES = ("avg", "max", "avgmax", "")


def stage_info(
    chans: Sequence[int], reductions: Sequence[int], modules: Sequence[str]
) -> list[dict[str, Any]]:
    """``[dict(num_chs, reduction, module), ...]``, one entry per stage (timm's format)."""
    return [
        dict(num_chs=int(c), reduction=int(r), module=m)
        for c, r, m in zip(chans, reductions, modules, strict=True)
    ]


def feature_indices(out_indices: Sequence[int] | None, num_stages: int) -> tuple[int, ...]:
    """``out_indices`` validated, made non-negative and put in stage order (``None``: every
    stage).

    Raises ``ValueError`` for a non-integer, an index outside ``[-num_stages, num_stages)``
    or a stage named twice.
    """
    if out_indices is None:
        return tuple(range(num_stages))
    valid = f"valid indices are {-num_stages}..{num_stages - 1} ({num_stages} stages)"
    if isinstance(out_indices, int | str) or not isinstance(out_indices, Sequence):
        raise ValueError(f"out_indices must be a sequence of ints, got {out_indices!r}; {valid}")
    picked = []
    for i in out_indices:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"out_indices must be ints, got {i!r}; {valid}")
        if not -num_stages <= i < num_stages:
            raise ValueError(f"out_indices: {i} is out of range; {valid}")
        picked.append(i % num_stages)
    if len(set(picked)) != len(picked):
        raise ValueError(f"out_indices {tuple(out_indices)} name a stage twice; {valid}")
    return tuple(sorted(picked))


def check_global_pool(pool_type: str, num_classes: int | None = None) -> None:
    """``ValueError`` unless ``pool_type`` is one of :data:`POOL_TYPES`; with ``num_classes``,
    also for ``''`` under a classifier (as timm: an unpooled map has no logits)."""
    if pool_type not in POOL_TYPES:
        raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {pool_type!r}")
    if num_classes and pool_type == "":
        raise ValueError(
            "global_pool='' returns the unpooled feature map and needs num_classes=0, "
            f"got num_classes={num_classes}"
        )


def apply_global_pool(x: jax.Array, pool_type: str = "avg", keepdims: bool = False) -> jax.Array:
    """Pool NHWC ``x`` over H and W: ``'avg'``, ``'max'``, ``'avgmax'`` (0.5 * (avg + max),
    as timm) or ``''`` (returned as is)."""
    check_global_pool(pool_type)
    if pool_type == "avg":
        return global_avg_pool(x, keepdims)
    if pool_type == "max":
        return global_max_pool(x, keepdims)
    if pool_type == "avgmax":
        return (0.5 * (global_avg_pool(x, keepdims) + global_max_pool(x, keepdims))).astype(x.dtype)
    return x


class FeatureMixin:
    """``feature_info()`` and the ``features_only`` selection for a flax model.

    The model defines ``features_only`` and ``out_indices`` fields (and ``global_pool``
    where it pools globally) and a ``_stage_info()`` method listing every stage;
    ``__call__`` collects the stage maps in the same order and returns
    ``self._select_features(maps)`` when ``features_only`` is set, before building any
    head, and pools with ``self._pool(x)``.
    """

    def _stage_info(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def feature_info(self) -> list[dict[str, Any]]:
        """``dict(num_chs, reduction, module)`` of each map ``features_only`` returns, in
        order; ``module`` is the torch (timm) module the map is the output of."""
        info = self._stage_info()
        return [info[i] for i in feature_indices(self.out_indices, len(info))]

    def _pool(self, x: jax.Array, keepdims: bool = False) -> jax.Array:
        """The model's ``global_pool`` of ``x``; ``''`` is refused under a classifier."""
        check_global_pool(self.global_pool, self.num_classes)  # type: ignore[attr-defined]
        return apply_global_pool(x, self.global_pool, keepdims)  # type: ignore[attr-defined]

    def _select_features(self, maps: Sequence[jax.Array]) -> list[jax.Array]:
        info = self._stage_info()
        if len(maps) != len(info):
            raise AssertionError(f"{len(maps)} stage maps for {len(info)} feature_info entries")
        return [maps[i] for i in feature_indices(self.out_indices, len(info))]
