"""The torchvision image ops and RandAugment of ``flaxcnn.train.augment``, each against
``torchvision.transforms.v2.functional`` on the same photo (skimage's chelsea at 37x53) with
the same parameters; salt-and-pepper noise's statistics; the RandAugment setting's parser
and its config checks.

Bounds: the uint8-level ops (posterize, solarize, equalize, autocontrast) and brightness
are exact. Contrast, saturation and sharpness are within 2 float32 ulps near 1 (1.2e-7):
torch computes ``a + alpha * b`` as one fused multiply-add and sums the sharpness kernel
in another order. Bilinear rotation / affine: the sample points differ by float32 rounding
(torchvision goes through normalised grid coordinates and back); measured at most 5.5e-6
on this photo (fill 0, which multiplies by the rounded coverage too), asserted 1e-5.
Nearest: equal but at ties, sample points within rounding of a pixel boundary (none
differs now; one, 1.2e-6 px from a boundary, did before the matrix of a Python-number call
went in as data rather than a compile-time constant)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from flaxcnn.train import augment as A
from flaxcnn.train import checks
from flaxcnn.train.cli import load_config

H, W = 37, 53  # odd sizes: the image centre falls on a pixel centre, not a corner
BILINEAR_BOUND = 1e-5  # measured 5.5e-6
BLEND_BOUND = 1.2e-7  # 2 ulps below 1: torch's fused multiply-add


@pytest.fixture(scope="module")
def photo():
    """``(u, xt, x)``: the uint8 torch image (C, H, W), its float torch image (levels / 255 as
    torchvision converts them) and the same as a (1, H, W, C) jax batch."""
    from skimage import data
    from skimage.transform import resize

    small = resize(data.chelsea(), (H, W), anti_aliasing=True)
    u = torch.from_numpy((small * 255).round().astype(np.uint8)).permute(2, 0, 1).contiguous()
    xt = F.to_dtype(u, torch.float32, scale=True)
    return u, xt, jnp.asarray(_hwc(xt))[None]


def _hwc(t):
    return t.permute(1, 2, 0).numpy()


def _chw(a):
    return torch.from_numpy(np.asarray(a).transpose(2, 0, 1).copy())


def _assert_resampled(ours, ref, mat, interpolation, msg=""):
    """Bilinear within the bound; nearest equal but where the sample point (in double,
    from torchvision's matrix ``mat``) lies within 1e-4 px of a pixel boundary: a tie,
    which the float32 rounding of either side may round either way."""
    if interpolation == "bilinear":
        np.testing.assert_allclose(ours, ref, rtol=0, atol=BILINEAR_BOUND, err_msg=msg)
        return
    h, w = ref.shape[:2]
    ys, xs = np.mgrid[:h, :w] + 0.5 - np.array([h / 2, w / 2])[:, None, None]
    sx = mat[0] * xs + mat[1] * ys + mat[2] + w / 2 - 0.5
    sy = mat[3] * xs + mat[4] * ys + mat[5] + h / 2 - 0.5
    tie = (np.abs(sx % 1 - 0.5) < 1e-4) | (np.abs(sy % 1 - 0.5) < 1e-4)
    off = np.any(np.asarray(ours) != ref, axis=-1)
    assert not np.any(off & ~tie), (msg, np.argwhere(off & ~tie)[:5])
    assert tie.mean() < 0.005, msg


def _rotation(angle, h=H, w=W):
    return A._inverse_affine((0.0, 0.0), -(angle % 360), (0.0, 0.0), 1.0, (0.0, 0.0))


def _affinity(kw):
    shear = kw["shear"]
    centre = A._centre(kw.get("center"), H, W)
    return A._inverse_affine(centre, kw["angle"], kw["translate"], kw["scale"], shear)


AFFINES = [
    dict(angle=10.0, translate=(3, -2), scale=1.1, shear=(8.0, -5.0)),
    dict(angle=-30.0, translate=(0.5, 1.5), scale=0.8, shear=(0.0, 12.0), center=(0, 0)),
    dict(angle=0.0, translate=(0, 0), scale=1.0, shear=(16.7, 0.0), center=(0, 0)),
]
ANGLES = (-27.0, 13.5, 90.0, 180.0)  # 180: torchvision's exact transpose


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_rotate_and_affine_match_torchvision(photo, interpolation):
    _, xt, x = photo
    mode = F.InterpolationMode(interpolation)
    # A square crop, one traced angle per image (matrices in float32 on device; the
    # quarter turn by resampling, not the transpose).
    sq = jnp.tile(x[:, :, :H], (3, 1, 1, 1))
    traced = jnp.array([-27.0, 13.5, 90.0])

    @jax.jit  # one compile for all (op-by-op dispatch costs seconds)
    def ours(x, sq, traced):
        out = {}
        for fill in (None, 0.0):
            for angle in ANGLES:
                out[f"rotate {angle} {fill}"] = A.rotate(
                    x, angle, interpolation=interpolation, fill=fill
                )[0]
            for i, kw in enumerate(AFFINES):
                out[f"affine {i} {fill}"] = A.affine(
                    x, **kw, interpolation=interpolation, fill=fill
                )[0]
        out["zero"] = A.rotate(x, 20.0, interpolation=interpolation, fill=0.0)
        out["none"] = A.rotate(x, 20.0, interpolation=interpolation)
        out["traced"] = A.rotate(sq, traced, interpolation=interpolation)
        return out

    got = ours(x, sq, traced)
    for fill in (None, 0.0):
        for angle in ANGLES:
            ref = _hwc(F.rotate(xt, angle, interpolation=mode, fill=fill))
            if angle == 180.0:  # the transpose, exact in both
                np.testing.assert_array_equal(got[f"rotate {angle} {fill}"], ref)
                continue
            msg = f"rotate {angle} {fill}"
            _assert_resampled(got[msg], ref, _rotation(angle), interpolation, msg)
        for i, kw in enumerate(AFFINES):
            ref = _hwc(F.affine(xt, **kw, interpolation=mode, fill=fill))
            msg = f"affine {i} {fill}"
            _assert_resampled(got[msg], ref, _affinity(kw), interpolation, msg)
    with pytest.raises(ValueError, match=r"scale=0.0: must be > 0"):
        A.affine(x, scale=0.0)
    with pytest.raises(ValueError, match="interpolation='bicubic': must be 'nearest' or"):
        A.rotate(x, 10.0, interpolation="bicubic")
    # fill 0 is not fill None for bilinear (pytorch/vision#6517), here as in torchvision.
    assert np.array_equal(got["zero"], got["none"]) == (interpolation == "nearest")
    for img, angle in zip(got["traced"], traced.tolist(), strict=True):
        ref = _hwc(F.rotate(_chw(sq[0]), angle, interpolation=mode))
        _assert_resampled(img, ref, _rotation(angle), interpolation, str(angle))


def test_translate_is_affine_by_whole_pixels(photo):
    """The pad-and-crop translate, affine by ``(pad - left, pad - top)`` and torchvision's
    affine (nearest) agree exactly; whole-pixel shifts read pixel centres, so bilinear is
    the same too."""
    _, xt, x = photo
    pad = 4
    offsets = np.array([[0, 8], [3, 5], [4, 4], [8, 1]])
    shifts = [(int(pad - left), int(pad - top)) for top, left in offsets]

    @jax.jit
    def ours(x):
        moved = A.translate(jnp.tile(x, (4, 1, 1, 1)), jnp.asarray(offsets), pad)
        by = {
            (t, i): A.affine(x, translate=t, interpolation=i)[0]
            for t in shifts
            for i in ("nearest", "bilinear")
        }
        return moved, by

    moved, by = ours(x)
    for img, t in zip(moved, shifts, strict=True):
        np.testing.assert_array_equal(by[t, "nearest"], img)
        np.testing.assert_array_equal(by[t, "bilinear"], img)
        np.testing.assert_array_equal(_hwc(F.affine(xt, 0.0, list(t), 1.0, [0.0, 0.0])), img)


def _equalize_edge_cases():
    """Four uint8 images, channels differing: a constant image; fewer than 255 pixels below
    the top level (step 0: levels kept); two levels; and a top level of 255 holding half the
    pixels (the last bin is left out of the steps)."""
    rng = np.random.default_rng(1)
    edge = np.zeros((4, 3, H, W), np.uint8)
    edge[0] = 77
    edge[1, :, :3] = rng.integers(0, 200, (3, 3, W))
    edge[1, :, 3:] = 200
    edge[2] = np.where(rng.random((3, H, W)) < 0.3, 10, 250)
    edge[3] = rng.integers(0, 256, (3, H, W))
    edge[3, :, : H // 2] = 255
    return torch.from_numpy(edge)


SOLARIZE = (0.0, 0.3, 2 / 3, 1.0)


def test_uint8_level_ops_are_torchvisions_exactly(photo):
    u, xt, x = photo
    noise = np.random.default_rng(0).random((1, H, W, 3), dtype=np.float32)
    edge = _equalize_edge_cases()
    edge_f = F.to_dtype(edge, torch.float32, scale=True)

    @jax.jit
    def ours(x, noise, edge_f):
        return dict(
            posterize=[A.posterize(x, bits)[0] for bits in range(9)],
            noisy=[A.posterize(noise, bits)[0] for bits in (1, 5)],
            solarize=[A.solarize(x, t)[0] for t in SOLARIZE],
            autocontrast=A.autocontrast(x)[0],
            constant=A.autocontrast(jnp.full((1, 5, 6, 3), 0.4)),
            equalize=A.equalize(x)[0],
            edge=A.equalize(edge_f),
        )

    got = ours(x, jnp.asarray(noise), jnp.asarray(_hwc_batch(edge_f)))
    for bits in range(9):
        ref = F.to_dtype(F.posterize(u, bits), torch.float32, scale=True)
        np.testing.assert_array_equal(got["posterize"][bits], _hwc(ref), err_msg=str(bits))
    # Off the levels, posterize is torchvision's uint8 op between its own conversions.
    for img, bits in zip(got["noisy"], (1, 5), strict=True):
        levels = F.to_dtype(_chw(noise[0]), torch.uint8, scale=True)
        np.testing.assert_array_equal(img, _hwc(F.to_dtype(F.posterize(levels, bits), scale=True)))
    with pytest.raises(ValueError, match=r"bits=9: must be an integer in \[0, 8\]"):
        A.posterize(x, 9)
    for img, t in zip(got["solarize"], SOLARIZE, strict=True):
        np.testing.assert_array_equal(img, _hwc(F.solarize(xt, t)), err_msg=str(t))
    np.testing.assert_array_equal(got["autocontrast"], _hwc(F.autocontrast(xt)))
    np.testing.assert_array_equal(got["constant"], jnp.full((1, 5, 6, 3), 0.4))  # left alone
    np.testing.assert_array_equal(got["equalize"], _hwc(F.equalize(xt)))
    np.testing.assert_array_equal(got["equalize"], _hwc(F.to_dtype(F.equalize(u), scale=True)))
    ref = _hwc_batch(F.to_dtype(F.equalize(edge), torch.float32, scale=True))
    np.testing.assert_array_equal(got["edge"], ref)
    np.testing.assert_array_equal(ref[1], _hwc_batch(edge_f)[1])  # the step-0 case was hit


def _hwc_batch(t):
    return t.permute(0, 2, 3, 1).numpy()


FACTORS = (0.0, 0.5, 1.0, 1.7)


def test_enhance_ops_match_torchvision(photo):
    _, xt, x = photo

    @jax.jit
    def ours(x):
        grey = x[..., :1]
        out = {}
        for f in FACTORS:
            out[f"brightness {f}"] = A.adjust_brightness(x, f)[0]
            out[f"contrast {f}"] = A.adjust_contrast(x, f)[0]
            out[f"saturation {f}"] = A.adjust_saturation(x, f)[0]
            out[f"sharpness {f}"] = A.adjust_sharpness(x, f)[0]
            out[f"grey contrast {f}"] = A.adjust_contrast(grey, f)[0]
            out[f"grey sharpness {f}"] = A.adjust_sharpness(grey, f)[0]
        out["grey saturation"] = A.adjust_saturation(grey, 0.3)
        out["sharp"] = A.adjust_sharpness(x, 2.0)[0]
        out["no interior"] = A.adjust_sharpness(x[:, :2], 0.0)
        # The per-image factor of a batch is each image's.
        out["both"] = A.adjust_saturation(jnp.tile(x, (2, 1, 1, 1)), jnp.array([0.5, 1.7]))
        out["one"] = A.adjust_saturation(x, jnp.float32(1.7))[0]
        return out

    got = ours(x)
    for f in FACTORS:
        np.testing.assert_array_equal(got[f"brightness {f}"], _hwc(F.adjust_brightness(xt, f)))
        for name, ref in [
            ("contrast", F.adjust_contrast(xt, f)),
            ("saturation", F.adjust_saturation(xt, f)),
            ("sharpness", F.adjust_sharpness(xt, f)),
            ("grey contrast", F.adjust_contrast(xt[:1], f)),
            ("grey sharpness", F.adjust_sharpness(xt[:1], f)),
        ]:
            np.testing.assert_allclose(
                got[f"{name} {f}"], _hwc(ref), rtol=0, atol=BLEND_BOUND, err_msg=f"{name} {f}"
            )
    np.testing.assert_array_equal(got["grey saturation"], x[..., :1])  # as torchvision
    # Sharpness: the border keeps its pixels; an image with no interior is left alone.
    for edge in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):
        np.testing.assert_array_equal(got["sharp"][edge], x[0][edge])
    np.testing.assert_array_equal(got["no interior"], x[:, :2])
    np.testing.assert_array_equal(got["both"][1], got["one"])


def test_randaugment_magnitudes_are_torchvisions():
    """torch.linspace's CPU kernel rounds some entries the other way (which ones depends on
    its SIMD width): at most one ulp. Posterize's bits and the ops without one are equal."""
    for bins in (31, 11):
        for m in range(bins):
            ours = A.randaugment_magnitudes(H, W, m, bins)
            for op, (space, _) in v2.RandAugment._AUGMENTATION_SPACE.items():
                ref = space(bins, H, W)
                if ref is None:
                    assert ours[op] is None
                elif op == "Posterize":
                    assert ours[op] == int(ref[m]), (bins, m)
                else:
                    ulps = abs(_bits(ours[op]) - _bits(float(ref[m])))
                    assert ulps <= 1, (op, bins, m, ours[op], float(ref[m]))
    assert tuple(v2.RandAugment._AUGMENTATION_SPACE) == A.RANDAUGMENT_OPS
    with pytest.raises(ValueError, match=r"magnitude=31: must be an integer in \[0, 30\]"):
        A.randaugment_magnitudes(H, W, 31)


