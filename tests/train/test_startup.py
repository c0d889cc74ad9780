"""The trainer refuses what cannot work before it starts, in one line, creating nothing: a
missing ``[train]`` dependency, a setting out of its range (through the Python API and the
command line), and a checkpoint that is corrupt, truncated or written for another model,
which it leaves as it found it."""

import hashlib
import importlib.util
import math
import os
import subprocess
import sys

import pytest

from flaxcnn.train import checks, cli, data, loop
from flaxcnn.train.checkpoint import Checkpointer, CheckpointError

# (field, bad value, the whole message). Each class of field: integers with a floor,
# probabilities, open and half-open intervals, choices, sequences, nested fields. (A value of
# the wrong type cannot be set: ConfigDict and the command line refuse it.)
BAD_SETTINGS = [
    ("batch_size", 0, "config.batch_size=0: must be an integer >= 1"),
    ("batch_size", -8, "config.batch_size=-8: must be an integer >= 1"),
    ("eval_batch_size", -1, "config.eval_batch_size=-1: must be an integer >= 0"),
    ("num_classes", -1, "config.num_classes=-1: must be an integer >= 0"),
    ("num_steps", -5, "config.num_steps=-5: must be an integer >= 0"),
    ("image_size", 0, "config.image_size=0: must be an integer >= 1"),
    ("optim.learning_rate", -1.0, "config.optim.learning_rate=-1.0: must be a finite number > 0"),
    ("optim.learning_rate", math.inf, "config.optim.learning_rate=inf: must be a finite number > 0"),
    ("optim.momentum", 1.0, "config.optim.momentum=1.0: must be a number in [0, 1)"),
    ("optim.optimizer", "adam", "config.optim.optimizer='adam': must be one of 'sgd', 'adamw'"),
    ("optim.step_fractions", (0.75, 0.5), "config.optim.step_fractions=(0.75, 0.5): must be an "
     "increasing sequence of numbers in (0, 1)"),
    ("optim.plateau_factor", 0.0, "config.optim.plateau_factor=0.0: must be a number in (0, 1)"),
    ("crop_pct", 0.0, "config.crop_pct=0.0: must be a number in (0, 1]"),
    ("augment.erase_prob", 1.5, "config.augment.erase_prob=1.5: must be a number in [0, 1]"),
    ("augment.crop_scale_min", 1.5, "config.augment.crop_scale_min=1.5: must be a number in "
     "[0, 1]"),
    ("optim.weight_decay", -1e-4, "config.optim.weight_decay=-0.0001: must be a finite number >= 0"),
    ("optim.warmup_steps", -1, "config.optim.warmup_steps=-1: must be an integer >= 0"),
    ("optim.warmup_epochs", -1.0, "config.optim.warmup_epochs=-1.0: must be a finite number "
     ">= 0"),
    ("optim.lr_base_batch", -256, "config.optim.lr_base_batch=-256: must be an integer >= 0"),
    ("label_smoothing", 1.0, "config.label_smoothing=1.0: must be a number in [0, 1)"),
    ("mixup_alpha", -0.2, "config.mixup_alpha=-0.2: must be a finite number >= 0"),
    ("ema_decay", math.nan, "config.ema_decay=nan: must be a number in [0, 1)"),
    ("distill.temperature", 0.0, "config.distill.temperature=0.0: must be a finite number > 0"),
    ("loss_scale.period", 0, "config.loss_scale.period=0: must be an integer >= 1"),
    ("seed", -1, "config.seed=-1: must be an integer in [0, 2147483646]"),
    ("keep_checkpoints", 0, "config.keep_checkpoints=0: must be an integer >= 1"),
    ("max_nonfinite", 0, "config.max_nonfinite=0: must be an integer >= 1"),
    ("batch_norm", "local", "config.batch_norm='local': must be one of 'sync', 'group'"),
]  # fmt: skip


def _set(cfg, field, value):
    *parents, leaf = field.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value


@pytest.mark.parametrize("field, value, message", BAD_SETTINGS)
def test_bad_setting_is_one_line_and_creates_nothing(tiny_config, tmp_path, field, value, message):
    workdir = tmp_path / "run"
    cfg = tiny_config(str(workdir))
    _set(cfg, field, value)
    with pytest.raises(loop.ConfigError) as e:
        loop.train(cfg)
    assert str(e.value) == message
    assert not workdir.exists()


def test_a_run_of_no_steps_and_an_image_the_model_cannot_take_fail_at_start(tiny_config, tmp_path):
    """Zero epochs and zero steps used to create the workdir and fail at the end, and
    LeNet-5 on 8x8 images with a traceback from inside the model."""
    workdir = tmp_path / "run"
    with pytest.raises(loop.ConfigError, match=r"num_steps=0 and config.num_epochs=0: .* >= 1$"):
        loop.train(tiny_config(str(workdir), num_steps=0, num_epochs=0))
    small = tiny_config(str(workdir), model="lenet5", model_kwargs={}, image_size=8)
    with pytest.raises(loop.ConfigError, match=r"^config.image_size=8: ") as e:
        loop.train(small)
    assert "\n" not in str(e.value)
    assert not workdir.exists()


