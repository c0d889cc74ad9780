"""BatchNorm folding (flaxcnn.fold): the folded model gives the unfolded model's eval output,
for one model of every family that has BatchNorms, with randomised statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import flaxcnn
from flaxcnn import fold_batchnorm
from flaxcnn._registry import _REGISTRY

from ._small import random_variables, shrink

# The first model registered per family (variants are data on its code), plus the
# structures the first one does not have: VGG with BatchNorm, MobileNet v3's hard-swish
# blocks, SE-ResNeXt, ResNet-D's deep stem (resnet50d), the segmentation heads and the
# padded U-Net (the original has no BatchNorm).
# CLIP (images and token ids) is left out: this test feeds one image batch.
FIRST = {s.family: n for n, s in reversed(_REGISTRY.items()) if s.task != "clip"}
MODELS = sorted(
    {*FIRST.values(), "vgg11_bn", "mobilenetv3_large_100", "seresnext50_32x4d"}
    | {"resnet50d", "fcn_resnet50", "unet_padded"}
)


def _count(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", MODELS)
def test_folded_model_gives_the_same_outputs(name):
    spec = flaxcnn.get_model_spec(name)
    # One block per stage (tests/_small.py): folding is per conv-BN pair, so depth adds
    # repeats of pairs already checked.
    model = flaxcnn.create_model(name, num_classes=10, **shrink(name))
    side = max(64, spec.min_size)
    h, w = side + 3, side + 9
    if spec.family in ("unet", "vit"):  # even pooling sides; ViT: multiples of the patch
        h, w = side, side + 16
    x = jax.random.normal(jax.random.key(1), (2, h, w, spec.input_size[2]))
    if "batch_stats" not in jax.eval_shape(model.init, jax.random.key(0), x):
        pytest.skip(f"{name} has no BatchNorm")
    # Random weights and BN statistics far from identity, drawn in numpy: compiling the
    # initialisers would cost more than the whole check.
    variables = random_variables(model, x)

    folded, fvars = fold_batchnorm(model, variables, x.shape)
    assert folded.folded, f"{name}: no BatchNorm follows a conv"
    ref = model.apply(variables, x)
    out = folded.apply(fvars, x)
    for r, o in zip(jax.tree.leaves(ref), jax.tree.leaves(out), strict=True):
        bound = 1e-4 * max(1.0, float(jnp.max(jnp.abs(r))))
        assert float(jnp.max(jnp.abs(r - o))) <= bound, name

    # Each folded BatchNorm loses its statistics and scale; only a shift may remain.
    flat = traverse_util.flatten_dict(fvars)
    for bn in folded.folded:
        assert [k[-1] for k in flat if k[1:-1] == bn] in ([], ["bias"]), bn
    assert _count(fvars) < _count(variables)


def test_every_resnet50_batchnorm_is_folded():
    model = flaxcnn.create_model("resnet50")
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    variables = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), variables)
    folded, fvars = fold_batchnorm(model, variables)
    assert len(folded.folded) == 53  # 1 stem + 16 blocks x 3 + 4 downsamples
    assert "batch_stats" not in fvars
    # torchvision's convs have no bias, so every folded BatchNorm keeps its shift.
    assert fvars["params"]["layer1_0"]["bn1"].keys() == {"bias"}


def test_batchnorms_not_fed_by_a_conv_stay():
    """DenseNet's pre-activation ``norm1`` normalises a concatenation and the transitions'
    ``norm`` a block's output: they stay. The stem's ``norm0`` (after ``conv0``) and each
    layer's ``norm2`` (after ``conv1``) fold."""
    model = flaxcnn.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16)
    x = jnp.zeros((1, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    folded, fvars = fold_batchnorm(model, variables, x.shape)
    assert {p[-1] for p in folded.folded} == {"norm0", "norm2"}
    assert len(folded.folded) == 5
    kept = traverse_util.flatten_dict(fvars["batch_stats"])
    assert {k[-2] for k in kept} == {"norm1", "norm", "norm5"}


def test_folded_model_refuses_training():
    model = flaxcnn.create_model("resnet18", num_classes=3)
    x = jnp.zeros((1, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    folded, fvars = fold_batchnorm(model, variables, x.shape)
    with pytest.raises(ValueError, match="for inference"):
        folded.apply(fvars, x, train=True)


def test_a_conv_output_read_by_another_module_is_not_folded():
    """Folding rescales the conv's output; a second reader (here another conv) would see
    the rescaled map, so that pair stays unfolded and the result stays the same."""
    from flaxcnn.layers import BatchNorm2d, Conv2d

    class Branches(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            y = Conv2d(4, 3, padding=1, name="conv")(x)
            a = BatchNorm2d(name="bn")(y, train=train)
            b = Conv2d(4, 1, name="side")(y)
            z = Conv2d(4, 3, padding=1, name="conv2")(a + b)
            return BatchNorm2d(name="bn2")(z, train=train)

    model = Branches()
    x = jax.random.normal(jax.random.key(1), (2, 9, 11, 3))
    variables = random_variables(model, x)
    folded, fvars = fold_batchnorm(model, variables, x.shape)
    assert folded.folded == (("bn2",),)
    ref, out = model.apply(variables, x), folded.apply(fvars, x)
    assert float(jnp.max(jnp.abs(ref - out))) <= 1e-4 * max(1.0, float(jnp.max(jnp.abs(ref))))