def _bits(v):
    return int(np.float32(v).view(np.int32))


_EVERY_OP = {}


def _every_op(x, magnitude, interpolation):
    """Each op with each sign, one per image, through RandAugment's switch: ``(images,
    [(op, signed magnitude)])``; computed once per magnitude and interpolation."""
    if (magnitude, interpolation) in _EVERY_OP:
        return _EVERY_OP[magnitude, interpolation]
    n = len(A.RANDAUGMENT_OPS)
    ops = jnp.repeat(jnp.arange(n), 2)[:, None]
    negative = jnp.tile(jnp.array([False, True]), n)[:, None]
    apply = jax.jit(A._randaugment_apply, static_argnums=(3, 4, 5))
    out = apply(jnp.tile(x, (2 * n, 1, 1, 1)), ops, negative, magnitude, 31, interpolation)
    mags = A.randaugment_magnitudes(H, W, magnitude)
    cases = []
    for i in range(2 * n):
        op = A.RANDAUGMENT_OPS[i // 2]
        m = mags[op]
        cases.append((op, 0.0 if m is None else -m if i % 2 and op in A._SIGNED else m))
    _EVERY_OP[magnitude, interpolation] = np.asarray(out), cases
    return _EVERY_OP[magnitude, interpolation]


def _standalone(x, op, m, interpolation):
    geometric = dict(interpolation=interpolation)
    shear = math.degrees(math.atan(m)) if op in ("ShearX", "ShearY") else 0.0
    return {
        "Identity": lambda: x,
        "ShearX": lambda: A.affine(x, shear=(shear, 0.0), center=(0, 0), **geometric),
        "ShearY": lambda: A.affine(x, shear=(0.0, shear), center=(0, 0), **geometric),
        "TranslateX": lambda: A.affine(x, translate=(int(m), 0), **geometric),
        "TranslateY": lambda: A.affine(x, translate=(0, int(m)), **geometric),
        "Rotate": lambda: A.rotate(x, m, **geometric),
        "Brightness": lambda: A.adjust_brightness(x, 1.0 + m),
        "Color": lambda: A.adjust_saturation(x, 1.0 + m),
        "Contrast": lambda: A.adjust_contrast(x, 1.0 + m),
        "Sharpness": lambda: A.adjust_sharpness(x, 1.0 + m),
        "Posterize": lambda: A.posterize(x, int(m)),
        "Solarize": lambda: A.solarize(x, m),
        "AutoContrast": lambda: A.autocontrast(x),
        "Equalize": lambda: A.equalize(x),
    }[op]()[0]


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_each_randaugment_op_is_the_function_and_torchvisions(photo, interpolation):
    """Every op and sign at magnitude 27 (timm's m9) through RandAugment's switch equals
    the standalone function with torchvision's mapping exactly, and torchvision's own
    ``RandAugment`` op (posterize on uint8, as defined) within the bounds above."""
    u, xt, x = photo
    out, cases = _every_op(x, 27, interpolation)
    tv = v2.RandAugment(interpolation=F.InterpolationMode(interpolation))
    mats = A._randaugment_params(H, W, 27, 31)[0]
    standalone = jax.jit(lambda x: [_standalone(x, op, m, interpolation) for op, m in cases])
    for img, alone, (op, m) in zip(out, standalone(x), cases, strict=True):
        np.testing.assert_array_equal(img, alone, err_msg=op)
        src = u if op == "Posterize" else xt
        ref = tv._apply_image_or_video_transform(src, op, m, tv.interpolation, tv._fill)
        ref = _hwc(F.to_dtype(ref, torch.float32, scale=True))
        k = A.RANDAUGMENT_OPS.index(op)
        if op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
            mat = mats[k, int(m < 0)].astype(np.float64)
            _assert_resampled(img, ref, mat, interpolation, f"{op} {m}")
        else:
            bound = BLEND_BOUND if op in ("Color", "Contrast", "Sharpness") else 0.0
            np.testing.assert_allclose(img, ref, rtol=0, atol=bound, err_msg=f"{op} {m}")
        # Every op does something to the photo at this magnitude (but Identity).
        assert (op == "Identity") == np.array_equal(img, x[0]), op


def test_randaugment_at_magnitude_zero(photo):
    """The geometric ops and the enhance ops (factor 1) are the identity, exactly; so is
    posterize (8 bits); solarize (threshold 1) inverts only pixels at 1."""
    _, _, x = photo
    out, cases = _every_op(x, 0, "bilinear")
    for img, (op, _) in zip(out, cases, strict=True):
        if op in ("AutoContrast", "Equalize"):
            continue  # no magnitude
        want = np.where(x[0] == 1.0, 0.0, x[0]) if op == "Solarize" else x[0]
        np.testing.assert_array_equal(img, want, err_msg=op)


def test_randaugment_draws_ops_per_image_seeded_and_shard_independent(photo):
    """Each image gets one of the 28 (op, sign) results, both signs and most ops occur over
    a batch; the same key gives the same batch, on one device or split over eight."""
    _, _, x = photo
    candidates, cases = _every_op(x, 27, "nearest")
    xb = jnp.tile(x, (32, 1, 1, 1))
    ra = jax.jit(lambda k, x: A.randaugment(k, x, num_ops=1, magnitude=27))
    out = np.asarray(ra(jax.random.key(0), xb))
    seen = []
    for img in out:
        hits = [c for c, cand in zip(cases, candidates, strict=True) if np.array_equal(img, cand)]
        assert hits
        seen.append(hits[0])
    assert len({op for op, _ in seen}) >= 9 and {m < 0 for _, m in seen} == {True, False}
    np.testing.assert_array_equal(ra(jax.random.key(0), xb), out)
    assert not np.array_equal(ra(jax.random.key(1), xb), out)
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    sharded = jax.device_put(xb, NamedSharding(mesh, PartitionSpec("data")))
    np.testing.assert_array_equal(ra(jax.random.key(0), sharded), out)
    np.testing.assert_array_equal(A.randaugment(jax.random.key(2), xb, 0, 27), xb)  # no ops


def test_salt_and_pepper_statistics_and_seed():
    x = jnp.full((8, 40, 50, 3), 0.5)
    p, salt = 0.1, 0.3
    noise = jax.jit(A.salt_and_pepper, static_argnums=(2, 3))
    out = np.asarray(noise(jax.random.key(0), x, p, salt))
    pixel = out[..., 0]
    assert np.all(out == pixel[..., None])  # the channels of a pixel together
    assert set(np.unique(pixel)) == {0.0, 0.5, 1.0}
    # 16000 pixels: the fractions within 4 binomial standard deviations (0.0024, 0.0013).
    n = pixel.size
    for frac, q in [(np.mean(pixel != 0.5), p), (np.mean(pixel == 1.0), p * salt)]:
        assert abs(frac - q) < 4 * math.sqrt(q * (1 - q) / n), (frac, q)
    np.testing.assert_array_equal(noise(jax.random.key(0), x, p, salt), out)
    assert not np.array_equal(noise(jax.random.key(1), x, p, salt), out)
    # Each image from its own key: no two images get the same specks.
    assert not any(np.array_equal(pixel[0], pixel[i]) for i in range(1, 8))
    np.testing.assert_array_equal(noise(jax.random.key(0), x, 0.0, 0.5), x)


@pytest.mark.parametrize(
    "value, spec",
    [
        ("rand-m9-n2", (2, 27)),
        ("rand-n3-m5", (3, 15)),
        ("rand-m10", (2, 30)),
        ("rand", (2, 30)),  # timm's defaults
        ((2, 9), (2, 9)),  # torchvision's RandAugment(2, 9)
        ("", None),
        (None, None),
    ],
)
def test_parse_randaugment_accepts(value, spec):
    assert checks.parse_randaugment(value) == spec


@pytest.mark.parametrize(
    "value, why",
    [
        ("rand-m9-mstd0.5", "timm's 'mstd' (magnitude noise per op) is not supported"),
        ("rand-m9-n2-inc1", "timm's 'inc'"),
        ("rand-m9-p0.5", "timm's 'p'"),
        ("rand-m9-mmax20", "timm's 'mmax'"),
        ("rand-m9-tweights", "timm's transform sets ('tweights') are not supported"),
        ("rand-m11-n2", "m11 is above timm's maximum magnitude, 10"),
        ("rand-m9-x2", "unknown section 'x2'"),
        ("rand-m9-m8", "'m' is given twice"),
        ("rand-m-1", "'m' takes a non-negative integer, not ''"),
        ("rand-m9.5", "'m' takes a non-negative integer, not '9.5'"),
        ("augmix-m9", "a timm string starts with 'rand'"),
        ((2, 31), "magnitude an integer in [0, 30]"),
        ((-1, 9), "num_ops must be an integer >= 0"),
        (5, "neither a string nor a pair"),
    ],
)
def test_parse_randaugment_refuses(value, why):
    with pytest.raises(ValueError) as e:
        checks.parse_randaugment(value)
    assert str(e.value).startswith(f"randaugment={value!r}: must be ") and "\n" not in str(e.value)
    assert str(e.value).endswith(why) or why in str(e.value)


def test_config_fields_of_the_new_augmentations():
    cfg = load_config("default", ["--config.augment.randaugment=rand-m9-n2"])
    assert (cfg.augment.randaugment, cfg.augment.salt_pepper) == ("rand-m9-n2", 0.0)
    checks.validate_config(cfg)
    assert load_config("default").augment.randaugment == ""  # off by default
    cfg.augment.randaugment = "rand-m9-mstd0.5"
    with pytest.raises(checks.ConfigError) as e:
        checks.validate_config(cfg)
    assert str(e.value) == (
        f"config.augment.randaugment='rand-m9-mstd0.5': must be {checks.RANDAUGMENT_FORMS}; "
        "timm's 'mstd' (magnitude noise per op) is not supported"
    )
    cfg.augment.randaugment = ""
    cfg.augment.salt_pepper = 1.5
    with pytest.raises(
        checks.ConfigError, match=r"^config.augment.salt_pepper=1.5: must be a number in \[0, 1\]$"
    ):
        checks.validate_config(cfg)


def test_augment_batch_wires_the_new_keys(photo):
    """The six earlier keys use the keys they always did (new ones are folded in), RandAugment
    runs after the flip with the key folded in at 6 (timm's m9 as bin 27), salt-and-pepper
    after the noise at 7; with masks RandAugment is refused."""
    _, _, x = photo
    xb = jnp.tile(x, (4, 1, 1, 1))

    @jax.jit
    def both(key, xb):
        keys = jax.random.split(key, 6)
        old = A.augment_batch(key, xb, {"hflip": True, "color_jitter": 0.3, "randaugment": ""})
        old_by_hand = A.color_jitter(keys[2], A.hflip(keys[1], xb), 0.3, 0.3, 0.3)
        cfg = {"hflip": True, "randaugment": "rand-m9-n2", "salt_pepper": 0.05}
        new = A.augment_batch(key, xb, cfg)
        by_hand = A.randaugment(jax.random.fold_in(key, 6), A.hflip(keys[1], xb), 2, 27)
        by_hand = A.salt_and_pepper(jax.random.fold_in(key, 7), by_hand, 0.05)
        return old, old_by_hand, new, by_hand

    old, old_by_hand, new, by_hand = both(jax.random.key(5), xb)
    np.testing.assert_array_equal(old, old_by_hand)
    np.testing.assert_array_equal(new, by_hand)
    assert not np.array_equal(new, A.hflip(jax.random.split(jax.random.key(5), 6)[1], xb))
    key = jax.random.key(5)
    masks = jnp.zeros(xb.shape[:3], jnp.int32)
    with pytest.raises(ValueError, match="randaugment's shear, translate and rotate do not"):
        A.augment_batch(key, xb, {"randaugment": (2, 9)}, mask=masks)
    with pytest.raises(ValueError, match=r"randaugment='rand-m9-x1': must be"):
        A.augment_batch(key, xb, {"randaugment": "rand-m9-x1"})


def test_segmentation_refuses_randaugment_at_start():
    """At start-up, with the other settings segmentation cannot take (checked without
    loading the dataset)."""
    from types import SimpleNamespace

    from flaxcnn.train import data, loop

    cfg = load_config("shapes_unet", ["--config.augment.randaugment=rand-m9-n2"])
    with pytest.raises(loop.ConfigError) as e:
        loop._check_task(cfg, SimpleNamespace(task="segmentation"), data.get_dataset("shapes"))
    assert str(e.value).startswith(
        "segmentation training does not support config.augment.randaugment='rand-m9-n2': "
        "switch it off"
    )
