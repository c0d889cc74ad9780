"""Checks every registered model gets the moment it is registered: bad input, init,
eval and train mode, state handling, a jitted gradient, bf16 compute.

Compiling dominates the suite's cost on CPU (DenseNet-121: init 29 s to trace and compile,
forward+backward 23 s), so the checks are tiered, and nothing a variant could break alone
goes unchecked:

* every model: NCHW input is refused, and so is one pixel below the spec's ``min_size``
  (both before any layer runs); no submodule is auto-named; ``init`` traces
  (``jax.eval_shape``) to float32 ``params``/``batch_stats`` of the right structure; a
  ``num_classes`` override and bf16 compute give outputs of the right shape and dtype
  (traced); at exactly ``min_size`` the model traces with no map left empty, a classifier
  with ``num_classes=0`` returning ``(N, features)``, the width its classifier reads;
* every model with a torch source is also run by the equivalence suite
  (``tests/convert/test_equivalence.py``): eval and train mode against torch at two sizes,
  updated running statistics against torch's (so every statistic is updated), eval under
  an immutable ``batch_stats`` (flax raises if eval mode writes state), and the export of
  perturbed parameters back to torch (so every parameter reaches the output);
* the first model registered per family (resnet18, vgg11, efficientnet_b0, ...), where
  variants are data on the same code, and every model without a torch source (but one per
  depth series: resnet20 for resnet32 ... resnet110), run the rest concretely in one
  compilation, at one block per stage where the family has a depth field
  (tests/_small.py): the initialisers, eval/train outputs finite, eval leaves state alone,
  train updates every statistic, a finite gradient reaching every parameter, finite bf16
  outputs.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import ClosedJaxpr, Jaxpr

import flaxcnn
from flaxcnn._registry import _REGISTRY

from .._small import shrink

MODELS = [n for n in flaxcnn.list_models() if flaxcnn.get_model_spec(n).task != "clip"]
CLIPS = flaxcnn.list_models(family="clip")
AUTO_NAME = re.compile(r"[A-Z]\w*_\d+")  # flax's default: class name, index


def _full() -> set[str]:
    """The first model of each family, and every model without a torch source unless an
    earlier one differs from it only in depth (``stage_sizes``: resnet32 ... resnet110 run
    resnet20's code, which is run concretely)."""
    first = {s.family: n for n, s in reversed(_REGISTRY.items()) if n in MODELS}
    full, seen = set(first.values()), set()
    for name, spec in _REGISTRY.items():
        if name not in MODELS or spec.sources:
            continue
        key = (
            spec.family,
            repr(sorted((k, v) for k, v in spec.config.items() if k != "stage_sizes")),
        )
        if key not in seen:
            seen.add(key)
            full.add(name)
    return full


FULL = _full()


def _main(out):
    """The output checked for shape: logits (the first of a train-mode aux tuple), or a
    segmentation model's ``'out'`` map."""
    if isinstance(out, dict):
        return out["out"]
    return out[0] if isinstance(out, tuple) else out


def _empty_maps(jaxpr) -> list[tuple[int, ...]]:
    """Shapes of the intermediates (nested computations included) with a zero-sized axis:
    a conv or pool that left no pixel, which a global pool would turn into NaN."""
    empty = []
    for eqn in jaxpr.eqns:
        empty += [v.aval.shape for v in eqn.outvars if 0 in getattr(v.aval, "shape", ())]
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                if isinstance(sub, ClosedJaxpr):
                    empty += _empty_maps(sub.jaxpr)
                elif isinstance(sub, Jaxpr):
                    empty += _empty_maps(sub)
    return empty


def _finite(out):
    return all(np.isfinite(np.asarray(a, np.float32)).all() for a in jax.tree.leaves(out))


@pytest.mark.parametrize("name", MODELS)
def test_model_contract(name):
    spec = flaxcnn.get_model_spec(name)
    model = flaxcnn.create_model(name, num_classes=7)
    side = max(64, spec.min_size)
    c = spec.input_size[2]
    x = jax.random.normal(jax.random.key(1), (2, side, side, c))
    if spec.task == "segmentation":
        # Per-pixel NHWC logits; unpadded nets (the original U-Net) shrink the map.
        hw = model.output_size(side, side) if hasattr(model, "output_size") else (side, side)
        expected = (2, *hw, 7)
    else:
        expected = (2, 7)

    # Bad input: NCHW, or one pixel below the minimum, gets a clear error before any computation.
    with pytest.raises(ValueError, match="NCHW"):
        model.init(jax.random.key(0), jnp.zeros((1, c, side, side + 1)))
    m = spec.min_size
    with pytest.raises(
        ValueError, match=rf"^{name} needs inputs of at least {m}x{m} \(got {m - 1}x{m}\)"
    ):
        model.init(jax.random.key(0), jnp.zeros((1, m - 1, m, c)))

    # Every submodule is named (after its torch module), none left to flax's ``Conv_0``.
    paths = set()

    def record(next_fun, args, kwargs, context):
        paths.add(context.module.path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    auto = sorted("/".join(p) for p in paths if p and AUTO_NAME.fullmatch(p[-1]))
    assert not auto, f"auto-named submodules: {auto[:5]}"
    assert set(abstract) <= {"params", "batch_stats"}
    assert {a.dtype for a in jax.tree.leaves(abstract)} == {jnp.dtype("float32")}
    has_bn = "batch_stats" in abstract
    model16 = flaxcnn.create_model(name, num_classes=7, dtype=jnp.bfloat16)
    out16 = jax.eval_shape(model16.apply, abstract, x)
    assert _main(out16).shape == expected
    assert {a.dtype for a in jax.tree.leaves(out16)} == {jnp.dtype(jnp.bfloat16)}
    # Exactly the minimum works: traced there, no map left empty on the way. A classifier
    # with num_classes=0 (timm's reset_classifier(0)) returns the features its classifier reads.
    xmin = jax.ShapeDtypeStruct((2, m, m, c), jnp.float32)
    if spec.task == "classification":
        model0 = flaxcnn.create_model(name, num_classes=0)
        jaxpr, (pooled, _) = jax.make_jaxpr(model0.init_with_output, return_shape=True)(
            jax.random.key(0), xmin
        )
        head_inputs = {
            a.shape[-2]
            for a in jax.tree.leaves(abstract["params"])
            if a.ndim > 1 and a.shape[-1] == 7
        }
        assert pooled.ndim == 2 and pooled.shape[0] == 2, pooled.shape
        assert pooled.shape[1] in head_inputs, (pooled.shape, head_inputs)
    else:
        jaxpr, (out_min, _) = jax.make_jaxpr(model.init_with_output, return_shape=True)(
            jax.random.key(0), xmin
        )
        hw = model.output_size(m, m) if hasattr(model, "output_size") else (m, m)
        assert _main(out_min).shape == (2, *hw, 7)
    assert not _empty_maps(jaxpr.jaxpr), f"empty maps at {m}x{m}: {_empty_maps(jaxpr.jaxpr)[:3]}"
    if name not in FULL:
        return
    # The concrete checks test the family's code, at one block per stage (tests/_small.py):
    # the layer types, modes and state are all there; depth only repeats them.
    small = shrink(name)
    if small:
        model = flaxcnn.create_model(name, num_classes=7, **small)
        model16 = flaxcnn.create_model(name, num_classes=7, dtype=jnp.bfloat16, **small)
        abstract = jax.eval_shape(model.init, jax.random.key(0), x)
        if spec.task == "segmentation" and hasattr(model, "output_size"):
            expected = (2, *model.output_size(side, side), 7)
    # bf16 compute keeps float32 parameters.
    shapes16 = jax.eval_shape(model16.init, jax.random.key(0), x)
    assert {a.dtype for a in jax.tree.leaves(shapes16)} == {jnp.dtype("float32")}

    variables = jax.jit(model.init)(jax.random.key(0), x)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), variables) == jax.tree.map(
        lambda a: (a.shape, a.dtype), abstract
    )

    def loss(params, batch_stats):
        out, new_state = model.apply(
            {"params": params, **({"batch_stats": batch_stats} if has_bn else {})},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(3)},
        )
        # Every head (aux classifiers, segmentation 'out'/'aux') contributes, so every
        # parameter must receive a gradient.
        value = sum(jnp.mean(jax.nn.log_softmax(v)[..., 0]) for v in jax.tree.leaves(out))
        return value, (out, new_state)

    @jax.jit
    def everything(v, x):
        """All the checks' computations in one compilation (compiling dominates on CPU)."""
        out, state = model.apply(v, x, mutable=True)
        grads, train = jax.grad(loss, has_aux=True)(v["params"], v.get("batch_stats", {}))
        return out, state, train, grads, model16.apply(v, x)

    out, state, (out_train, new_state), grads, out16 = everything(variables, x)

    # Eval (the default), jitted: right shape, finite.
    assert _main(out).shape == expected
    assert _finite(out)

    # Eval mode changes no state.
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)

    # Train mode: batch statistics, every running statistic updated.
    if has_bn:
        if isinstance(out_train, tuple):  # (logits, *aux logits): GoogLeNet, Inception v3
            assert all(a.shape == expected for a in out_train)
        assert _main(out_train).shape == expected
        assert _finite(out_train)
        assert not np.allclose(_main(out_train), _main(out)), (
            "train mode should use batch statistics"
        )
        changed = jax.tree.map(
            lambda a, b: bool(np.any(a != b)), new_state["batch_stats"], variables["batch_stats"]
        )
        assert all(jax.tree.leaves(changed)), "train mode should update every running statistic"

    # The training gradient: finite, and every parameter receives one.
    flat = jax.tree.leaves_with_path(grads)
    assert all(np.isfinite(np.asarray(g)).all() for _, g in flat)
    dead = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g))]
    assert not dead, f"parameters with an all-zero gradient: {dead[:5]}"

    # bf16 compute with the same float32 variables: bf16 outputs, finite.
    assert {a.dtype for a in jax.tree.leaves(out16)} == {jnp.dtype(jnp.bfloat16)}
    assert _finite(out16)


