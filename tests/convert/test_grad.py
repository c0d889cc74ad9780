"""The training step proven, not only the forward pass: float64 gradients of every parameter
and an SGD step equal torch's within 1e-9 (``verify(..., grad=True)``; docs/conversion.md).

Float64 because in float32 the comparison is ill-posed: ReLU and max-pool kinks turn rounding
into discrete changes (torch's own float32 ResNet-50 gradients are 2e-2 of the largest away
from its float64 ones), so a wrong derivative rule and a kink could not be told apart.

One pair per family, on both kernel paths in one test (torch's side is computed once for
both), at small odd sizes; ``python -m flaxcnn.convert verify --grad all`` runs every pair.
A float64 backward pass compiles in 5-80 s of CPU per path and pair, so by default the suite
runs the families of :data:`CORE_FAMILIES`, which between them have every hand-written
derivative rule (about 3 minutes of one core; the float64 layer tests cover the layers whose
precision follows the dtype); ``FLAXCNN_GRAD_FAMILIES=all`` runs every family (19 minutes of
one core).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxcnn
from flaxcnn.convert import verify
from flaxcnn.layers import BatchNorm2d, LayerNorm
from flaxcnn.layers.activations import hard_sigmoid, hard_swish
from flaxcnn.layers.interpolate import interpolate
from flaxcnn.layers.pooling import adaptive_avg_pool2d
from flaxcnn.xla.conv import depthwise_conv2d_shift

from .test_equivalence import MODELS

# The cheapest pair per family that still has the family's layers (the forward suite's
# FAMILY_PAIRS picks the pair with every CPU-specific *forward* path, at several times the
# cost of a float64 backward compile). A family missing here is represented by its first
# model, so no family is skipped.
GRAD_PAIRS = {
    "resnet": ("torchvision", "resnet18"),  # strided, 1x1 and 3x3 convs, BN, max pool
    "senet": ("timm", "legacy_seresnext26_32x4d"),  # grouped convs (split per group on CPU)
    "efficientnet": ("torchvision", "efficientnet_b0"),
    "efficientnet_v2": ("timm", "tf_efficientnetv2_b0"),  # TF 'SAME' padding
    "mobilenet_v3": ("torchvision", "mobilenet_v3_small"),
    "mobilenet_v2": ("torchvision", "mobilenet_v2"),
    "mobilenet_v1": ("timm", "mobilenetv1_100"),
    "vgg": ("torchvision", "vgg11_bn"),
    "densenet": ("torchvision", "densenet121"),
    "convnext": ("timm", "convnext_tiny"),  # LayerNorm, layer scale, depthwise 7x7
    # Inception-V3 runs at its default 299x331, with the aux head: at 79x97 without it the model
    # is ill-conditioned (measured on torch alone: a 1e-15 relative input change moves its own
    # float64 first-conv gradient by 2.3e-8 of the largest, 7.6e5; the stem leaves 1-2 pixels per
    # map and BN over so few values amplifies rounding), at 299x331 well conditioned (1.2e-13).
    # There both paths agree with torch to 6e-14 of the largest gradient (2.84), at 2 minutes
    # (126 s on 2 shared cores) and 4 GB, so it runs with FLAXCNN_GRAD_FAMILIES=all only.
    "inception": ("torchvision", "inception_v3"),
    "fcn": ("torchvision", "fcn_resnet50"),  # dict outputs, dilated convs, bilinear upsampling
    "resnetv2": ("timm", "resnetv2_50"),
    "xception": ("timm", "legacy_xception"),
    "googlenet": ("torchvision", "googlenet"),
    "alexnet": ("torchvision", "alexnet"),
    "vit": ("timm", "vit_tiny_patch16_224"),  # LayerNorm, attention, GELU; at its 224x224
}


# Strided, 1x1 and 3x3 convs, BN, max pool and ReLU (ResNet-18: 17 s of one core, both
# paths); the depthwise shift conv (MobileNetV1: 25 s); adaptive average pooling, overlapping
# max pools and big linears (AlexNet); LayerNorm, attention and GELU (ViT-Ti/16: 19 s);
# ReLU6 and inverted residuals (MobileNetV2: 24 s); TF 'SAME' padding, SiLU and
# squeeze-excitation (EfficientNetV2-B0: 36 s). MobileNetV3-Small costs 99 s (its portable
# compile alone 77 s), so its Hardsigmoid rule is tested on its own above; resizing and
# pooling in float64 are tested below. The other families (1,120 s of test time for all,
# measured 2026-12-07) run with FLAXCNN_GRAD_FAMILIES=all.
CORE_FAMILIES = {"resnet", "mobilenet_v1", "alexnet", "vit", "mobilenet_v2", "efficientnet_v2"}


def _grad_pairs() -> list[tuple[str, str, str]]:
    pairs = {}
    for name in MODELS:
        spec = flaxcnn.get_model_spec(name)
        if spec.family not in pairs:
            pairs[spec.family] = GRAD_PAIRS.get(spec.family, next(iter(spec.sources.items())))
    return sorted((family, *pair) for family, pair in pairs.items())


@pytest.mark.parametrize(("family", "source", "name"), _grad_pairs())
def test_training_step_equals_torch_in_float64(family, source, name):
    if family == "clip":  # verify refuses it: two towers and a contrastive loss, no check yet
        pytest.skip("CLIP is not covered by verify(grad=True) yet (two towers, own loss)")
    if family not in CORE_FAMILIES and os.environ.get("FLAXCNN_GRAD_FAMILIES") != "all":
        pytest.skip("outside the CI budget: FLAXCNN_GRAD_FAMILIES=all runs it")
    failures = []
    for kernels in ("auto", "portable"):
        result = verify(
            name,
            source=source,
            modes=(),
            export=False,
            grad=True,
            kernels=kernels,
        )
        print(result)
        assert result.kernels == kernels
        assert [c.mode for c in result.checks] == ["loss", "grad", "sgd"]
        if not result.ok:
            failures.append(str(result))
    assert not failures, "\n".join(failures)


def test_hard_sigmoid_has_torchs_float32_one_sixth():
    """torch's Hardsigmoid backward multiplies by ``1.0f / 6.0f`` in every dtype: in float64
    its gradient is 3e-8 relative away from the exact 1/6 (found by the MobileNetV3-Small
    float64 check, 1e-10 of its largest gradient). flaxcnn's rule copies the constant, so
    the training step is torch's; Hardswish's derivative (``x / 3 + 1/2``) has no such
    constant and must not inherit it."""
    import torch

    x = np.random.default_rng(0).standard_normal(1000) * 4
    for ours, theirs in (
        (hard_sigmoid, torch.nn.functional.hardsigmoid),
        (hard_swish, torch.nn.functional.hardswish),
    ):
        xt = torch.from_numpy(x).requires_grad_()
        theirs(xt).sum().backward()
        with jax.enable_x64(True):
            g = np.asarray(jax.grad(lambda v, f=ours: jnp.sum(f(v)))(jnp.asarray(x)))
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=0, atol=1e-14)
    assert float(np.float32(1.0) / np.float32(6.0)) != 1 / 6  # what makes the difference


# Each layer that reduces or resamples in a fixed precision must follow a float64 model
# into float64: a float32 step anywhere puts 1e-8 into every gradient after it.


def _x(shape, offset=0.0):
    return jnp.asarray(np.random.default_rng(0).standard_normal(shape) + offset)


def test_batch_norm_reduces_in_float64():
    """Statistics and their running averages in float64 for a float64 model (a large mean
    makes a float32 reduction visible at 1e-6), float32 for a bf16 one."""
    with jax.enable_x64(True):
        x = _x((2, 5, 7, 3), offset=1000.0)
        bn = BatchNorm2d(dtype=jnp.float64, param_dtype=jnp.float64)
        variables = bn.init(jax.random.key(0), x)
        assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float64)}
        y, state = bn.apply(variables, x, train=True, mutable=["batch_stats"])
        xn = np.asarray(x).reshape(-1, 3)
        mean, var = xn.mean(0), xn.var(0)
        np.testing.assert_allclose(
            np.asarray(y).reshape(-1, 3), (xn - mean) / np.sqrt(var + 1e-5), rtol=0, atol=1e-10
        )
        np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * mean, rtol=1e-14)
        # Its gradient (the custom rule) in float64 too.
        g = jax.grad(
            lambda v: jnp.sum(bn.apply(v, x, train=True, mutable=["batch_stats"])[0] ** 3)
        )(variables)
        assert {a.dtype for a in jax.tree.leaves(g)} == {jnp.dtype(jnp.float64)}
        stats = BatchNorm2d(dtype=jnp.bfloat16).init(jax.random.key(0), x.astype(jnp.bfloat16))
        assert stats["batch_stats"]["mean"].dtype == jnp.float32


@pytest.mark.parametrize("kernels", ["auto", "portable"])
def test_layers_compute_in_float64(kernels):
    """LayerNorm, bilinear/bicubic resizing, adaptive average pooling and the depthwise
    shift conv against float64 references at 1e-12."""
    with jax.enable_x64(True), flaxcnn.kernels(kernels):
        x = _x((1, 6, 5, 4), offset=100.0)
        ln = LayerNorm(dtype=jnp.float64, param_dtype=jnp.float64)
        y = ln.apply(ln.init(jax.random.key(0), x), x)
        xn = np.asarray(x)
        ref = (xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + 1e-5)
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)

        # 5 -> 3 adaptive windows of 2 (overlapping): the mean, not a float32 reciprocal.
        p = adaptive_avg_pool2d(x, (4, 3))
        assert p.dtype == jnp.float64
        np.testing.assert_allclose(p[0, 0, 0], xn[0, 0:2, 0:2].mean((0, 1)), rtol=1e-15)

        # Bilinear 5 -> 7: weights from a float64 grid (float32 weights are 1e-8 off).
        r = interpolate(x, size=(6, 7), mode="bilinear")
        s = 5 / 7
        src = max((1 + 0.5) * s - 0.5, 0.0)
        lam = src - np.floor(src)
        np.testing.assert_allclose(
            r[0, :, 1], (1 - lam) * xn[0, :, 0] + lam * xn[0, :, 1], rtol=1e-15
        )

        k = _x((3, 3, 1, 4))
        d = depthwise_conv2d_shift(x, k, (1, 1), ((1, 1), (1, 1)))
        assert d.dtype == jnp.float64
        ref = jax.lax.conv_general_dilated(
            x,
            k,
            (1, 1),
            ((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=4,
            precision="highest",
        )
        np.testing.assert_allclose(d, ref, rtol=0, atol=1e-11)
