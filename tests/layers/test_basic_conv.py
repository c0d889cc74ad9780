"""BasicConv2d (conv, BN eps 1e-3, ReLU) against torchvision's Inception BasicConv2d."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torchvision.models.inception import BasicConv2d as TorchBasicConv2d

from flaxcnn.convert import load_torch_weights
from flaxcnn.convert.verify import randomize_bn
from flaxcnn.layers import BasicConv2d


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [(3, 2, 0), ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0)), (5, 2, 2)],
)
def test_basic_conv2d_matches_torch(kernel, stride, padding):
    torch.manual_seed(0)
    t = TorchBasicConv2d(5, 6, kernel_size=kernel, stride=stride, padding=padding).float()
    randomize_bn(t)
    m = BasicConv2d(6, kernel, stride, padding=padding)
    x = np.random.default_rng(0).standard_normal((2, 5, 13, 18), dtype=np.float32)
    xj = jnp.asarray(x.transpose(0, 2, 3, 1))
    variables = load_torch_weights(m, t, input_shape=xj.shape)
    assert m.bn_eps == t.bn.eps == 1e-3

    t.eval()
    with torch.no_grad():
        ref = t(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(m.apply(variables, xj), ref, atol=1e-5, rtol=1e-5)

    t.train()
    with torch.no_grad():
        ref = t(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    out, state = m.apply(variables, xj, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(state["batch_stats"]["bn"]["var"], t.bn.running_var, rtol=1e-5)
    np.testing.assert_allclose(state["batch_stats"]["bn"]["mean"], t.bn.running_mean, atol=1e-6)
