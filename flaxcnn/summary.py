"""Model summary: the quantities the seed lectures compute by hand, computed from the model.

Parameters (total and per top-level submodule), FLOPs from XLA's cost analysis of the
forward pass and the multiply-adds of its convolutions and matmuls (the papers' "mult-adds"),
activation memory per image (the sum of every leaf layer's output, as the
lectures' VGG-16 memory table counts it), and the receptive field of the last feature map
(and of each stage, for models with ``features_only``), found by walking the jaxpr of the
forward pass. Nothing is executed: shapes come from ``jax.eval_shape``, FLOPs from XLA's
cost analysis of the abstract computation, the receptive field from tracing.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.extend import core as jex

from ._registry import get_model_spec
from .layers import Dropout, Dropout2d, DropPath
from .xla import kernels

__all__ = [
    "ModelSummary",
    "ReceptiveField",
    "count_macs",
    "layer_receptive_fields",
    "receptive_field",
    "receptive_fields",
    "summary",
]


def _counted(mdl: nn.Module, method: str) -> bool:
    # Identity in eval mode: their "output" is the input again, not new memory.
    return method == "__call__" and not isinstance(mdl, (DropPath, Dropout, Dropout2d, nn.Dropout))


@dataclasses.dataclass
class ModelSummary:
    """What :func:`summary` reports; ``str()`` prints it as ``flaxcnn summary NAME`` does."""

    name: str
    input_shape: tuple[int, ...]
    params: int
    params_by_module: dict[str, int]
    flops: float
    activation_bytes: int
    macs: int
    layers: int
    receptive_field: ReceptiveField | None = None
    stage_receptive_fields: list[ReceptiveField] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        rows = [
            f"{self.name}  input {self.input_shape}",
            f"  parameters        {self.params:,}",
            f"  FLOPs             {self.flops / 1e9:.3f} G  (XLA cost analysis; a multiply-add is 2)",
            f"  mult-adds         {self.macs / 1e6:,.1f} M  (convolutions and matmuls only, as papers count)",
            f"  activations/image {self.activation_bytes / 2**20:.2f} MiB  (outputs of {self.layers} leaf layers, float32)",
            f"  receptive field   {self.receptive_field or 'n/a'}  (last feature map, H x W)",
        ]
        rows += [f"    stage {i}: {f}" for i, f in enumerate(self.stage_receptive_fields)]
        rows.append("  parameters by submodule:")
        rows += [f"    {k:24s} {v:>14,}" for k, v in self.params_by_module.items()]
        return "\n".join(rows)


def _module_and_input(model: str | nn.Module, input_size: tuple[int, int] | None):
    if isinstance(model, str):
        spec = get_model_spec(model)
        module = spec.build()
        h, w, c = spec.input_size
    else:
        module = model
        h, w, c = 224, 224, getattr(model, "in_chans", 3)
    if input_size:
        h, w = input_size
    return module, jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)


def summary(
    model: str | nn.Module, input_size: tuple[int, int] | None = None, *, compile: bool = True
) -> ModelSummary:
    """Summarise a registered model (by name) or a module, for one image of ``input_size`` (H, W).

    FLOPs come from XLA's cost analysis of the compiled forward pass, as the portable kernels
    write it (every convolution one ``conv_general_dilated``; on CPU a grouped conv is a
    loop over its groups, whose body XLA would count once); ``compile=False`` analyses the
    lowered (unoptimised) computation instead, which takes a fraction of the time and
    counts the same convolutions and matmuls.
    """
    name = model if isinstance(model, str) else type(model).__name__
    module, x = _module_and_input(model, input_size)
    h, w, c = x.shape[1:]
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

    macs = count_macs(module.apply, variables, x)
    # The portable kernels write every convolution as one: XLA's cost analysis counts a
    # loop's body once, and on CPU grouped convs loop over their groups.
    with kernels("portable"):
        lowered = jax.jit(module.apply).lower(variables, x)
    cost: Any = lowered.compile().cost_analysis() if compile else lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    stages = []
    if "features_only" in {f.name for f in dataclasses.fields(module)}:
        feats = module.clone(features_only=True)
        fvars = jax.eval_shape(feats.init, jax.random.key(0), x)
        stages, _ = receptive_fields(lambda x, v: feats.apply(v, x), x, fvars)
    return ModelSummary(
        name=name,
        input_shape=(1, h, w, c),
        params=sum(by_module.values()),
        params_by_module=by_module,
        flops=float((cost or {}).get("flops", float("nan"))),
        activation_bytes=act,
        macs=macs,
        layers=len(leaves),
        receptive_field=receptive_field(module, (h, w), variables),
        stage_receptive_fields=stages,
    )


def count_macs(fn, *args) -> int:
    """Multiply-adds of the convolutions and matrix products in ``fn(*args)`` (arrays or
    ShapeDtypeStructs), counted from its jaxpr: what papers report as "mult-adds" (MobileNet's
    tables) and fvcore/ptflops as MACs. BatchNorm, activations, biases, pooling and
    softmaxes are not counted; XLA's cost analysis (``summary().flops``) counts them too.

    Traced on the portable kernels (:func:`flaxcnn.kernels`), where every convolution is one
    ``conv_general_dilated``: on CPU a depthwise conv runs as shifted slices and a strided
    conv's derivative as several convs, the same arithmetic written differently.
    """
    with kernels("portable"):
        closed = jax.make_jaxpr(fn)(*args)
    return _jaxpr_macs(closed.jaxpr)


def _jaxpr_macs(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            rhs, out = eqn.invars[1].aval, eqn.outvars[0].aval
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) axes
            window = int(np.prod([rhs.shape[d] for d in rhs_spec[2:]]))
            # Each output element sums over a window of the input features of its group.
            total += int(np.prod(out.shape)) * window * rhs.shape[rhs_spec[1]]
        elif name == "dot_general":
            lhs, rhs = (v.aval for v in eqn.invars)
            (lc, _), _ = eqn.params["dimension_numbers"]
            contracted = int(np.prod([lhs.shape[d] for d in lc]))
            total += int(np.prod(eqn.outvars[0].aval.shape)) * contracted
        elif name == "scan":
            total += eqn.params["length"] * _jaxpr_macs(eqn.params["jaxpr"].jaxpr)
        elif name == "cond":  # the costliest branch
            total += max(_jaxpr_macs(b.jaxpr) for b in eqn.params["branches"])
        elif (sub := _sub_jaxpr(eqn)) is not None:
            total += _jaxpr_macs(sub[0])
    return total


# ---------------------------------------------------------------------------------------
# Receptive field, from the jaxpr of the forward pass.


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of one feature map, per spatial axis (H, W), in input pixels.

    ``size`` is the theoretical receptive field (padding counted as pixels, as the lectures
    count it; it may exceed the image), ``stride`` the distance in input pixels between two
    neighbouring pixels of the map (the "jump"), ``shape`` the map's spatial size.
    ``global_context``: a globally pooled value (squeeze-excite gating) was multiplied back
    into the map, so strictly every pixel also sees the whole image.
    """

    size: tuple[int, int]
    stride: tuple[int | Fraction, int | Fraction]
    shape: tuple[int, int]
    global_context: bool = False

    def __str__(self) -> str:
        h, w = self.size
        sh, sw = self.stride
        s = f"{h}x{w} px (map {self.shape[0]}x{self.shape[1]}, stride {sh}x{sw})"
        return s + (" + global context (squeeze-excite)" if self.global_context else "")


