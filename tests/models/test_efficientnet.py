"""The block-string builder of the MobileNet/EfficientNet family, against timm's and
torchvision's own arithmetic, and the family's conversion quirks (TF 'SAME' padding,
torchvision's differently named heads)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxcnn
from flaxcnn.models import efficientnet as E

FAMILY = [n for n in flaxcnn.list_models() if flaxcnn.get_model_spec(n).cls is E.EfficientNet]


@pytest.mark.parametrize("v", [1, 7.5, 8, 12, 18, 30, 36, 44.8, 88.08, 120, 184, 403.2, 1792])
@pytest.mark.parametrize("divisor", [4, 8])
def test_make_divisible_matches_sources(v, divisor):
    from timm.layers import make_divisible
    from torchvision.models._utils import _make_divisible

    assert E.make_divisible(v, divisor) == make_divisible(v, divisor) == _make_divisible(v, divisor)


@pytest.mark.parametrize("name", FAMILY)
def test_decoded_stages_match_timm(name):
    """Repeats and channels per block equal timm's decoder (depth scaling, multi-kind stages)."""
    from timm.models._efficientnet_builder import decode_arch_def, round_channels

    cfg = flaxcnn.get_model_spec(name).config
    arch = cfg["arch"]
    depth, width = cfg.get("depth_multiplier", 1.0), cfg.get("width_multiplier", 1.0)
    fix = cfg.get("fix_first_last", False)
    ours = E.decode_arch(arch, depth, fix)
    theirs = decode_arch_def([line.split() for line in arch], depth, fix_first_last=fix)
    assert [len(s) for s in ours] == [len(s) for s in theirs]
    for s_ours, s_theirs in zip(ours, theirs, strict=True):
        for a, b in zip(s_ours, s_theirs, strict=True):
            assert round_channels(a.out_chs, width) == round_channels(b["out_chs"], width)
            assert a.kernel == b.get(
                "dw_kernel_size", b.get("exp_kernel_size", b.get("kernel_size"))
            )
            assert a.stride == b["stride"]


def test_block_string_errors():
    with pytest.raises(ValueError, match="unknown block type 'xx'"):
        E.decode_arch(["xx_r1_k3_s1_c16"])
    with pytest.raises(ValueError, match="unknown option 'q7'"):
        E.decode_arch(["ir_r1_k3_s1_e6_c16_q7"])
    with pytest.raises(ValueError, match=r"missing option\(s\) \['c'\]"):
        E.decode_arch(["ir_r1_k3_s1_e6"])


def test_depth_scaling_shares_repeats_from_the_last_kind():
    # timm's rule: a stage "1 x A, 1 x B, 2 x C" scaled by 1.5 -> ceil(6) = 6 blocks, 1/2/3.
    (stage,) = E.decode_arch(["ir_r1_k3_s2_e6_c80 ir_r1_k3_s1_e2.5_c80 ir_r2_k3_s1_e2.3_c80"], 1.5)
    assert [a.exp_ratio for a in stage] == [6.0, 2.5, 2.5, 2.3, 2.3, 2.3]


@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "tf_efficientnetv2_b0"])
def test_stage_plan_is_what_is_built(name):
    """The one decoded plan (:meth:`EfficientNet.stage_plan`) names every block the model
    builds, with its output and SE widths (shapes only: ``jax.eval_shape``)."""
    model = flaxcnn.create_model(name)
    h, w, c = flaxcnn.get_model_spec(name).input_size
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, h, w, c)))["params"]
    plan = model.stage_plan()
    built = {k for k in params if k.startswith("blocks_")}
    assert built == {f"blocks_{i}_{j}" for i, s in enumerate(plan) for j in range(len(s))}
    for i, stage in enumerate(plan):
        for j, b in enumerate(stage):
            block = params[f"blocks_{i}_{j}"]
            last = {"ds": "conv_pw", "dsa": "conv_pw", "cn": "conv"}.get(
                b.args.block_type, "conv_pwl"
            )
            assert block[last]["kernel"].shape[-1] == b.out_chs
            se = block.get("se")
            assert (se["fc1"]["kernel"].shape[-1] if se else 0) == b.se_chs
    assert [s[0].stride for s in plan] == [int(s.split("_s")[1][0]) for s in model.arch]


