"""The generic torch -> Flax mapping: renames plus transposes, checked against the model.

A torch key ``layer1.0.downsample.1.running_var`` becomes the Flax variable
``batch_stats/layer1_0/downsample_1/var``: a module index joins its parent's name
with ``_`` (Flax submodules are named that way on purpose), and the leaf is
renamed by what the Flax module holds at that path (``kernel``/``scale``/...).
Families whose torch names differ from that rule register :class:`Rules` (regex
renames and per-variable transforms) in their ``convert/<family>.py``.

Every torch key must land on a Flax variable of the right shape and every Flax
variable must be filled: a :class:`ConversionReport` lists what does not fit.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from .._inputs import example_inputs
from .errors import ConversionError

__all__ = [
    "ConversionReport",
    "Mismatch",
    "Rules",
    "Transform",
    "convert_state_dict",
    "default_transform",
    "example_inputs",
    "get_rules",
    "leaves_by_module",
    "nchw_flatten_linear",
    "register_rules",
    "torch_key_to_flax",
    "variable_shapes",
]

FlaxPath = tuple[str, ...]  # (collection, *module path, leaf)

_BN_LEAVES = {"running_mean": "mean", "running_var": "var"}
_DROPPED = ("num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class Transform:
    """How one family's variable differs from the default layout change.

    Attributes:
        pattern: regex searched in the ``'/'``-joined Flax path (``params/conv_head/kernel``).
        fn: torch array -> Flax array, replacing the default transpose.
        inverse: Flax array -> torch array, for :func:`flaxcnn.convert.to_torch`; ``None``
            when the family cannot be exported.
    """

    pattern: str
    fn: Callable[[np.ndarray], np.ndarray]
    inverse: Callable[[np.ndarray], np.ndarray] | None = None

    def matches(self, flax_path: str) -> bool:
        return re.search(self.pattern, flax_path) is not None


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """A tensor that maps onto a variable of another shape.

    ``key`` is the name on the side being read, ``target`` the name it maps to;
    ``got`` is the shape read (after the layout change), ``want`` the shape there.
    ``sides`` names the two sides in messages (``('weights', 'model')``).
    """

    key: str
    target: str
    got: tuple[int, ...]
    want: tuple[int, ...]
    sides: tuple[str, str] = ("weights", "model")

    def __str__(self) -> str:
        where = self.key if self.key == self.target else f"{self.key} -> {self.target}"
        return f"{where}: {self.sides[0]} {self.got}, {self.sides[1]} {self.want}"


@dataclasses.dataclass(frozen=True)
class Rules:
    """Family-specific conversion rules, applied before the generic mapping.

    Attributes:
        renames: ``(regex, replacement)`` pairs applied in order to each torch key
            (``re.sub``), e.g. ``(r"^features\\.", "backbone.")``.
        ignore: regexes of torch keys that have no Flax counterpart by design
            (e.g. buffers that the Flax model computes on the fly).
        transforms: :class:`Transform` records: variables whose layout change is not the
            default transpose (the first whose pattern matches applies).
        config: ``fn(state_dict) -> {field: value}``, module fields the weights decide
            beyond ``num_classes``/``in_chans`` (e.g. whether auxiliary heads are present);
            it sees the source's own key names.
    """

    renames: Sequence[tuple[str, str]] = ()
    ignore: Sequence[str] = ()
    transforms: Sequence[Transform] = ()
    config: Callable[[Mapping[str, np.ndarray]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        bad = [t for t in self.transforms if not isinstance(t, Transform)]
        if bad:
            raise TypeError(f"Rules.transforms takes Transform records, got {bad[0]!r}")

    def transform_for(self, flax_path: str) -> Transform | None:
        """The first :class:`Transform` whose pattern matches ``flax_path``."""
        return next((t for t in self.transforms if t.matches(flax_path)), None)

    def ignores(self, key: str) -> bool:
        return key.rsplit(".", 1)[-1] in _DROPPED or any(re.search(p, key) for p in self.ignore)

    def rename(self, key: str) -> str:
        """A torch key in the family's canonical (Flax-side) torch naming."""
        for pat, rep in self.renames:
            key = re.sub(pat, rep, key)
        return key

    def target(self, key: str, leaves_at: Mapping[tuple[str, FlaxPath], set[str]]) -> FlaxPath:
        """The Flax variable ``(collection, *path, leaf)`` a torch ``key`` maps to."""
        coll, path, leaf = torch_key_to_flax(self.rename(key))
        if leaf == "weight":
            have = leaves_at.get((coll, path), set())
            leaf = next((c for c in ("kernel", "scale", "embedding") if c in have), "kernel")
        return (coll, *path, leaf)


