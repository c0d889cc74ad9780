"""U-Net: the paper's 572 -> 388 tile, crop-and-concatenate alignment, padded options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxcnn
from flaxcnn.models import UNet


def test_original_unet_572_to_388():
    model = flaxcnn.create_model("unet_original")
    out, variables = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x), jnp.zeros((1, 572, 572, 1))
    )
    assert out.shape == (1, 388, 388, 2)
    assert model.output_size(572, 572) == (388, 388)
    assert set(variables) == {"params"}  # the paper has no BatchNorm
    p = variables["params"]
    assert p["enc4"]["conv2"]["kernel"].shape == (3, 3, 1024, 1024)
    assert p["up3"]["kernel"].shape == (2, 2, 512, 1024)  # 2x2 up-conv halving the channels
    assert p["dec3"]["conv1"]["kernel"].shape == (3, 3, 1024, 512)  # after concatenation
    assert p["head"]["kernel"].shape == (1, 1, 64, 2)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(p))

    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    widths = [64, 128, 256, 512, 1024]
    expected = sum(
        conv(c, w, 3) + conv(w, w, 3) for c, w in zip([1, *widths[:-1]], widths, strict=True)
    )
    expected += sum(conv(2 * w, w, 2) + conv(2 * w, w, 3) + conv(w, w, 3) for w in widths[:4])
    assert n_params == expected + conv(64, 2, 1) == 31_030_658


def test_original_unet_is_translation_equivariant():
    """Shifting the input by one pooling period (2**depth) shifts the output by as much:
    the skips are cropped from the right place. A wrong crop offset breaks this."""
    model = UNet(num_classes=3, base_width=4, depth=2)
    x = jax.random.normal(jax.random.key(0), (1, 64, 68, 1))
    variables = jax.jit(model.init)(jax.random.key(1), x)
    apply = jax.jit(model.apply)
    big, small = apply(variables, x), apply(variables, x[:, 4:, 8:])
    assert model.output_size(64, 68) == (24, 28)
    assert big.shape == (1, 24, 28, 3) and small.shape == (1, 20, 20, 3)
    np.testing.assert_allclose(small, big[:, 4:, 8:], atol=1e-5)


def test_unet_rejects_sizes_it_cannot_take():
    with pytest.raises(ValueError, match=r"nearest valid sizes: \[556, 572\]"):
        flaxcnn.create_model("unet_original").output_size(570, 572)
    model = flaxcnn.create_model("unet_padded", base_width=4)
    with pytest.raises(ValueError, match=r"\[48, 64\]"):
        model.init(jax.random.key(0), jnp.zeros((1, 50, 64, 3)))


@pytest.mark.parametrize("upsample", ["transposed", "bilinear"])
def test_padded_unet_keeps_the_input_size(upsample):
    model = flaxcnn.create_model(
        "unet_padded", base_width=4, depth=3, upsample=upsample, num_classes=5
    )
    x = jax.random.normal(jax.random.key(0), (2, 24, 40, 3))
    variables = model.init(jax.random.key(1), x)
    out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert out.shape == (2, 24, 40, 5)
    p = variables["params"]
    assert "enc3" in p and "enc4" not in p  # depth 3
    assert "bias" not in p["enc0"]["conv1"] and "bn1" in p["enc0"]  # BN replaces the conv bias
    up = p["up2"]["kernel"].shape
    assert up == ((2, 2, 16, 32) if upsample == "transposed" else (1, 1, 32, 16))
    # num_classes=0: the last decoder features, at the input's size.
    feats = model.clone(num_classes=0).apply(variables, x)
    assert feats.shape == (2, 24, 40, 4)
