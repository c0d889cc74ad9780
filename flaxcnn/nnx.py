"""Every flaxcnn model as a Flax NNX module, with the linen module as its only definition.

>>> from flax import nnx
>>> import flaxcnn.nnx
>>> model = flaxcnn.nnx.create_model("resnet50", num_classes=10, rngs=nnx.Rngs(0))
>>> model.fc.kernel                     # nnx.Param at the path of torch's fc.weight
>>> model.train()                       # BatchNorm on batch statistics, dropout on
>>> logits = model(x)                   # NHWC in, the linen model's output out
>>> model.eval()

:func:`create_model` takes what :func:`flaxcnn.create_model` takes (``pretrained`` included)
and returns a :class:`Model`. :func:`from_linen` wraps any ``(module, variables)`` pair (a
converted torch model, an orbax checkpoint written by ``flaxcnn.train``) and
:func:`to_linen` gives back ``{'params', 'batch_stats'}`` from a model or its ``nnx.State``,
so weights move both ways bit for bit.

The mechanism is a thin wrapper of our own rather than ``flax.nnx.bridge.ToNNX``:

* **State paths are the linen (= torch) names.** Each linen variable lives at its module
  path, parameters as ``nnx.Param`` and BatchNorm statistics as ``nnx.BatchStat`` side by
  side, the way ``nnx.BatchNorm`` holds ``scale``/``bias``/``mean``/``var``:
  ``layer1_0/bn1/scale`` and ``layer1_0/bn1/mean`` (torch's ``layer1.0.bn1.weight`` and
  ``.running_mean``), reachable as ``model.layer1_0.bn1.scale``. Freezing and optimizer
  masks are path filters (``nnx.All(nnx.Param, nnx.PathContains('fc'))``). ``ToNNX`` keys
  the state by linen collection (``params/layer1_0/...`` and ``batch_stats/layer1_0/...``),
  so one layer's state sits in two trees.
* **Modes are NNX's.** ``model.train()``/``model.eval()`` (and ``nnx.view``) set
  ``deterministic`` and ``use_running_average``, as on ``nnx.Dropout``/``nnx.BatchNorm``;
  ``ToNNX`` needs ``train=True`` and ``mutable=['batch_stats']`` at every call.
* **Updates are in place.** A train-mode call writes the new running statistics into the
  existing ``nnx.BatchStat`` variables, so references held elsewhere (an ``nnx.Optimizer``,
  a split ``State``) stay valid; ``ToNNX`` replaces the whole collection's attribute.
* **Initialisation is eager**: :func:`create_model` returns initialised variables (linen's
  ``init`` at the registry's default input size, jitted so that the discarded forward pass
  costs nothing), so no sample input and no ``lazy_init`` call are left to the user.

Everything else is plain NNX: the state is ``nnx.Param``/``nnx.BatchStat`` arrays plus the
dropout ``RngStream``, the graph's static part is the (hashable) linen module, so
``nnx.jit``, ``nnx.split``/``nnx.merge``, ``nnx.Optimizer`` and ``jax.device_put`` of the
state onto a ``NamedSharding`` behave as for any NNX model.

Limits:

* The modes map onto the linen model's one ``train`` flag. It is on when either BatchNorm
  or dropout trains; the other is then held in eval mode by a method interceptor on
  flaxcnn's ``BatchNorm2d`` and ``Dropout``/``Dropout2d``/``DropPath``. Structure that
  depends on the flag itself follows it: GoogLeNet and Inception-v3 return their auxiliary
  logits whenever ``train`` is on, as in linen.
* Each call runs the linen module's ``apply``: no per-layer NNX submodules to call or
  replace (``model.layer1_0`` holds variables only), and the variables carry no sharding
  annotations (data parallelism replicates them; model parallelism would shard the state
  with ``jax.device_put`` by path).
* Only the ``params`` and ``batch_stats`` collections exist in flaxcnn models; any other
  collection is refused rather than guessed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx, traverse_util

from ._inputs import example_inputs
from ._registry import create_model as _create_linen_model
from ._registry import get_model_spec, list_models

__all__ = ["Model", "Scope", "create_model", "from_linen", "init_variables", "to_linen"]

# linen collection -> NNX variable type, and back.
_KINDS: dict[str, type[nnx.Variable]] = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


class Scope(nnx.Module):
    """The variables of one linen submodule (``model.layer1_0.conv1``), as attributes named
    as in linen, and its child scopes. Holds state only; the linen module computes."""


class _Static:
    """The linen module as a static graph attribute: NNX hashes static attributes (its jit
    cache key). A module with a list-valued field (``out_indices=[1, 2]``) is unhashable,
    and then this model's own identity is the key (each model compiles once)."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module):
        self.module = module

    def _key(self):
        try:
            hash(self.module)
        except TypeError:
            return id(self.module)
        return self.module

    def __eq__(self, other) -> bool:
        return isinstance(other, _Static) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return type(self.module).__name__


