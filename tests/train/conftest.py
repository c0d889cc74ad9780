"""Fixtures for the trainer's tests: the embedded digits (and, for segmentation, shapes)
prepared once per session, and tiny registry models that compile in seconds: ResNet-18's
CIFAR stem with one basic block (BN, residual, head), and a padded U-Net of depth 2 and
base width 4 on 32x32 shapes."""

import pytest

from flaxcnn.train.cli import load_config

TINY = {"stem_type": "cifar", "stage_sizes": (1,)}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    from flaxcnn.train import data

    d = str(tmp_path_factory.mktemp("tfds"))
    info = data.get_dataset("digits")
    data.load_source(info, "train", d)
    return d


@pytest.fixture
def tiny_config(data_dir):
    """``make(workdir, **overrides)``: the digits ResNet config shrunk to seconds."""
    return lambda workdir, **overrides: _tiny_config(data_dir, workdir, **overrides)


@pytest.fixture(scope="session")
def tiny_model_kwargs():
    return dict(TINY)


@pytest.fixture(scope="session")
def shapes_dir(data_dir):
    from flaxcnn.train import data

    data.load_source(data.get_dataset("shapes"), "train", data_dir)
    return data_dir


@pytest.fixture
def seg_config(shapes_dir):
    """``make(workdir, **overrides)``: the shapes U-Net config shrunk to seconds (the test
    split's 200 images in eval batches of 48, so the last one is padded)."""

    def make(workdir, **overrides):
        cfg = load_config("shapes_unet")
        cfg.model_kwargs = {"depth": 2, "base_width": 4}
        cfg.image_size = 32
        cfg.batch_size = 16
        cfg.eval_batch_size = 48
        return _shrink(cfg, shapes_dir, workdir, overrides)

    return make


def _tiny_config(data_dir: str, workdir: str, **overrides):
    cfg = load_config("digits_resnet18")
    cfg.model_kwargs = dict(TINY)
    cfg.image_size = 16
    cfg.batch_size = 32
    cfg.eval_batch_size = 120
    return _shrink(cfg, data_dir, workdir, overrides)


def _shrink(cfg, data_dir: str, workdir: str, overrides: dict):
    cfg.data_dir = data_dir
    cfg.workdir = workdir
    cfg.num_steps = 4
    cfg.checkpoint_every_steps = 2
    cfg.progress = False
    for k, v in overrides.items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return cfg
