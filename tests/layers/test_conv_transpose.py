"""ConvTranspose2d against torch.nn.ConvTranspose2d, and dilated Conv2d against torch.nn.Conv2d."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from flaxcnn.layers import Conv2d, ConvTranspose2d, conv_transpose_output_size, pair

# (in, out, kernel, stride, padding, output_padding, groups, dilation, (H, W))
CASES = [
    (4, 6, 2, 2, 0, 0, 1, 1, (7, 9)),  # U-Net's 2x2 up-convolution, odd input
    (4, 6, 3, 2, 1, 1, 1, 1, (5, 8)),  # "same"-style x2 upsampling
    (6, 4, 4, 2, 1, 0, 2, 1, (6, 7)),  # FCN-style bilinear-init kernel shape, groups
    (6, 9, 3, 3, 2, 2, 3, 1, (4, 5)),  # stride 3, output_padding 2, groups 3
    (4, 4, 3, 1, 0, 0, 4, 2, (5, 6)),  # depthwise, dilated
    (3, 5, (3, 5), (2, 1), (1, 2), (1, 0), 1, (1, 2), (6, 5)),  # non-square everything
    (4, 2, 3, 2, 3, 0, 1, 2, (7, 7)),  # padding > dilation*(k-1)/2: output cropped
    (2, 3, 1, 2, 0, 1, 1, 1, (3, 4)),  # 1x1 kernel, stride 2, output_padding
    (4, 4, 5, 1, 5, 0, 1, 1, (9, 11)),  # padding larger than k-1: negative conv padding
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_conv_transpose_matches_torch(case):
    cin, cout, k, s, p, op, g, d, hw = case
    torch.manual_seed(0)
    tconv = torch.nn.ConvTranspose2d(cin, cout, k, s, p, op, groups=g, dilation=d)
    x = torch.randn(2, cin, *hw)
    with torch.no_grad():
        ref = tconv(x).numpy().transpose(0, 2, 3, 1)

    layer = ConvTranspose2d(cout, k, s, p, op, groups=g, dilation=d)
    params = {
        "kernel": jnp.asarray(tconv.weight.detach().numpy().transpose(2, 3, 1, 0)),
        "bias": jnp.asarray(tconv.bias.detach().numpy()),
    }
    shapes = layer.init(jax.random.key(0), jnp.zeros((1, *hw, cin)))["params"]
    assert {n: v.shape for n, v in shapes.items()} == {n: v.shape for n, v in params.items()}
    got = np.asarray(layer.apply({"params": params}, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))))
    assert got.shape == ref.shape
    expected_hw = tuple(
        conv_transpose_output_size(n, *args)
        for n, args in zip(hw, zip(*(pair(v) for v in (k, s, p, op, d)), strict=True), strict=True)
    )
    assert got.shape[1:3] == expected_hw
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)


def test_conv_transpose_init_matches_torch_scale():

    layer = ConvTranspose2d(8, 3, 2, groups=2)
    kernel = layer.init(jax.random.key(0), jnp.zeros((1, 5, 5, 16)))["params"]["kernel"]
    assert kernel.shape == (3, 3, 4, 16)
    bound = 1 / np.sqrt(4 * 9)  # torch: U(-1/sqrt(fan_in)), fan_in = out/groups * kh * kw
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.9 * bound


def test_conv_transpose_rejects_bad_output_padding():

    with pytest.raises(ValueError, match="output_padding"):
        ConvTranspose2d(4, 3, stride=2, output_padding=2).init(
            jax.random.key(0), jnp.zeros((1, 4, 4, 4))
        )


@pytest.mark.parametrize("dilation", [2, 4])
@pytest.mark.parametrize("stride", [1, 2])
def test_dilated_conv_matches_torch(dilation, stride):
    """Atrous 3x3 conv with torch's padding = dilation (size-preserving at stride 1)."""
    torch.manual_seed(dilation)
    tconv = torch.nn.Conv2d(4, 6, 3, stride, padding=dilation, dilation=dilation, groups=2)
    x = torch.randn(2, 4, 13, 18)
    with torch.no_grad():
        ref = tconv(x).numpy().transpose(0, 2, 3, 1)
    layer = Conv2d(6, 3, stride, padding=dilation, dilation=dilation, groups=2)
    params = {
        "kernel": jnp.asarray(tconv.weight.detach().numpy().transpose(2, 3, 1, 0)),
        "bias": jnp.asarray(tconv.bias.detach().numpy()),
    }
    got = np.asarray(layer.apply({"params": params}, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))))
    assert got.shape == ref.shape
    if stride == 1:
        assert got.shape[1:3] == (13, 18)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