@pytest.mark.parametrize("name", CLIPS)
def test_clip_contract(name):
    """CLIP's checks, traced (its two towers are run concretely, with their gradients, in
    tests/models/test_clip.py on tiny configurations and by the equivalence suite at full
    size): NCHW images refused, and images a pixel smaller than the tower's resolution (its
    minimum: the only size it takes), every submodule named, float32 variables, and
    ``(logits_per_image, logits_per_text)`` of the right shapes in float32 and bf16, no map
    left empty."""
    spec = flaxcnn.get_model_spec(name)
    model = flaxcnn.create_model(name)
    r = spec.input_size[0]
    images, tokens = model.example_inputs((2,))
    tokens = jnp.zeros((3, tokens.shape[1]), jnp.int32)
    with pytest.raises(ValueError, match="NCHW"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 3, r, r)), tokens)
    assert spec.min_size == r
    with pytest.raises(
        ValueError, match=rf"^{name} needs inputs of at least {r}x{r} \(got {r}x{r - 1}\)"
    ):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, r, r - 1, 3)), tokens)
    paths = set()

    def record(next_fun, args, kwargs, context):
        paths.add(context.module.path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract = jax.eval_shape(model.init, jax.random.key(0), images, tokens)
    auto = sorted("/".join(p) for p in paths if p and AUTO_NAME.fullmatch(p[-1]))
    assert not auto, f"auto-named submodules: {auto[:5]}"
    assert set(abstract) <= {"params", "batch_stats"}
    assert {a.dtype for a in jax.tree.leaves(abstract)} == {jnp.dtype("float32")}
    for dtype in (jnp.float32, jnp.bfloat16):
        jaxpr, out = jax.make_jaxpr(
            flaxcnn.create_model(name, dtype=dtype).apply, return_shape=True
        )(abstract, images, tokens)
        assert [o.shape for o in out] == [(2, 3), (3, 2)]
        assert {o.dtype for o in out} == {jnp.dtype(dtype)}
        assert not _empty_maps(jaxpr.jaxpr)