def test_features_and_bad_fields():
    model = flaxcnn.create_model("mobilenetv3_small_100", num_classes=0)
    x = jnp.zeros((1, 64, 64, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (1, 1024)
    with pytest.raises(ValueError, match="padding must be"):
        flaxcnn.create_model("efficientnet_b0", padding="valid").init(jax.random.key(0), x)


def test_tf_same_padding_is_asymmetric_and_needed():
    """At 97x131, stride-2 convs pad TF-'SAME' asymmetrically: the tf_ model only matches
    timm with it (and a symmetric-padding twin does not)."""
    import timm
    import torch

    from flaxcnn.convert import from_torch

    torch.manual_seed(0)
    tm = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 97, 131), dtype=np.float32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    xj = jnp.asarray(x.transpose(0, 2, 3, 1))
    diffs = {}
    for padding in ("same", ""):
        module, variables = from_torch("tf_efficientnet_lite0", tm, source="timm", padding=padding)
        diffs[padding] = float(np.max(np.abs(np.asarray(module.apply(variables, xj)) - ref)))
    bound = 1e-4 * max(1.0, float(np.max(np.abs(ref))))
    assert diffs["same"] <= bound
    assert diffs[""] > 100 * bound


@pytest.mark.parametrize(
    ("tv_name", "head"),
    [("mobilenet_v3_small", "classifier.3"), ("efficientnet_b0", "classifier.1")],
)
def test_torchvision_head_names_give_num_classes(tv_name, head):
    """torchvision's final Linear sits at a position in ``classifier``; the converter reads
    num_classes (and in_chans) through the family's renames."""
    import torchvision

    from flaxcnn.convert import from_torch

    tm = torchvision.models.get_model(tv_name, weights=None, num_classes=10)
    assert f"{head}.weight" in tm.state_dict()
    module, variables = from_torch(tv_name, tm, source="torchvision")
    assert module.num_classes == 10
    assert variables["params"]["classifier"]["kernel"].shape[-1] == 10


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_mobilenet_v1_width_multipliers_equal_timms_generator(alpha, monkeypatch):
    """Howard et al.'s width multiplier: ``mobilenetv1_025/050/075`` are timm's MobileNet
    v1 generator at that ``channel_multiplier`` (timm registers no name for them), proven
    by the equivalence check (eval and train at two sizes, export) on that torch model."""
    import sys

    import timm.models.efficientnet as timm_effnet

    from flaxcnn.convert import verify

    verify_mod = sys.modules[verify.__module__]

    name = f"mobilenetv1_{round(100 * alpha):03d}"
    assert flaxcnn.create_model(name) == flaxcnn.create_model(
        "mobilenetv1_100", width_multiplier=alpha
    )
    monkeypatch.setattr(
        verify_mod,
        "build_torch_model",
        lambda *_, **kw: timm_effnet._gen_mobilenet_v1("mobilenetv1_100", alpha, **kw),
    )
    result = verify_mod.verify(
        "mobilenetv1_100", source="timm", overrides={"width_multiplier": alpha}
    )
    assert result.ok and [c.mode for c in result.checks] == ["eval"] * 2 + ["train"] * 2 + [
        "export"
    ], str(result)
    assert result.torch_params == result.flax_params


def test_mobilenet_v2_width_mult_equals_torchvision():
    """torchvision's ``mobilenet_v2(width_mult=0.5)`` is flaxcnn's ``mobilenetv2_050`` (timm's
    name, proven against timm by the equivalence suite): one network in both libraries."""
    from flaxcnn.convert import verify

    assert flaxcnn.create_model("mobilenetv2_050") == flaxcnn.create_model(
        "mobilenetv2_100", width_multiplier=0.5
    )
    result = verify(
        "mobilenet_v2",
        source="torchvision",
        torch_kwargs={"width_mult": 0.5},
        overrides={"width_multiplier": 0.5},
    )
    assert result.ok, str(result)
