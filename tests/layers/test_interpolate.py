"""interpolate against torch.nn.functional.interpolate, up and down, at odd sizes.

Bicubic sums 16 taps with negative weights in a different order from torch's kernel: the
float32 round-off is a few 1e-6 on unit-variance inputs, hence atol 1e-5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flaxcnn.layers import interpolate

# (input H, W) -> output (H, W): up, down, mixed, identity on one axis, to and from 1 pixel.
RESIZES = [
    ((7, 9), (13, 20)),
    ((13, 17), (5, 8)),
    ((6, 11), (9, 4)),
    ((5, 7), (5, 12)),
    ((1, 6), (4, 1)),
]
MODES = [
    ("nearest", None),
    ("nearest-exact", None),
    ("bilinear", False),
    ("bilinear", True),
    ("bicubic", False),
    ("bicubic", True),
]


def _torch_ref(x, **kw):
    with torch.no_grad():
        return (
            F.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), **kw)
            .numpy()
            .transpose(0, 2, 3, 1)
        )


@pytest.mark.parametrize(("mode", "align_corners"), MODES, ids=[f"{m}-{a}" for m, a in MODES])
def test_interpolate_size_matches_torch(mode, align_corners):
    rng = np.random.default_rng(0)
    for src, dst in RESIZES:
        x = rng.standard_normal((2, *src, 3), dtype=np.float32)
        ref = _torch_ref(x, size=dst, mode=mode, align_corners=align_corners)
        got = np.asarray(interpolate(jnp.asarray(x), dst, mode=mode, align_corners=align_corners))
        assert got.shape == ref.shape, (src, dst)
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5, err_msg=f"{src}->{dst}")


@pytest.mark.parametrize(("mode", "align_corners"), MODES, ids=[f"{m}-{a}" for m, a in MODES])
def test_interpolate_scale_factor_matches_torch(mode, align_corners):
    """With a scale factor torch samples with 1/factor, not in/out: both must agree."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 7, 10, 2), dtype=np.float32)
    for factor in (2, 0.5, 1.7, (3, 0.45)):
        ref = _torch_ref(x, scale_factor=factor, mode=mode, align_corners=align_corners)
        got = np.asarray(
            interpolate(jnp.asarray(x), scale_factor=factor, mode=mode, align_corners=align_corners)
        )
        assert got.shape == ref.shape, factor
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5, err_msg=str(factor))


def test_nearest_is_floor_not_round_and_jit_bf16():
    x = jnp.arange(5.0).reshape(1, 1, 5, 1)
    # torch 'nearest' 5 -> 3: floor(dst * 5/3) = 0, 1, 3 (rounding centres would give 1, 2, 3).
    assert interpolate(x, (1, 3)).ravel().tolist() == [0.0, 1.0, 3.0]
    y = jax.jit(lambda a: interpolate(a, (9, 14), mode="bilinear"))(x.astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and y.shape == (1, 9, 14, 1)


def test_interpolate_rejects_bad_arguments():
    x = jnp.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="align_corners"):
        interpolate(x, 8, mode="nearest", align_corners=True)
    with pytest.raises(ValueError, match="exactly one"):
        interpolate(x, 8, scale_factor=2)
    with pytest.raises(ValueError, match="mode"):
        interpolate(x, 8, mode="area")