_RULES: dict[tuple[str, str | None], Rules] = {}


def register_rules(family: str, rules: Rules, *, source: str | None = None) -> None:
    """Register the rules of a family (for every source, or one ``source``)."""
    key = (family, source)
    if key in _RULES:
        raise ValueError(f"conversion rules for {key} are already registered")
    _RULES[key] = rules


def get_rules(family: str | None, source: str | None = None) -> Rules:
    """The rules for ``family`` and ``source`` (source-specific first), else none."""
    return _RULES.get((family, source)) or _RULES.get((family, None)) or Rules()


@dataclasses.dataclass
class ConversionReport:
    """What did and did not fit. Paths are ``collection/module/.../leaf``.

    ``missing`` and ``unexpected`` list names; ``mismatched`` lists :class:`Mismatch`
    records (key, target, both shapes), formatted only when printed.
    """

    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[Mismatch] = dataclasses.field(default_factory=list)
    mapping: dict[str, FlaxPath] = dataclasses.field(default_factory=dict)
    direction: str = "torch->flax"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def one_line(self) -> str:
        """``'3 missing, 1 unexpected, 0 mis-shaped (first: ...)'``."""
        first = (self.missing + self.unexpected + self.mismatched or ["-"])[0]
        return (
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} mis-shaped tensors (first: {first})"
        )

    def __str__(self) -> str:
        if self.ok:
            return f"all {len(self.mapping)} tensors converted"
        parts = []
        src, dst = ("torch key", "Flax variable")[:: 1 if self.direction == "torch->flax" else -1]
        for title, items in (
            (f"missing ({dst}s no {src} fills)", self.missing),
            (f"unexpected ({src}s with no {dst})", self.unexpected),
            ("shape mismatch", self.mismatched),
        ):
            shown = "\n    ".join(map(str, items[:25])) + (
                f"\n    ... and {len(items) - 25} more" if len(items) > 25 else ""
            )
            parts.append(f"  {title}: {len(items)}" + (f"\n    {shown}" if items else ""))
        what = (
            "weights do not fit the model"
            if self.direction == "torch->flax"
            else "variables do not fit the torch model"
        )
        return f"{what}:\n" + "\n".join(parts)


