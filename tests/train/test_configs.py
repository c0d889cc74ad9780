"""The recipe configs: what each sets is the recipe it names, and it runs (two steps on the
embedded digits standing in for the dataset it is written for)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxcnn import create_model
from flaxcnn.train import checks, loop, optim
from flaxcnn.train.cli import load_config


def test_cifar10_resnet56_is_he_et_al_recipe(data_dir, tmp_path):
    cfg = load_config("cifar10_resnet56")
    checks.validate_config(cfg)
    assert (cfg.model, cfg.dataset, cfg.image_size, cfg.batch_size) == (
        "resnet56",
        "cifar10",
        32,
        128,
    )
    assert (cfg.augment.translate, cfg.augment.hflip) == (4, True)
    o = cfg.optim
    assert (o.optimizer, o.momentum, o.nesterov, o.weight_decay) == ("sgd", 0.9, False, 1e-4)
    # 0.1, divided by 10 at 32k and 48k of 64k iterations
    sched = optim.build_schedule(o, cfg.num_steps)
    lrs = [float(sched(s)) for s in (0, 31_999, 32_000, 47_999, 48_000, 63_999)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    assert _param_count(cfg.model, cfg.model_kwargs, 32) == 853_018  # Table 6: 0.85M
    _two_steps_on_digits(cfg, data_dir, tmp_path, {"stage_sizes": (1, 1, 1)})


def _param_count(name, model_kwargs, size):
    model = create_model(name, **model_kwargs)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    return sum(a.size for a in jax.tree.leaves(shapes["params"]))


def _two_steps_on_digits(cfg, data_dir, tmp_path, model_kwargs):
    """Two steps of a recipe (optimizer, schedule, augmentations, losses, model family) on
    the embedded digits standing in for its dataset, the model cut to one block per stage
    so that compiling stays short. The run stops after step 2 of 3, before its first
    checkpoint: no evaluation is compiled (``test_loop`` tests those parts)."""
    cfg.dataset, cfg.data_dir, cfg.workdir = "digits", data_dir, str(tmp_path)
    cfg.model_kwargs = {**cfg.model_kwargs, **model_kwargs}
    cfg.image_size, cfg.num_steps, cfg.batch_size = 32, 3, 16
    cfg.checkpoint_every_steps, cfg.progress = 3, False
    out = loop.train(cfg, stop_at=2)
    assert out["step"] == 2 and "top1" not in out, sorted(out)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(out["state"].params))
    return out["state"]


IMAGENET_STEPS_PER_EPOCH = 1_281_167 // 1024  # the train split in batches of 1024


def test_imagenet_resnet50_is_goyal_et_al_with_label_smoothing(data_dir, tmp_path):
    cfg = load_config("imagenet_resnet50")
    checks.validate_config(cfg)
    assert (cfg.model, cfg.dataset, cfg.image_size, cfg.batch_size, cfg.num_epochs) == (
        "resnet50",
        "imagenet2012",
        224,
        1024,
        90,
    )
    assert (cfg.augment.crop_scale_min, cfg.augment.hflip, cfg.label_smoothing) == (
        0.08,
        True,
        0.1,
    )
    o = cfg.optim
    assert (o.optimizer, o.momentum, o.nesterov, o.weight_decay) == ("sgd", 0.9, False, 1e-4)
    # 0.1 per 256 images: 0.4 at 1024, 0.1 at 256; 5 warm-up epochs, then cosine to zero.
    spe = IMAGENET_STEPS_PER_EPOCH
    r = optim.resolve(o, batch_size=1024, steps_per_epoch=spe)
    assert (r.learning_rate, r.warmup_steps) == (0.4, 5 * spe)
    assert optim.resolve(o, batch_size=256, steps_per_epoch=4 * spe).learning_rate == 0.1
    assert (o.learning_rate, o.warmup_epochs) == (0.1, 5.0)  # resolve copies
    total = 90 * spe
    sched = optim.build_schedule(r, total)
    w, mid = 5 * spe, (5 * spe + total) // 2
    half = 0.2 * (1 + np.cos(np.pi * (mid - w) / (total - w)))  # 0.2, half a step early
    lrs = [float(sched(s)) for s in (0, w, mid, total)]
    np.testing.assert_allclose(lrs, [0.0, 0.4, half, 0.0], rtol=1e-6, atol=1e-7)
    assert _param_count(cfg.model, cfg.model_kwargs, 224) == 25_557_032  # torchvision's
    _two_steps_on_digits(cfg, data_dir, tmp_path, {"stage_sizes": (1, 1, 1, 1)})


def test_warmup_is_given_in_steps_or_in_epochs_not_both():
    cfg = load_config("imagenet_resnet50")
    cfg.optim.warmup_steps = 100
    with pytest.raises(checks.ConfigError, match="warmup_steps=100 and .*warmup_epochs=5.0"):
        checks.validate_config(cfg)


def test_imagenet_convnext_tiny_is_liu_et_al_recipe(data_dir, tmp_path):
    cfg = load_config("imagenet_convnext_tiny")
    checks.validate_config(cfg)
    assert (cfg.model, cfg.dataset, cfg.image_size, cfg.batch_size, cfg.num_epochs) == (
        "convnext_tiny",
        "imagenet2012",
        224,
        4096,
        300,
    )
    a = cfg.augment
    assert (a.crop_scale_min, a.hflip, a.randaugment, a.erase_prob) == (
        0.08,
        True,
        "rand-m9-n2",
        0.25,
    )
    assert (cfg.mixup_alpha, cfg.cutmix_alpha, cfg.label_smoothing, cfg.ema_decay) == (
        0.8,
        1.0,
        0.1,
        0.9999,
    )
    assert cfg.model_kwargs["drop_path_rate"] == 0.1
    o = cfg.optim
    assert (o.optimizer, o.b1, o.b2, o.weight_decay) == ("adamw", 0.9, 0.999, 0.05)
    # 4e-3 at a batch of 4096 (and 1e-3 at 1024); 20 warm-up epochs, then cosine to zero.
    spe = 1_281_167 // 4096
    r = optim.resolve(o, batch_size=4096, steps_per_epoch=spe)
    assert (r.learning_rate, r.warmup_steps) == (4e-3, 20 * spe)
    assert optim.resolve(o, batch_size=1024, steps_per_epoch=4 * spe).learning_rate == 1e-3
    total = 300 * spe
    sched = optim.build_schedule(r, total)
    lrs = [float(sched(s)) for s in (0, 20 * spe, total)]
    np.testing.assert_allclose(lrs, [0.0, 4e-3, 0.0], atol=1e-9)
    assert _param_count(cfg.model, cfg.model_kwargs, 224) == 28_589_128  # timm's
    # Two steps with every piece on: RandAugment, erasing, the Mixup/CutMix switch, label
    # smoothing, drop path, EMA, AdamW.
    state = _two_steps_on_digits(cfg, data_dir, tmp_path, {"depths": (1, 1, 1, 1)})
    assert state.ema_params is not None


def test_a_rescaled_learning_rate_gets_its_own_step(tiny_config, tmp_path):
    """The jitted steps are reused by a later run with the same settings; with
    ``lr_base_batch`` the batch size changes the optimizer, so it must not reuse them."""
    runs = []
    for batch in (16, 32):
        cfg = tiny_config(str(tmp_path / str(batch)), batch_size=batch)
        cfg.optim.lr_base_batch = 256
        runs.append(loop._steps(loop.setup(cfg))[0])  # building, not compiling
    same = tiny_config(str(tmp_path / "same"), batch_size=32)
    same.optim.lr_base_batch = 256
    assert runs[0] is not runs[1]
    assert loop._steps(loop.setup(same))[0] is runs[1]
