"""Model summary: the quantities the seed lectures compute by hand, computed from the model.

Parameters (total and per top-level submodule), FLOPs from XLA's cost analysis of the
compiled forward pass, and activation memory per image (the sum of every leaf layer's
output, as the lectures' VGG-16 memory table counts it). Nothing is executed: shapes come
from ``jax.eval_shape`` and FLOPs from compiling the abstract computation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ._registry import get_model_spec
from .layers import Dropout2d, DropPath

__all__ = ["ModelSummary", "summary"]


def _counted(mdl: nn.Module, method: str) -> bool:
    # Identity in eval mode: their "output" is the input again, not new memory.
    return method == "__call__" and not isinstance(mdl, (DropPath, Dropout2d, nn.Dropout))


@dataclasses.dataclass
class ModelSummary:
    name: str
    input_shape: tuple[int, ...]
    params: int
    params_by_module: dict[str, int]
    flops: float
    activation_bytes: int
    layers: int

    def __str__(self) -> str:
        rows = [
            f"{self.name}  input {self.input_shape}",
            f"  parameters        {self.params:,}",
            f"  FLOPs             {self.flops / 1e9:.3f} G  (XLA cost analysis; a multiply-add is 2)",
            f"  activations/image {self.activation_bytes / 2**20:.2f} MiB  (outputs of {self.layers} leaf layers, float32)",
            "  parameters by submodule:",
        ]
        rows += [f"    {k:24s} {v:>14,}" for k, v in self.params_by_module.items()]
        return "\n".join(rows)


def summary(model: str | nn.Module, input_size: tuple[int, int] | None = None) -> ModelSummary:
    """Summarise a registered model (by name) or a module, for one image of ``input_size`` (H, W)."""
    if isinstance(model, str):
        spec = get_model_spec(model)
        name, module = model, spec.build()
        h, w, c = spec.input_size
    else:
        name, module = type(model).__name__, model
        h, w, c = 224, 224, getattr(model, "in_chans", 3)
    if input_size:
        h, w = input_size
    x = jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    params = variables.get("params", {})
    by_module = {
        k: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v)) for k, v in params.items()
    }

    _, state = jax.eval_shape(
        lambda v, x: module.apply(v, x, capture_intermediates=_counted, mutable=["intermediates"]),
        variables,
        x,
    )
    flat = traverse_util.flatten_dict(dict(state["intermediates"]))
    prefixes = {k[:-1] for k in flat}  # module paths that have outputs
    leaves = [
        k
        for k in flat
        if not any(p[: len(k) - 1] == k[:-1] and len(p) > len(k) - 1 for p in prefixes)
    ]
    act = sum(sum(int(np.prod(a.shape)) * 4 for a in jax.tree.leaves(flat[k])) for k in leaves)

    compiled = jax.jit(module.apply).lower(variables, x).compile()
    cost: Any = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return ModelSummary(
        name=name,
        input_shape=(1, h, w, c),
        params=sum(by_module.values()),
        params_by_module=by_module,
        flops=float((cost or {}).get("flops", float("nan"))),
        activation_bytes=act,
        layers=len(leaves),
    )
