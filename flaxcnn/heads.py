"""The classifier of any registered model, and replacing it: timm's ``get_classifier`` and
``reset_classifier`` in the Flax idiom (modules are immutable, so a reset returns a new
module and new variables).

The classifier is found from the model itself, not from a table: it is every parameter
that exists only because ``num_classes > 0`` (the ``fc``, ``classifier_6``, ``head`` ...,
and GoogLeNet's and Inception's auxiliary heads, which also predict ``num_classes``). Its
torch name is the registry's ``classifier`` metadata; the Flax path is the same name, as
everywhere in flaxcnn.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
from flax import traverse_util

from ._inputs import example_inputs
from ._registry import default_input_shape

__all__ = ["get_classifier", "reset_classifier"]


def _param_paths(module: nn.Module, input_shape) -> dict[tuple[str, ...], Any]:
    shapes = jax.eval_shape(module.init, jax.random.key(0), *example_inputs(module, input_shape))
    return traverse_util.flatten_dict(dict(shapes.get("params", {})))


def _head_modules(module: nn.Module, input_shape) -> list[tuple[str, ...]]:
    """The module paths whose parameters only exist with a classifier."""
    if not hasattr(module, "num_classes"):
        raise ValueError(f"{type(module).__name__} has no num_classes: it has no classifier")
    if getattr(module, "features_only", False):
        raise ValueError("a features_only model has no classifier")
    with_head = _param_paths(module.clone(num_classes=max(module.num_classes, 1)), input_shape)
    headless = _param_paths(module.clone(num_classes=0), input_shape)
    modules = []
    for path in with_head:
        if path not in headless and path[:-1] not in modules:
            modules.append(path[:-1])
    return modules


def get_classifier(
    module: nn.Module, variables: Any | None = None, *, input_shape=None
) -> dict[str, Any]:
    """``{'fc': {'kernel': ..., 'bias': ...}}``: the classifier's modules by path
    (``'/'``-joined) with their parameters from ``variables``, or their shapes
    (``jax.ShapeDtypeStruct``) without. Empty for ``num_classes=0``.

    ``input_shape`` (NHWC) is only needed for a model whose head size depends on it (a
    flattening head at a non-default size); default: the registered variant's size.
    """
    input_shape = input_shape or default_input_shape(module)
    if module.num_classes == 0:
        return {}
    paths = _head_modules(module, input_shape)
    if variables is None:
        flat = _param_paths(module, input_shape)
    else:
        flat = traverse_util.flatten_dict(dict(variables["params"]))
    return {
        "/".join(p): traverse_util.unflatten_dict(
            {k[len(p) :]: v for k, v in flat.items() if k[: len(p)] == p}
        )
        for p in paths
    }


def reset_classifier(
    module: nn.Module,
    variables: Any,
    num_classes: int,
    *,
    rng: jax.Array | None = None,
    input_shape=None,
    **overrides: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """``(new_module, new_variables)`` with a fresh ``num_classes``-way head: timm's
    ``model.reset_classifier(num_classes)``.

    Every variable outside the classifier is kept (the same arrays); the classifier's
    parameters are initialised as the module's own initialisers do, from ``rng`` (default
    ``jax.random.key(0)``); ``num_classes=0`` removes them (the model then returns pooled
    features). ``overrides`` set other fields at the same time (``global_pool='max'``,
    ``drop_rate=0.2``), as timm's ``reset_classifier(n, global_pool)``.
    """
    input_shape = input_shape or default_input_shape(module)
    new = module.clone(num_classes=num_classes, **overrides)
    old_paths = _head_modules(module, input_shape) if module.num_classes else []
    new_paths = _head_modules(new, input_shape) if num_classes else []
    if sorted(old_paths) != sorted(new_paths) and old_paths and new_paths:
        raise AssertionError(f"classifier moved: {old_paths} -> {new_paths}")

    def is_head(path: tuple[str, ...]) -> bool:
        return any(path[: len(p)] == p for p in old_paths + new_paths)

    flat = traverse_util.flatten_dict(dict(variables.get("params", {})))
    kept = {k: v for k, v in flat.items() if not is_head(k)}
    if new_paths:
        inputs = example_inputs(new, input_shape)

        def head_init(key):
            # Only the head's parameters are returned, so XLA keeps only their initialisers:
            # no forward pass is compiled or run.
            params = traverse_util.flatten_dict(dict(new.init(key, *inputs)["params"]))
            return {"/".join(k): v for k, v in params.items() if is_head(k)}

        fresh = jax.jit(head_init)(jax.random.key(0) if rng is None else rng)
        kept.update({tuple(k.split("/")): v for k, v in fresh.items()})
    out = {**variables, "params": traverse_util.unflatten_dict(kept)}
    return new, out