# One spatial axis of an array: map pixel o sees input pixels
# [start + o * jump, start + o * jump + rf - 1] along input axis ``sid`` (0 = H, 1 = W).
_Axis = tuple[int, int, Fraction, Fraction, Fraction]  # (array axis, sid, rf, jump, start)


@dataclasses.dataclass(frozen=True)
class _Sp:
    """What the walk knows about one array that depends on the image: its spatial axes,
    and whether a globally pooled value flowed into it."""

    axes: tuple[_Axis, ...] = ()
    glob: bool = False

    def moved(self, where) -> _Sp:
        """The same axes at new array positions (``where(axis)``)."""
        return _Sp(tuple((where(a), *rest) for a, *rest in self.axes), self.glob)


_GLOBAL = _Sp(glob=True)
# Same-shape primitives that mix positions along an axis: not local, so not pass-through.
_NOT_POINTWISE = {"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "sort", "argsort"}
_WINDOWED = {"reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window"}
_REDUCE = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"}


def _window(ax: _Axis, k, stride, pad_lo, dil=1, base_dil=1) -> _Axis:
    """A window of ``k`` taps dilated by ``dil``, stride ``stride``, after ``pad_lo``
    padding, over the input upsampled by ``base_dil`` (a transposed conv)."""
    a, sid, rf, jump, start = ax
    k_eff = (k - 1) * dil + 1
    taps = -(-k_eff // base_dil)  # input pixels one window touches on the upsampled grid
    step = jump / base_dil
    return (a, sid, rf + (taps - 1) * jump, step * stride, start - pad_lo * step)


def _merge(infos, glob=False) -> _Sp:
    """Branches meeting (add, concat, multiply): per axis the union of their fields."""
    axes: dict[int, list] = {}
    for info in infos:
        glob = glob or info.glob
        for a, sid, rf, jump, start in info.axes:
            if a in axes:
                _, rf0, jump0, start0 = axes[a]
                lo, hi = min(start, start0), max(start + rf, start0 + rf0)
                rf, jump, start = hi - lo, max(jump, jump0), lo
            axes[a] = [sid, rf, jump, start]
    return _Sp(tuple((a, *v) for a, v in sorted(axes.items())), glob)


class _Walk:
    """Propagates :class:`_Sp` through a jaxpr, equation by equation."""

    def __init__(self):
        self.ends: list[ReceptiveField] = []  # maps that pooling / flattening consumed

    def end(self, info: _Sp, shape) -> _Sp:
        """``info``'s spatial axes are consumed: record the map, return a global value."""
        by_sid = {sid: (rf, jump, shape[a]) for a, sid, rf, jump, _ in info.axes}
        if set(by_sid) == {0, 1}:
            self.ends.append(_field(by_sid, info.glob))
        return _GLOBAL

    def run(self, jaxpr, consts_info, in_info):
        env = dict(zip(jaxpr.constvars, consts_info, strict=True))
        env.update(zip(jaxpr.invars, in_info, strict=True))

        def read(v):
            return None if isinstance(v, jex.Literal) else env.get(v)

        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            # Arrays that do not depend on the image (weights, constants) carry nothing.
            none = all(i is None for i in ins)
            outs = [None] * len(eqn.outvars) if none else self.eqn(eqn, ins)
            env.update(zip(eqn.outvars, outs, strict=True))
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, eqn, ins) -> list[_Sp | None]:
        name, p = eqn.primitive.name, eqn.params
        shapes = [getattr(v.aval, "shape", ()) for v in eqn.invars]
        out_shape = eqn.outvars[0].aval.shape if eqn.outvars else ()
        glob = any(i is not None and i.glob for i in ins)
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            jaxpr, n_consts = sub
            return self.run(jaxpr, [None] * n_consts, ins)
        first = ins[0]
        if name == "conv_general_dilated":
            if ins[1] is not None and ins[1].axes:  # the image as a kernel: not a CNN
                return [self.end(ins[1], shapes[1])]
            if first is None:
                return [_Sp(glob=glob)]
            lspec, rspec, ospec = p["dimension_numbers"]
            spatial = {lspec[2 + i]: i for i in range(len(lspec) - 2)}
            if any(ax[0] not in spatial for ax in first.axes):
                return [self.end(first, shapes[0])]
            axes = []
            for ax in first.axes:
                i = spatial[ax[0]]
                ax = _window(
                    ax,
                    shapes[1][rspec[2 + i]],
                    p["window_strides"][i],
                    p["padding"][i][0],
                    p["rhs_dilation"][i],
                    p["lhs_dilation"][i],
                )
                axes.append((ospec[2 + i], *ax[1:]))
            return [_Sp(tuple(axes), glob)]
        if name in _WINDOWED:
            n = len(ins) // 2 if name == "reduce_window" else 1
            grown = [
                _Sp(
                    tuple(
                        _window(
                            ax,
                            p["window_dimensions"][ax[0]],
                            p["window_strides"][ax[0]],
                            p["padding"][ax[0]][0],
                            p["window_dilation"][ax[0]],
                            p["base_dilation"][ax[0]],
                        )
                        for ax in info.axes
                    ),
                    info.glob,
                )
                for info in ins[:n]
                if info is not None
            ]
            return [_merge(grown, glob)] * len(eqn.outvars)
        if name == "transpose":
            perm = list(p["permutation"])
            return [first.moved(perm.index)]
        if name == "broadcast_in_dim":
            dims = p["broadcast_dimensions"]
            if any(shapes[0][ax[0]] != out_shape[dims[ax[0]]] for ax in first.axes):
                return [self.end(first, shapes[0])]  # a 1x1 map broadcast: global
            return [first.moved(lambda a: dims[a])]
        if name in ("reshape", "squeeze"):
            where = _reshape_axes(shapes[0], out_shape, first.axes)
            return [self.end(first, shapes[0]) if where is None else first.moved(where.get)]
        if name in _REDUCE:
            red = set(p["axes"])
            if any(ax[0] in red for ax in first.axes):
                return [self.end(first, shapes[0])]
            left = [a for a in range(len(shapes[0])) if a not in red]
            return [first.moved(left.index)]
        if name == "dot_general":
            (lc, rc), (lb, rb) = p["dimension_numbers"]
            parts = []
            for k, (info, c, b) in enumerate(((ins[0], lc, lb), (ins[1], rc, rb))):
                if info is None:
                    continue
                if any(ax[0] in c for ax in info.axes):
                    return [self.end(info, shapes[k])]  # flatten + linear, adaptive pooling
                free = [a for a in range(len(shapes[k])) if a not in c and a not in b]
                offset = len(b) + (0 if k == 0 else len(shapes[0]) - len(lc) - len(lb))
                parts.append(
                    info.moved(
                        lambda a, b=b, f=free, o=offset: b.index(a) if a in b else o + f.index(a)
                    )
                )
            return [_merge(parts, glob)]
        if name == "pad":
            cfg = p["padding_config"]
            axes = tuple(
                (a, sid, rf, jump / (cfg[a][2] + 1), start - cfg[a][0] * jump)
                for a, sid, rf, jump, start in first.axes
            )
            return [_Sp(axes, glob)]
        if name == "slice":
            starts, strides = p["start_indices"], p["strides"]
            axes = tuple(
                (a, sid, rf, jump * (strides[a] if strides else 1), start + starts[a] * jump)
                for a, sid, rf, jump, start in first.axes
            )
            return [_Sp(axes, glob)]
        if name in ("concatenate", "dynamic_slice", "dynamic_update_slice", "rev"):
            return [_merge([i for i in ins if i is not None], glob)]
        if name not in _NOT_POINTWISE and len(eqn.outvars) == 1:
            # Pointwise ops; lax broadcasts size-1 axes, and a 1x1 map broadcast is global.
            parts = []
            for info, shape in zip(ins, shapes, strict=True):
                if info is None:
                    continue
                if len(shape) != len(out_shape):
                    break
                keep = tuple(ax for ax in info.axes if shape[ax[0]] == out_shape[ax[0]])
                if len(keep) < len(info.axes):
                    self.end(info, shape)
                parts.append(_Sp(keep, info.glob or len(keep) < len(info.axes)))
            else:
                return [_merge(parts, glob)]
        # Anything else that touches a map (a gather that resamples, a sort...) ends it
        # there, as a pooling head does.
        for info, shape in zip(ins, shapes, strict=True):
            if info is not None and info.axes:
                self.end(info, shape)
        return [_GLOBAL] * len(eqn.outvars)


def _sub_jaxpr(eqn):
    """``(jaxpr, number of consts)`` of a call-like equation (jit, custom_jvp/vjp, remat)."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(key)
        if isinstance(j, jex.ClosedJaxpr):
            return j.jaxpr, len(j.consts)
        if isinstance(j, jex.Jaxpr):
            return j, len(j.constvars)
    return None


def _reshape_axes(old, new, axes) -> dict[int, int] | None:
    """Where each spatial axis lands after a reshape, or None if one is merged away."""
    where = {}
    for a, *_ in axes:
        before = int(np.prod(old[:a]))
        hit = [b for b in range(len(new)) if new[b] == old[a] and int(np.prod(new[:b])) == before]
        if not hit or old[a] == 1:
            return None
        where[a] = hit[0]
    return where


def _field(by_sid, glob) -> ReceptiveField:
    def num(x):
        return int(x) if x == int(x) else x

    return ReceptiveField(
        size=(num(by_sid[0][0]), num(by_sid[1][0])),
        stride=(num(by_sid[0][1]), num(by_sid[1][1])),
        shape=(by_sid[0][2], by_sid[1][2]),
        global_context=glob,
    )


def _trace(fn, x, *args) -> tuple[list[ReceptiveField | None], list[ReceptiveField]]:
    # The portable form: every convolution one op (on CPU a grouped conv is a loop over
    # its groups, stacked along a new axis, which the walk does not follow).
    with kernels("portable"):
        closed = jax.make_jaxpr(fn)(x, *args)
    one, zero = Fraction(1), Fraction(0)
    x_info = _Sp(((1, 0, one, one, zero), (2, 1, one, one, zero)))
    rest = [None] * (len(closed.jaxpr.invars) - 1)  # the arguments after x: weights
    walk = _Walk()
    outs = walk.run(closed.jaxpr, [None] * len(closed.consts), [x_info, *rest])
    fields = []
    for info, v in zip(outs, closed.jaxpr.outvars, strict=True):
        by_sid = (
            {sid: (rf, jump, v.aval.shape[a]) for a, sid, rf, jump, _ in info.axes} if info else {}
        )
        fields.append(_field(by_sid, info.glob) if set(by_sid) == {0, 1} else None)
    return fields, walk.ends


def receptive_fields(fn, x, *args) -> tuple[list[ReceptiveField], list[ReceptiveField]]:
    """Receptive fields of ``fn(x, *args)`` for an NHWC input ``x`` (an array or
    ShapeDtypeStruct); ``args`` (e.g. the variables) do not depend on the image.

    Walks the jaxpr of ``fn``: convolutions and pooling windows grow the field and the
    stride (kernel, stride, dilation, transposed-conv input dilation); pointwise ops,
    concatenation, transposes and channel reshapes pass it through, and where branches
    meet the larger field wins; global pooling, flattening or resampling ends a map.

    Returns ``(outputs, ended)``: the field of every output that is still a spatial map
    (``features_only`` stages, segmentation maps), and of every map that was ended, in
    order (a classifier's head ends its last feature map, the largest).
    """
    fields, ends = _trace(fn, x, *args)
    return [f for f in fields if f is not None], ends


def layer_receptive_fields(
    model: str | nn.Module, input_size: tuple[int, int] | None = None
) -> dict[str, ReceptiveField]:
    """The receptive field of every submodule output that is a spatial map, keyed by
    module path (``'features_0'``, ``'layer1_0/conv1'``), in the order flax lists them."""
    module, x = _module_and_input(model, input_size)
    variables = jax.eval_shape(module.init, jax.random.key(0), x)

    def intermediates(x, variables):
        _, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        return state["intermediates"]

    leaves, _ = jax.tree_util.tree_flatten_with_path(jax.eval_shape(intermediates, x, variables))
    fields, _ = _trace(lambda x, v: jax.tree.leaves(intermediates(x, v)), x, variables)
    out = {}
    for (path, _), field in zip(leaves, fields, strict=True):
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        if field is not None and keys[-1] == "__call__":
            out["/".join(keys[:-1])] = field
    return out


def receptive_field(
    model: str | nn.Module,
    input_size: tuple[int, int] | None = None,
    variables: Any = None,
) -> ReceptiveField | None:
    """The receptive field of a model's last feature map: the one its head pools or
    flattens (classifiers), or its output map (segmentation, ``features_only``).
    ``None`` if the model has no spatial map."""
    module, x = _module_and_input(model, input_size)
    if variables is None:
        variables = jax.eval_shape(module.init, jax.random.key(0), x)
    spatial, ended = receptive_fields(lambda x, v: module.apply(v, x), x, variables)
    if spatial:
        return max(spatial, key=lambda f: f.size[0] * f.size[1])
    return max(ended, key=lambda f: f.size[0] * f.size[1], default=None)
