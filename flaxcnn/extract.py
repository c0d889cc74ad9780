"""Intermediate outputs at named nodes: torchvision's ``create_feature_extractor`` for any
flaxcnn model.

Node names are torch's module paths (``"layer2.0.conv1"``, ``"features.3"``), because the
Flax module tree carries them (``layer2_0/conv1``, ``features_3``): a ``.<index>`` of torch
is ``_<index>`` in Flax. A torch container with no Flax module of its own (a
``Sequential`` such as ResNet's ``layer1``) names its last child's output, as its forward
returns; where that last child could be functional (indices with gaps), the container is
not a node. Values are captured by flax's ``capture_intermediates`` during one ``apply``,
so with converted weights they equal torchvision's on the torch model.

One difference from torchvision is torchvision's, not the model's: a node whose output an
in-place op then modifies (``nn.ReLU(inplace=True)`` after a BN or a Linear, as in VGG)
is reported by torchvision *after* that op; flaxcnn reports the node's own output.

Only modules are nodes: torch's functional nodes (``add``, ``flatten``, a reused
``relu_1``) have no Flax module to capture; asking for one lists the nodes there are.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax

from ._inputs import example_inputs
from ._registry import default_input_shape

__all__ = ["FeatureExtractor", "create_feature_extractor", "get_graph_node_names"]


def _torch_name(path: Sequence[str]) -> str:
    """``('layer2_0', 'conv1')`` -> ``'layer2.0.conv1'``."""
    return ".".join(re.sub(r"_(\d+)(?=$|_)", r".\1", seg) for seg in path)


def _module_paths(module: nn.Module, input_shape) -> list[tuple[str, ...]]:
    """Every submodule's path, in the order their ``__call__`` runs."""
    order: list[tuple[str, ...]] = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and context.module.path not in order:
            order.append(context.module.path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(module.init, jax.random.key(0), *example_inputs(module, input_shape))
    return [p for p in order if p]


def get_graph_node_names(module: nn.Module, *, input_shape=None) -> list[str]:
    """The node names :func:`create_feature_extractor` takes for ``module``, in execution
    order: each submodule's torch name and each torch container's (``layer1``), as
    torchvision's ``get_graph_node_names`` lists its module nodes."""
    return list(_nodes(module, input_shape or default_input_shape(module)))


def _nodes(module: nn.Module, input_shape) -> dict[str, tuple[str, ...]]:
    """torch node name -> the Flax path whose output it is.

    Every submodule is a node. A torch container with no Flax module is one too when its
    children are the Flax modules ``0 ... n-1`` (a ``Sequential`` of blocks, as ResNet's
    ``layer1``): its output is child ``n-1``'s. A container whose indices have gaps
    (VGG's ``features``: the ReLUs and pools between the convs are functional here) or
    named children is not offered, since its last torch child may have no Flax module.
    """
    nodes = {_torch_name(p): p for p in _module_paths(module, input_shape)}
    children: dict[str, list[str]] = {}
    for name in nodes:
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in nodes:
                children.setdefault(parent, [])
                if parts[i] not in children[parent]:
                    children[parent].append(parts[i])
    last_child = {
        f"{parent}.{len(kids) - 1}": parent
        for parent, kids in children.items()
        if kids == [str(k) for k in range(len(kids))] and f"{parent}.{len(kids) - 1}" in nodes
    }
    ordered: dict[str, tuple[str, ...]] = {}
    for name, path in nodes.items():  # a container listed where its output is ready
        ordered[name] = path
        if name in last_child:
            ordered[last_child[name]] = path
    return ordered


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """``extractor.apply(variables, x, train=False)`` -> ``{output name: array}``: the
    model's outputs at the requested nodes (the model's own output is not computed
    separately; ``apply`` runs the model once). ``nodes`` maps each output name to the
    torch node name and ``paths`` to the Flax module path captured."""

    module: nn.Module
    nodes: Mapping[str, str]
    paths: Mapping[str, tuple[str, ...]]

    def apply(self, variables: Any, *inputs: Any, train: bool = False, **kwargs: Any):
        wanted = set(self.paths.values())

        def keep(mdl: nn.Module, method_name: str) -> bool:
            return method_name == "__call__" and mdl.path in wanted

        mutable = ["intermediates", "batch_stats"] if train else ["intermediates"]
        _, state = self.module.apply(
            variables, *inputs, train=train, capture_intermediates=keep, mutable=mutable, **kwargs
        )
        out = {}
        for name, path in self.paths.items():
            node = state["intermediates"]
            for seg in path:
                node = node[seg]
            out[name] = node["__call__"][-1]
        return out


def create_feature_extractor(
    module: nn.Module,
    return_nodes: Sequence[str] | Mapping[str, str],
    *,
    input_shape=None,
) -> FeatureExtractor:
    """torchvision's ``create_feature_extractor(model, return_nodes)``: ``return_nodes`` a
    list of node names or ``{node name: output name}``; node names as
    :func:`get_graph_node_names` lists them (torch's module paths).

    Raises ``ValueError`` for a node the model does not have, with close names.
    """
    input_shape = input_shape or default_input_shape(module)
    if isinstance(return_nodes, str):
        raise TypeError("return_nodes must be a list of node names or a dict, not a string")
    names = (
        dict(return_nodes) if isinstance(return_nodes, Mapping) else {n: n for n in return_nodes}
    )
    nodes = _nodes(module, input_shape)
    paths = {}
    for node, out_name in names.items():
        if node not in nodes:
            close = difflib.get_close_matches(node, list(nodes), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"{type(module).__name__} has no node {node!r}{hint} (only modules are nodes: "
                "flaxcnn.get_graph_node_names(model) lists them)"
            )
        paths[out_name] = nodes[node]
    return FeatureExtractor(module, {v: k for k, v in names.items()}, paths)