def test_every_field_of_the_default_config_is_checked():
    """A field added to default.py without a range check fails here."""

    def paths(node, prefix=""):
        for k, v in node.items():
            if hasattr(v, "items") and k not in ("model_kwargs", "teacher_kwargs"):
                yield from paths(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    assert set(paths(cli.load_config("default"))) == set(checks.FIELDS)
    for name in ("default", "digits_lenet", "digits_resnet18", "shapes_unet"):
        checks.validate_config(cli.load_config(name))  # the shipped configs pass


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.batch_size=0", "config.batch_size=0: must be an integer >= 1"),
        ("--config.optim.learning_rate=-1", "config.optim.learning_rate=-1.0: must be a finite"),
        ("--config.num_epochs=0", "config.num_steps=0 and config.num_epochs=0"),
    ],
)
def test_cli_bad_setting_is_one_line_and_creates_nothing(tmp_path, capsys, override, message):
    workdir = tmp_path / "run"
    assert cli.main(["--config", "digits_lenet", "--workdir", str(workdir), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not workdir.exists()


def test_cli_bad_setting_in_a_fresh_process_prints_no_traceback(tmp_path):
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "flaxcnn.train", "--config", "digits_lenet"]
    cmd += ["--workdir", str(workdir), "--config.batch_size=-8"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr == "error: config.batch_size=-8: must be an integer >= 1\n"
    assert not workdir.exists()


def test_missing_train_dependency_is_named_with_the_install_command(
    tiny_config, tmp_path, capsys, monkeypatch
):
    """Without matplotlib the run used to train and then fail plotting its curves."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    want = "flaxcnn.train needs matplotlib (the [train] extra): pip install 'flaxcnn[train]'"
    workdir = tmp_path / "run"
    with pytest.raises(checks.MissingDependencyError) as e:
        loop.train(tiny_config(str(workdir)))
    assert str(e.value) == want
    assert cli.main(["--config", "digits_lenet", "--workdir", str(workdir)]) == 2
    assert capsys.readouterr().err == f"error: {want}\n"
    assert not workdir.exists()


def test_a_config_whose_import_fails_is_not_reported_as_missing(monkeypatch):
    """A shipped config that imports a missing package (ml_collections) used to read as
    ``no config 'default'``."""
    monkeypatch.delitem(sys.modules, "flaxcnn.train.configs.default")
    monkeypatch.setitem(sys.modules, "ml_collections", None)  # its import fails
    with pytest.raises(ModuleNotFoundError) as e:
        cli.load_config("default")
    assert e.value.name == "ml_collections"
    with pytest.raises(SystemExit, match="no config 'defualt'"):
        cli.load_config("defualt")


# --- Checkpoints that cannot be resumed ---


def _digests(directory):
    return {
        os.path.relpath(os.path.join(root, f), directory): hashlib.sha256(
            open(os.path.join(root, f), "rb").read()
        ).hexdigest()
        for root, _, files in os.walk(directory)
        for f in files
    }


@pytest.fixture
def saved_run(tiny_config, tmp_path):
    """A workdir holding one checkpoint (step 0) of the tiny run's fresh state and data
    iterator, as a resume finds it; no step is compiled."""
    cfg = tiny_config(str(tmp_path / "run"))
    s = loop.setup(cfg)
    it = iter(data.train_loader(s.train_source, s.info, size=16, global_batch_size=32, seed=0))
    ckpt = Checkpointer(tmp_path / "run" / "checkpoints", async_save=False)
    ckpt.save(loop._fresh_state(s), it, force=True)
    ckpt.close()
    return cfg, tmp_path / "run" / "checkpoints"


def _refused(cfg, ckpt_dir, message):
    before = _digests(ckpt_dir)
    with pytest.raises(CheckpointError, match=message) as e:
        loop.train(cfg, resume=True)
    assert "\n" not in str(e.value) and str(ckpt_dir / "0") in str(e.value)
    assert _digests(ckpt_dir) == before  # nothing rewritten, removed or added
    return str(e.value)


def test_resume_refuses_a_checkpoint_of_another_model_naming_the_difference(saved_run):
    cfg, ckpt_dir = saved_run
    cfg.model_kwargs.stage_sizes = (2,)  # one more basic block
    msg = _refused(cfg, ckpt_dir, "does not match this run: ")
    assert msg.split(": ", 1)[1].startswith("params/layer1_1/bn1/bias is not in the checkpoint")
    cfg.model_kwargs.stage_sizes = (1,)
    cfg.model_kwargs.block = "bottleneck"  # other shapes
    msg = _refused(cfg, ckpt_dir, "does not match this run: ")
    assert "params/fc/kernel has shape (64, 10) in the checkpoint, (256, 10) here" in msg
    assert "params/layer1_0/conv1/kernel has shape (3, 3, 64, 64) in the checkpoint, " in msg
    with pytest.raises(CheckpointError, match="does not match this model: params/fc/kernel"):
        loop.evaluate_checkpoint(cfg, str(ckpt_dir))  # the weights-only restore, likewise
    cfg.model_kwargs.block = "basic"
    cfg.ema_decay = 0.9  # a run with an EMA resuming one without
    assert _refused(cfg, ckpt_dir, "match").endswith(": ema_params is not in the checkpoint")


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
@pytest.mark.parametrize("target", ["state/_METADATA", "state/array_metadatas/process_0"])
def test_resume_refuses_a_damaged_checkpoint_and_leaves_it(saved_run, damage, target):
    cfg, ckpt_dir = saved_run
    path = ckpt_dir / "0" / target
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else bytes(b ^ 0x5A for b in raw))
    _refused(cfg, ckpt_dir, r"cannot be read \(corrupt or truncated\?\)")