class Model(nnx.Module):
    """A flaxcnn linen model driven through NNX (see the module docstring).

    Attributes:
        linen: the linen module (static; ``model.linen.feature_info()`` and the like).
        deterministic: dropout and drop-path off (``eval()``) or on (``train()``).
        use_running_average: BatchNorm on running statistics (``eval()``) or on batch
            statistics with a running-statistic update (``train()``).
        rngs: the ``'dropout'`` stream train-mode calls draw a key from (``None``: dropout
            cannot run; a train-mode call that needs it raises).
        <name>: a :class:`Scope` (or a variable) for each top-level linen submodule.
    """

    def __init__(
        self,
        module: nn.Module,
        variables: Mapping[str, Any],
        *,
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self._linen = _Static(module)
        self.deterministic = True
        self.use_running_average = True
        if isinstance(rngs, nnx.Rngs):
            self.rngs = rngs["dropout"].fork()
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise TypeError(f"rngs must be nnx.Rngs, an nnx.RngStream or None, got {type(rngs)}")
        unknown = sorted(set(variables) - set(_KINDS))
        if unknown:
            raise ValueError(
                f"{type(module).__name__}: linen collection(s) {unknown} have no NNX "
                f"counterpart here; flaxcnn models hold only {sorted(_KINDS)}"
            )
        for collection, tree in variables.items():
            for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
                _attach(self, path, _KINDS[collection](leaf), collection)

    @property
    def linen(self) -> nn.Module:
        return self._linen.module

    def set_view(
        self, deterministic: bool | None = None, use_running_average: bool | None = None
    ) -> None:
        """``nnx.view(model, deterministic=..., use_running_average=...)`` support."""
        if deterministic is not None:
            self.deterministic = deterministic
        if use_running_average is not None:
            self.use_running_average = use_running_average

    def __call__(self, *inputs: jax.Array, method: str | None = None) -> Any:
        """The linen model's output for its inputs (an NHWC batch; CLIP: images and token
        ids), or of its ``method`` (``model(images, method="encode_image")``, as linen's
        ``apply(..., method=...)``); in BatchNorm train mode the running statistics are
        updated in place."""
        bn_train, drop_train = not self.use_running_average, not self.deterministic
        variables = to_linen(self)
        apply = functools.partial(self.linen.apply, variables, *inputs)
        if method is not None:
            apply = functools.partial(apply, method=method)
        if not (bn_train or drop_train):
            return apply(train=False)
        rngs = {}
        if drop_train:
            if self.rngs is None:
                raise ValueError(
                    "dropout is on (deterministic=False) but the model has no rngs: build "
                    "it with rngs=nnx.Rngs(...) or switch dropout off with "
                    "model.set_attributes(deterministic=True)"
                )
            rngs["dropout"] = self.rngs()
        with nn.intercept_methods(_hold_in_eval(bn=not bn_train, dropout=not drop_train)):
            if not bn_train:
                return apply(train=True, rngs=rngs)
            out, updates = apply(train=True, rngs=rngs, mutable=["batch_stats"])
        for path, value in traverse_util.flatten_dict(dict(updates.get("batch_stats", {}))).items():
            _lookup(self, path).set_value(value)
        return out


def _attach(root: Model, path: tuple[str, ...], var: nnx.Variable, collection: str) -> None:
    node: nnx.Module = root
    for depth, name in enumerate(path):
        last = depth == len(path) - 1
        here = "/".join(path[: depth + 1])
        existing = vars(node).get(name)
        if existing is None:
            if hasattr(node, name):
                raise ValueError(
                    f"linen name {here!r} ({collection}) collides with the NNX attribute "
                    f"{type(node).__name__}.{name}"
                )
            setattr(node, name, var if last else Scope())
        elif last or not isinstance(existing, Scope):
            raise ValueError(f"linen variable {here!r} ({collection}) is defined twice")
        node = getattr(node, name)


def _lookup(root: nnx.Module, path: tuple[str, ...]) -> nnx.Variable:
    node = root
    for name in path:
        node = vars(node)[name]
    return node


def _hold_in_eval(*, bn: bool, dropout: bool):
    """A linen method interceptor that keeps flaxcnn's BatchNorm (``bn``) or its dropout
    layers (``dropout``) in eval mode under ``train=True``: NNX sets the two modes apart,
    linen models have one flag."""
    from .layers import BatchNorm2d, Dropout, Dropout2d, DropPath

    held: tuple[type, ...] = ((BatchNorm2d,) if bn else ()) + (
        (Dropout, Dropout2d, DropPath) if dropout else ()
    )

    def interceptor(next_fun, args, kwargs, context):
        if held and context.method_name == "__call__" and isinstance(context.module, held):
            kwargs = {**kwargs, "train": False}
        return next_fun(*args, **kwargs)

    return interceptor


def _as_rngs(rngs: nnx.Rngs | int | jax.Array | None) -> nnx.Rngs:
    if rngs is None:
        return nnx.Rngs(0)
    if isinstance(rngs, nnx.Rngs):
        return rngs
    if isinstance(rngs, int | np.integer | jax.Array):
        return nnx.Rngs(rngs)
    raise TypeError(f"rngs must be nnx.Rngs, an int seed, a key or None, got {type(rngs)}")


def init_variables(
    module: nn.Module, key: jax.Array, input_size: tuple[int, int, int] | None = None
) -> dict[str, Any]:
    """Fresh linen variables of ``module``, ``module.init(key, x)`` for one zero image of
    ``input_size`` ``(H, W, C)`` (default: the registry's size for this module's class, else
    224x224; ``C`` follows the module's ``in_chans``). Jitted: the forward pass, whose
    output init discards, is dead code to XLA, so only the initialisers run."""
    if input_size is None:
        h, w, c = 224, 224, 3
        for name in list_models():
            spec = get_model_spec(name)
            if spec.cls is type(module):
                h, w, c = spec.input_size
                break
    else:
        h, w, c = input_size
    inputs = example_inputs(module, (1, h, w, getattr(module, "in_chans", c)))
    return dict(jax.jit(lambda k: module.init(k, *inputs))(key))


def from_linen(
    module: nn.Module,
    variables: Mapping[str, Any],
    *,
    rngs: nnx.Rngs | int | jax.Array | None = None,
) -> Model:
    """The NNX :class:`Model` of a linen ``module`` and its ``variables``
    (``{'params', 'batch_stats'}``, as from ``module.init``, :func:`flaxcnn.convert.from_torch`
    or a ``flaxcnn.train`` checkpoint). The arrays are taken as they are, not copied.
    ``rngs`` seeds dropout (default ``nnx.Rngs(0)``). Starts in eval mode."""
    return Model(module, variables, rngs=_as_rngs(rngs))


def to_linen(model: Model | nnx.State) -> dict[str, Any]:
    """``{'params': ..., 'batch_stats': ...}`` of a :class:`Model` or of its ``nnx.State``
    (``nnx.split(model)[1]``, a restored checkpoint), ready for ``model.linen.apply``.
    A collection the model does not have is left out, as linen's ``init`` leaves it."""
    out = {}
    for collection, kind in _KINDS.items():
        tree = nnx.to_pure_dict(
            nnx.state(model, kind)
            if isinstance(model, nnx.Module)
            else nnx.filter_state(model, kind)
        )
        if tree:
            out[collection] = tree
    return out


def create_model(
    name: str,
    *,
    pretrained: Any = False,
    rngs: nnx.Rngs | int | jax.Array | None = None,
    **kwargs: Any,
) -> Model:
    """A registered flaxcnn model as an NNX :class:`Model`, in eval mode.

    ``pretrained`` and ``kwargs`` are :func:`flaxcnn.create_model`'s (a weight tag, a tagged
    name such as ``'resnet50.a1_in1k'``, ``num_classes``, ``in_chans``, ``features_only``,
    any field of the family's module). ``rngs`` (default ``nnx.Rngs(0)``) initialises the
    parameters from its ``params`` stream (falling back to ``default``) and seeds dropout
    from its ``dropout`` stream; pretrained weights ignore the former.
    """
    rngs = _as_rngs(rngs)
    built = _create_linen_model(name, pretrained=pretrained, **kwargs)
    if isinstance(built, tuple):
        module, variables = built
    else:
        module = built
        h, w, c = get_model_spec(name).input_size
        variables = init_variables(module, rngs["params"](), (h, w, c))
    return Model(module, variables, rngs=rngs)
