"""flaxcnn.layers.LayerNorm against torch's LayerNorm / ConvNeXt's channels-first LayerNorm2d."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from flaxcnn.layers import LayerNorm


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_layernorm_matches_torch_channels_first(eps):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 7, 6)).astype(np.float32) * 3 + 1  # NCHW, odd sizes, offset
    w = rng.uniform(0.5, 1.5, 5).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    ref = torch.nn.functional.layer_norm(
        torch.from_numpy(x).permute(0, 2, 3, 1), (5,), torch.from_numpy(w), torch.from_numpy(b), eps
    ).numpy()
    ln = LayerNorm(eps=eps)
    got = ln.apply({"params": {"scale": w, "bias": b}}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)


def test_layernorm_bf16_keeps_float32_statistics():
    x = (
        jax.random.normal(jax.random.key(0), (2, 3, 3, 8)) * 100 + 1000
    )  # large mean: one-pass var would fail
    v = LayerNorm().init(jax.random.key(1), x)
    y32 = LayerNorm().apply(v, x)
    y16 = LayerNorm(dtype=jnp.bfloat16).apply(v, x)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), atol=0.05)
    np.testing.assert_allclose(np.asarray(y32).mean(-1), 0.0, atol=1e-4)