def variable_shapes(
    module: Any, input_shape: Sequence[int]
) -> dict[FlaxPath, jax.ShapeDtypeStruct]:
    """Flattened ``{(collection, *path): ShapeDtypeStruct}`` of ``module``, without computing."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *example_inputs(module, input_shape))
    return traverse_util.flatten_dict(dict(shapes))


def torch_key_to_flax(key: str) -> tuple[str, FlaxPath, str]:
    """``'layer1.0.bn1.running_var'`` -> ``('batch_stats', ('layer1_0', 'bn1'), 'var')``.

    The returned leaf for a ``weight`` is provisional: the Flax module at that path
    decides between ``kernel`` (conv/linear) and ``scale`` (norm layers).
    """
    *mods, leaf = key.split(".")
    path: list[str] = []
    for seg in mods:
        if seg.isdigit() and path:
            path[-1] = f"{path[-1]}_{seg}"
        else:
            path.append(seg)
    if leaf in _BN_LEAVES:
        return "batch_stats", tuple(path), _BN_LEAVES[leaf]
    return "params", tuple(path), leaf


_KERNEL_PERM = {4: (2, 3, 1, 0), 3: (2, 1, 0), 2: (1, 0)}  # conv2d OIHW->HWIO, conv1d, linear


def default_transform(leaf: str, a: np.ndarray, *, inverse: bool = False) -> np.ndarray:
    """Torch layout -> Flax layout (or back): kernels are transposed, everything else is as is."""
    if leaf != "kernel" or a.ndim not in _KERNEL_PERM:
        return a
    perm = _KERNEL_PERM[a.ndim]
    return a.transpose(np.argsort(perm) if inverse else perm)


def leaves_by_module(paths) -> dict[tuple[str, FlaxPath], set[str]]:
    """``{(collection, module path): {leaf names}}`` of flattened Flax variable paths."""
    out: dict[tuple[str, FlaxPath], set[str]] = {}
    for coll, *path, leaf in paths:
        out.setdefault((coll, tuple(path)), set()).add(leaf)
    return out


def nchw_flatten_linear(pattern: str, h: int, w: int) -> Transform:
    """The :class:`Transform` of a Linear (matched by ``pattern``) that follows a flatten
    of an ``(N, C, h, w)`` map.

    torch flattens channel-major (c, h, w); an NHWC model flattens (h, w, c). The
    transform permutes the torch weight's input axis accordingly and transposes it to
    Flax's ``(in, out)``, so the model needs no transpose at run time; the inverse
    undoes both for export.
    """

    def fn(a: np.ndarray) -> np.ndarray:
        out, n_in = a.shape
        if n_in % (h * w):
            raise ValueError(f"Linear input {n_in} is not C x {h} x {w}")
        return a.reshape(out, n_in // (h * w), h, w).transpose(2, 3, 1, 0).reshape(n_in, out)

    def inverse(k: np.ndarray) -> np.ndarray:
        n_in, out = k.shape
        return k.reshape(h, w, n_in // (h * w), out).transpose(3, 2, 0, 1).reshape(out, n_in)

    return Transform(pattern, fn, inverse)


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    shapes: Mapping[FlaxPath, jax.ShapeDtypeStruct],
    rules: Rules = Rules(),
    *,
    strict: bool = True,
) -> tuple[dict[str, Any], ConversionReport]:
    """Map a numpy state dict onto the variable ``shapes`` of a Flax module.

    Returns ``(variables, report)``; with ``strict`` any missing, unexpected or
    mis-shaped tensor raises :class:`ConversionError` listing all three groups.
    Without it, the variables hold what did convert (callers fill the rest).
    """
    report = ConversionReport()
    leaves_at = leaves_by_module(shapes)

    flat: dict[FlaxPath, jax.Array] = {}
    for key in sorted(state_dict):
        if rules.ignores(key):
            continue
        target = rules.target(key, leaves_at)
        report.mapping[key] = target
        joined = "/".join(target)
        if target not in shapes:
            report.unexpected.append(f"{key} (-> {joined})")
            continue
        arr = np.asarray(state_dict[key])
        custom = rules.transform_for(joined)
        arr = custom.fn(arr) if custom else default_transform(target[-1], arr)
        want = shapes[target]
        if tuple(arr.shape) != tuple(want.shape):
            report.mismatched.append(Mismatch(key, joined, tuple(arr.shape), tuple(want.shape)))
            continue
        # A fresh numpy copy (never alias torch memory), then a plain device transfer:
        # casting with jnp, or even ``jnp.asarray`` of a numpy array (a ``jit(stage)``
        # per distinct shape in JAX 0.10), compiles a kernel per shape (70 for EfficientNet-B0).
        flat[target] = jax.device_put(np.array(arr, dtype=want.dtype, copy=True))

    mis_shaped = {m.target for m in report.mismatched}
    report.missing = sorted(
        j for j in ("/".join(p) for p in shapes if p not in flat) if j not in mis_shaped
    )
    if strict and not report.ok:
        raise ConversionError(str(report), report)
    return traverse_util.unflatten_dict(flat), report
