"""The model registry: every architecture variant under one lower-case name.

A variant is data: a module class plus the fields that define it, and the names
the same architecture has in torchvision and timm (which tells the converter what
it can load and the equivalence tests what to prove). ``register_model`` returns
the CamelCase constructor that ``flaxcnn.models`` exports.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import flax.linen as nn

__all__ = [
    "SOURCES",
    "ModelSpec",
    "create_model",
    "find_by_source",
    "get_model_spec",
    "list_models",
    "register_model",
]

SOURCES = ("torchvision", "timm")
_REGISTRY: dict[str, ModelSpec] = {}
_BY_SOURCE: dict[tuple[str, str], str] = {}
# Module fields that are never user configuration.
_PRIVATE_FIELDS = {"parent", "name"}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one variant.

    Attributes:
        name: registry name (lower case, as timm/torchvision spell it).
        cls: the flax module class of the family.
        config: the fields that make this variant (stage sizes, widths, ...).
        family: the family module it lives in (``'resnet'``).
        sources: torch library -> that library's name for the same architecture.
        input_size: default ``(H, W, C)``.
        classifier: torch name of the final linear layer (``num_classes`` is read from it),
            in the family's canonical naming (the one its Flax names mirror).
        first_conv: torch name of the first conv (``in_chans`` is read from it), likewise.
        paper: the reference, for docs.
        min_size: smallest input side the architecture accepts (tests use max(64, this)).
    """

    name: str
    cls: type[nn.Module]
    config: Mapping[str, Any]
    family: str
    sources: Mapping[str, str]
    input_size: tuple[int, int, int] = (224, 224, 3)
    classifier: str | None = "fc"
    first_conv: str | None = "conv1"
    paper: str = ""
    min_size: int = 32

    @property
    def fields(self) -> tuple[str, ...]:
        """The constructor fields a user may override."""
        return tuple(
            f.name for f in dataclasses.fields(self.cls) if f.init and f.name not in _PRIVATE_FIELDS
        )

    def build(self, **overrides: Any) -> nn.Module:
        """Instantiate the variant, with ``overrides`` replacing any of its fields."""
        unknown = sorted(set(overrides) - set(self.fields))
        if unknown:
            raise TypeError(
                f"{self.name}: unknown argument(s) {unknown}; "
                f"{self.cls.__name__} accepts: {', '.join(self.fields)}"
            )
        return self.cls(**{**self.config, **overrides})


def register_model(
    name: str,
    cls: type[nn.Module],
    *,
    family: str,
    camel: str | None = None,
    sources: Mapping[str, str] | None = None,
    input_size: tuple[int, int, int] = (224, 224, 3),
    classifier: str | None = "fc",
    first_conv: str | None = "conv1",
    paper: str = "",
    min_size: int = 32,
    **config: Any,
) -> Callable[..., nn.Module]:
    """Register a variant and return its constructor (``ResNet50 = register_model(...)``).

    ``camel`` is the constructor's ``__name__`` (default: the class name followed by the
    rest of ``name``, e.g. ``resnet50`` -> ``ResNet50``).

    Raises ``ValueError`` on a duplicate name or a source name already claimed, and
    ``TypeError`` if ``config`` names a field the class does not have.
    """
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered ({_REGISTRY[name].cls.__name__})")
    sources = dict(sources or {})
    for src, src_name in sources.items():
        if src not in SOURCES:
            raise ValueError(f"{name}: unknown source {src!r}; known: {SOURCES}")
        if (src, src_name) in _BY_SOURCE:
            raise ValueError(
                f"{name}: {src} model {src_name!r} is already mapped to {_BY_SOURCE[src, src_name]!r}"
            )
    spec = ModelSpec(
        name=name,
        cls=cls,
        config=MappingProxyType(dict(config)),
        family=family,
        sources=MappingProxyType(sources),
        input_size=tuple(input_size),
        classifier=classifier,
        first_conv=first_conv,
        paper=paper,
        min_size=min_size,
    )
    bad = sorted(set(config) - set(spec.fields))
    if bad:
        raise TypeError(f"{name}: {cls.__name__} has no field(s) {bad}")
    _REGISTRY[name] = spec
    for src, src_name in sources.items():
        _BY_SOURCE[src, src_name] = name

    def constructor(**overrides: Any) -> nn.Module:
        return spec.build(**overrides)

    settings = ", ".join(f"{k}={v!r}" for k, v in config.items())
    constructor.__name__ = constructor.__qualname__ = camel or _camel(name, cls)
    constructor.__doc__ = (
        f"{cls.__name__}({settings}): the ``{name}`` variant.\n\n"
        f"Keyword arguments override any field of :class:`{cls.__name__}` "
        f"({', '.join(spec.fields)}).\n"
        + (
            f"Converts from: {', '.join(f'{s} {n!r}' for s, n in sources.items())}.\n"
            if sources
            else ""
        )
        + (f"\nReference: {paper}\n" if paper else "")
    )
    constructor.spec = spec  # type: ignore[attr-defined]
    return constructor


def _camel(name: str, cls: type) -> str:
    # resnet50 -> ResNet50, resnext50_32x4d -> ResNeXt50_32x4d: keep the class's spelling.
    base = cls.__name__
    return base + name[len(base) :] if name.lower().startswith(base.lower()) else name.title()


def _unknown(name: str, known: list[str], what: str = "model") -> ValueError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {what} {name!r}{hint} (flaxcnn.list_models() lists them all)")


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered name; unknown names suggest close ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise _unknown(name, list(_REGISTRY)) from None


def create_model(name: str, *, pretrained: Any = False, **overrides: Any) -> Any:
    """Build a registered model: ``create_model('resnet50', num_classes=10)``.

    ``overrides`` may set any field of the family's module class; anything else
    raises ``TypeError`` naming the accepted fields.

    With ``pretrained`` (``True``, a weight tag such as ``'IMAGENET1K_V2'`` or
    ``'a1_in1k'``, or a local checkpoint path), or a tagged name
    (``'resnet50.a1_in1k'``), returns ``(module, variables)`` holding converted
    weights; see :func:`flaxcnn.pretrained.load_pretrained` (``num_classes`` and
    ``in_chans`` then adapt the head and the first conv).
    """
    if pretrained or "." in name:
        from .pretrained import load_pretrained

        return load_pretrained(name, pretrained or True, **overrides)
    return get_model_spec(name).build(**overrides)


def list_models(
    pattern: str = "*", *, source: str | None = None, family: str | None = None
) -> list[str]:
    """Registered names matching an fnmatch ``pattern``, optionally only those that
    convert from ``source`` or belong to ``family``; sorted."""
    if source is not None and source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {SOURCES}")
    return sorted(
        n
        for n, s in _REGISTRY.items()
        if fnmatch.fnmatchcase(n, pattern)
        and (source is None or source in s.sources)
        and (family is None or s.family == family)
    )


def find_by_source(source: str, source_name: str) -> ModelSpec:
    """The spec whose ``sources[source] == source_name`` (the converter's lookup)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    try:
        return _REGISTRY[_BY_SOURCE[source, source_name]]
    except KeyError:
        known = [n for s, n in _BY_SOURCE if s == source]
        raise _unknown(source_name, known, f"{source} model") from None
