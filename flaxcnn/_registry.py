"""The model registry: every architecture variant under one lower-case name.

A variant is data: a module class plus the fields that define it, and the names
the same architecture has in torchvision and timm (which tells the converter what
it can load and the equivalence tests what to prove). ``register_model`` returns
the CamelCase constructor that ``flaxcnn.models`` exports, named from the registry name
by one rule (:func:`constructor_name`); :func:`variants` binds a family's shared metadata.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

import flax.linen as nn

__all__ = [
    "SOURCES",
    "ModelSpec",
    "constructor_name",
    "create_model",
    "find_by_source",
    "get_model_spec",
    "list_models",
    "register_model",
    "variants",
]

# Libraries flaxcnn converts from; "openai" is OpenAI's ``clip`` package.
SOURCES = ("torchvision", "timm", "openai", "open_clip")
# "clip": image-text models (two inputs, two towers; see flaxcnn.models.clip).
TASKS = ("classification", "segmentation", "clip")
_REGISTRY: dict[str, ModelSpec] = {}
_BY_SOURCE: dict[tuple[str, str], str] = {}
# Module fields that are never user configuration.
_PRIVATE_FIELDS = {"parent", "name"}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one variant: the module config and its metadata.

    Attributes:
        name: registry name (lower case, as timm/torchvision spell it).
        cls: the flax module class of the family.
        config: the fields that make this variant (stage sizes, widths, ...): keyword
            arguments of ``cls``, kept apart from the metadata below, so any field name
            (even ``task``) can be set.
        family: the family module it lives in (``'resnet'``).
        sources: torch library -> that library's name for the same architecture.
        input_size: default ``(H, W, C)``.
        classifier: torch name of the final linear layer (``num_classes`` is read from it),
            in the family's canonical naming (the one its Flax names mirror).
        first_conv: torch name of the first conv (``in_chans`` is read from it), likewise.
        paper: the reference, for docs.
        verify_size: the odd, non-square ``(H, W)`` equivalence tests use besides
            ``input_size``; ``None``: verify's default (97x131). For where torch cannot run that.
        task: ``'classification'`` (logits ``(N, num_classes)``) or ``'segmentation'``
            (per-pixel NHWC logits, or a dict of them with the main map under ``'out'``).
        torch_kwargs: keyword arguments the source libraries' builders need to build this
            exact architecture (e.g. torchvision FCN's ``aux_loss=True``).
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
    verify_size: tuple[int, int] | None = None
    task: str = "classification"
    torch_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task must be one of {TASKS}, got {self.task!r}")
        for src in self.sources:
            if src not in SOURCES:
                raise ValueError(f"{self.name}: unknown source {src!r}; known: {SOURCES}")
        bad = sorted(set(self.config) - set(self.fields))
        if bad:
            raise TypeError(f"{self.name}: {self.cls.__name__} has no field(s) {bad}")
        # Frozen and read-only all the way down: a spec is shared by every model built from it.
        setattr_ = partial(object.__setattr__, self)
        setattr_("config", MappingProxyType(dict(self.config)))
        setattr_("sources", MappingProxyType(dict(self.sources)))
        setattr_("input_size", tuple(self.input_size))
        if self.verify_size is not None:
            setattr_("verify_size", tuple(self.verify_size))
        setattr_("torch_kwargs", MappingProxyType(dict(self.torch_kwargs)))

    @property
    def min_size(self) -> int:
        """The smallest input side the variant takes: its module's ``min_input_size``,
        which the module checks on every call (tests run at max(64, this))."""
        return self.build().min_input_size

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
                f"{self.name}: unknown argument(s) {unknown}; it accepts: {', '.join(self.fields)}"
            )
        _check_common_fields(self, overrides)
        return self.cls(**{**self.config, **overrides})


def _check_common_fields(spec: ModelSpec, overrides: Mapping[str, Any]) -> None:
    """One-line errors for the arguments every family shares, before a module is built
    (they would otherwise fail deep inside a layer: ``num_classes='10'``, ``in_chans=0``),
    and for ``out_indices`` without ``features_only``, which timm refuses too."""
    for field, low in (("num_classes", 0), ("in_chans", 1)):
        if field in overrides:
            v = overrides[field]
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{spec.name}: {field} must be an integer >= {low}, got {v!r}")
    if "out_indices" in overrides and not overrides.get("features_only", False):
        default = spec.config.get("out_indices", _field_default(spec.cls, "out_indices"))
        if overrides["out_indices"] != default:
            raise ValueError(
                f"{spec.name}: out_indices selects the maps of features_only=True; "
                "pass features_only=True with it"
            )


def _field_default(cls: type, name: str) -> Any:
    field = {f.name: f for f in dataclasses.fields(cls)}.get(name)
    return None if field is None else field.default


# The metadata ``register_model`` accepts: every ModelSpec field but the three it is given.
_METADATA = tuple(
    f.name for f in dataclasses.fields(ModelSpec) if f.name not in ("name", "cls", "config")
)


def register_model(
    name: str,
    cls: type[nn.Module],
    config: Mapping[str, Any] | None = None,
    *,
    family: str,
    sources: Mapping[str, str] | Iterable[str] = (),
    **metadata: Any,
) -> Callable[..., nn.Module]:
    """Register a variant and return its constructor.

    ``ResNet50 = register_model('resnet50', ResNet, {'stage_sizes': (3, 4, 6, 3)},
    family='resnet', sources=('torchvision', 'timm'))``.

    Args:
        name: the registry name, lower case.
        cls: the family's module class.
        config: the fields of ``cls`` that make this variant.
        family, sources, **metadata: the :class:`ModelSpec` fields (``input_size``,
            ``classifier``, ``first_conv``, ``paper``, ``verify_size``,
            ``task``, ``torch_kwargs``). ``sources`` maps library -> its name for this
            architecture; a plain list of libraries means each calls it ``name``.

    The constructor's ``__name__`` is :func:`constructor_name` of ``name``.

    Raises ``ValueError`` on a duplicate name or a source name already claimed, and
    ``TypeError`` if ``config`` names a field the class does not have or ``metadata`` a
    field ``ModelSpec`` does not have.
    """
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered ({_REGISTRY[name].cls.__name__})")
    unknown = sorted(set(metadata) - set(_METADATA))
    if unknown:
        raise TypeError(
            f"{name}: unknown registry metadata {unknown}; known: {', '.join(_METADATA)} "
            "(module fields go in config)"
        )
    if isinstance(sources, str):
        raise TypeError(
            f"{name}: sources must be a mapping or a list of libraries, not {sources!r}"
        )
    sources = dict(sources) if isinstance(sources, Mapping) else dict.fromkeys(sources, name)
    spec = ModelSpec(name, cls, dict(config or {}), family=family, sources=sources, **metadata)
    for src, src_name in spec.sources.items():
        if (src, src_name) in _BY_SOURCE:
            raise ValueError(
                f"{name}: {src} model {src_name!r} is already mapped to {_BY_SOURCE[src, src_name]!r}"
            )
    _REGISTRY[name] = spec
    for src, src_name in spec.sources.items():
        _BY_SOURCE[src, src_name] = name
    return _constructor(spec)


def variants(
    cls: type[nn.Module], *, family: str, **metadata: Any
) -> Callable[..., Callable[..., nn.Module]]:
    """A family's :func:`register_model`, with its class and shared metadata bound.

    ``register = variants(DenseNet, family='densenet', sources=('torchvision', 'timm'))``,
    then ``DenseNet121 = register('densenet121', {'growth_rate': 32, ...})``; metadata given
    to ``register`` replaces the family's for that variant.
    """

    def register(
        name: str, config: Mapping[str, Any] | None = None, **overrides: Any
    ) -> Callable[..., nn.Module]:
        return register_model(name, cls, config, **{"family": family, **metadata, **overrides})

    return register


def _constructor(spec: ModelSpec) -> Callable[..., nn.Module]:
    def constructor(**overrides: Any) -> nn.Module:
        return spec.build(**overrides)

    cls_name = spec.cls.__name__
    settings = ", ".join(f"{k}={v!r}" for k, v in spec.config.items())
    sources = ", ".join(f"{s} {n!r}" for s, n in spec.sources.items())
    constructor.__name__ = constructor.__qualname__ = constructor_name(spec.name)
    constructor.__doc__ = (
        f"{cls_name}({settings}): the ``{spec.name}`` variant.\n\n"
        f"Keyword arguments override any field of :class:`{cls_name}` "
        f"({', '.join(spec.fields)}).\n"
        + (f"Converts from: {sources}.\n" if sources else "")
        + (f"\nReference: {spec.paper}\n" if spec.paper else "")
    )
    constructor.spec = spec  # type: ignore[attr-defined]
    return constructor


# How a word of a registry name is spelled in a constructor name (anything else: Capitalized).
# ``_BN`` and ``FCN_`` keep the underscore of torchvision's ``VGG11_BN``-style names.
_WORDS = {
    "alexnet": "AlexNet",
    "bn": "_BN",
    "clip": "CLIP",
    "convnext": "ConvNeXt",
    "d2l": "D2L",
    "densenet": "DenseNet",
    "efficientnet": "EfficientNet",
    "fcn": "FCN_",
    "googlenet": "GoogLeNet",
    "lenet": "LeNet",
    "mobilenet": "MobileNet",
    "resnet": "ResNet",
    "resnext": "ResNeXt",
    "rn": "RN",
    "se": "SE",
    "tf": "TF",
    "tv": "TV",
    "unet": "UNet",
    "vgg": "VGG",
    "vit": "ViT",
    "zfnet": "ZFNet",
}
# Constructors not named by the rule: the rule's name is the family class's own (``AlexNet``,
# ``GoogLeNet``), or the architecture's common name is not its registry name.
_EXCEPTIONS = {
    "alexnet": "AlexNetTV",
    "googlenet": "InceptionV1",
    "legacy_senet154": "SENet154",
    "nin": "NetworkInNetwork",
}


def constructor_name(name: str) -> str:
    """The CamelCase constructor name of a registry name (``resnext50_32x4d`` ->
    ``ResNeXt50_32x4d``, ``tf_efficientnetv2_s`` -> ``TFEfficientNetV2S``).

    Each ``_``-separated part's leading letters are spelled word by word (:data:`_WORDS`,
    longest match first, the rest capitalised); what follows them stays as written (``resnet50d`` ->
    ``ResNet50d``); a part that starts with a digit keeps its ``_`` when the name so far ends
    in one (``wide_resnet50_2`` -> ``WideResNet50_2``, but ``mobilenetv3_large_100`` ->
    ``MobileNetV3Large100``).
    """
    if name in _EXCEPTIONS:
        return _EXCEPTIONS[name]
    out = ""
    for part in name.split("_"):
        if part[:1].isdigit():
            out += ("_" if out[-1:].isdigit() else "") + part
        elif part in _WORDS:
            out += _WORDS[part]
        else:
            letters, rest = re.fullmatch(r"([a-z]*)(.*)", part).groups()
            out += _spell(letters) + rest
    return out


def _spell(letters: str) -> str:
    words = sorted(_WORDS, key=len, reverse=True)
    out = ""
    while letters:
        word = next((w for w in words if letters.startswith(w)), None)
        if word is None:
            return out + letters.capitalize()
        out, letters = out + _WORDS[word], letters[len(word) :]
    return out


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


def spec_of_module(module: nn.Module) -> ModelSpec | None:
    """The registered variant a module was built from (or is closest to): same class, and
    a variant whose every config field the module shares first (the one that sets the
    most: ``resnet50d``, not ``resnet50``), else the most config fields equal (one class can
    serve several families: EfficientNet, the MobileNets). ``None`` for an unregistered
    class."""

    def matches(spec: ModelSpec) -> tuple[bool, int]:
        same = sum(getattr(module, k, None) == v for k, v in spec.config.items())
        return same == len(spec.config), same

    candidates = [s for s in _REGISTRY.values() if s.cls is type(module)]
    return max(candidates, key=matches, default=None)


def model_name(module: nn.Module) -> str:
    """What errors call ``module``: the registered variant it is or is closest to
    (:func:`spec_of_module`), else its class. One class builds several families
    (EfficientNet's builds the MobileNets), so the class name alone misleads."""
    spec = spec_of_module(module)
    return spec.name if spec is not None else type(module).__name__


def default_input_shape(module: nn.Module, batch: int = 1) -> tuple[int, int, int, int]:
    """``(batch, H, W, C)``: the default size of the module's registered variant (224x224
    for an unregistered class) with the module's own ``in_chans``."""
    spec = spec_of_module(module)
    h, w, c = spec.input_size if spec else (224, 224, 3)
    return (batch, h, w, getattr(module, "in_chans", c))


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


def _natural_key(name: str) -> list[Any]:
    """timm's natural order: digit runs compare as numbers (``resnet18`` < ``resnet101``)."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


def list_models(
    pattern: str = "*", *, source: str | None = None, family: str | None = None
) -> list[str]:
    """Registered names matching an fnmatch ``pattern``, optionally only those that
    convert from ``source`` or belong to ``family``, in timm's natural order
    (``resnet18`` before ``resnet101``). An unknown ``source`` or ``family`` raises
    ``ValueError`` (with close names), rather than matching nothing."""
    if source is not None and source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {SOURCES}")
    if family is not None and family not in {s.family for s in _REGISTRY.values()}:
        raise _unknown(family, sorted({s.family for s in _REGISTRY.values()}), "family")
    return sorted(
        (
            n
            for n, s in _REGISTRY.items()
            if fnmatch.fnmatchcase(n, pattern)
            and (source is None or source in s.sources)
            and (family is None or s.family == family)
        ),
        key=_natural_key,
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
