"""The recipe configs: what each sets is the recipe it names, and it runs (two steps on the
embedded digits standing in for the dataset it is written for)."""

import jax
import jax.numpy as jnp
import numpy as np

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
    # the model is the paper's (Table 6: 0.85M parameters)
    model = create_model(cfg.model, **cfg.model_kwargs)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert sum(a.size for a in jax.tree.leaves(shapes["params"])) == 853_018

    # Two steps of the recipe (optimizer, schedule, augmentations, model family) on the
    # embedded digits standing in for CIFAR-10; one block per stage keeps compiling short.
    cfg.dataset, cfg.data_dir, cfg.workdir = "digits", data_dir, str(tmp_path)
    cfg.model_kwargs = {"stage_sizes": (1, 1, 1)}
    cfg.num_steps, cfg.batch_size, cfg.eval_batch_size = 2, 16, 120
    cfg.checkpoint_every_steps, cfg.progress = 2, False
    out = loop.train(cfg)
    assert int(out["state"].step) == 2 and 0.0 <= out["top1"] <= 1.0, sorted(out)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(out["state"].params))
