"""Fixtures for the trainer's tests: the embedded digits prepared once per session, and a
tiny registry model (ResNet-18's CIFAR stem with one basic block: BN, residual, head) that
compiles in seconds."""

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


def _tiny_config(data_dir: str, workdir: str, **overrides):
    cfg = load_config("digits_resnet18")
    cfg.model_kwargs = dict(TINY)
    cfg.data_dir = data_dir
    cfg.workdir = workdir
    cfg.image_size = 16
    cfg.batch_size = 32
    cfg.eval_batch_size = 120
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
