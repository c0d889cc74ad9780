"""The transformer layers against their torch counterparts: timm's ``Attention`` and
``Mlp``, ``torch.nn.MultiheadAttention`` (CLIP's, with its causal mask), QuickGELU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from flaxcnn.layers.activations import quick_gelu
from flaxcnn.layers.transformer import Attention, Mlp
from flaxcnn.models.clip import MultiheadAttention

timm = pytest.importorskip("timm")


def _tokens(n=2, length=7, c=32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, length, c)).astype(np.float32)


def _linear(p):
    return {
        "kernel": jnp.asarray(p.weight.detach().numpy().T),
        "bias": jnp.asarray(p.bias.detach().numpy()),
    }


def test_timm_attention():
    torch.manual_seed(0)
    ref = timm.layers.Attention(32, num_heads=4, qkv_bias=True).eval()
    x = _tokens()
    params = {"qkv": _linear(ref.qkv), "proj": _linear(ref.proj)}
    got = Attention(4).apply({"params": params}, jnp.asarray(x))
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_timm_mlp_and_quick_gelu():
    torch.manual_seed(0)
    ref = timm.layers.Mlp(32, 64).eval()
    x = _tokens()
    params = {"fc1": _linear(ref.fc1), "fc2": _linear(ref.fc2)}
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(Mlp(64).apply({"params": params}, jnp.asarray(x)), want, atol=1e-5)
    t = torch.linspace(-6, 6, 101)
    np.testing.assert_allclose(
        quick_gelu(jnp.asarray(t.numpy())), (t * torch.sigmoid(1.702 * t)).numpy(), atol=1e-6
    )


@pytest.mark.parametrize("causal", [False, True])
def test_torch_multihead_attention(causal):
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(32, 4).eval()
    torch.nn.init.normal_(ref.in_proj_bias)
    x = _tokens()
    mask = torch.full((7, 7), float("-inf")).triu_(1) if causal else None
    with torch.no_grad():  # (L, N, C), as CLIP calls it
        xt = torch.from_numpy(x).transpose(0, 1)
        want = ref(xt, xt, xt, need_weights=False, attn_mask=mask)[0].transpose(0, 1).numpy()
    params = {
        "in_proj_weight": jnp.asarray(ref.in_proj_weight.detach().numpy()),
        "in_proj_bias": jnp.asarray(ref.in_proj_bias.detach().numpy()),
        "out_proj": _linear(ref.out_proj),
    }
    got = MultiheadAttention(4).apply(
        {"params": params}, jnp.asarray(x), None if mask is None else jnp.asarray(mask.numpy())
    )
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    if causal:  # the first token sees only itself: changing later tokens leaves it alone
        y = jnp.asarray(x).at[:, 1:].set(0.0)
        other = MultiheadAttention(4).apply({"params": params}, y, jnp.asarray(mask.numpy()))
        np.testing.assert_allclose(other[:, 0], got[:, 0], atol=1e-6)


def test_attention_refuses_indivisible_heads():
    with pytest.raises(ValueError, match="not divisible by 5 heads"):
        Attention(5).init(jax.random.key(0), jnp.zeros((1, 3, 32)))
