"""The training job: exact resume, checkpoints across device counts, start-up errors,
the CLI, and a short run on digits reaching a stated accuracy."""

import json
import os

import chex
import jax
import pytest

from flaxcnn.train import cli, loop, steps
from flaxcnn.train.checkpoint import Checkpointer, CheckpointError


def _params(state):
    return steps.to_host((state.params, state.batch_stats, state.opt_state))


def test_resume_is_exact_and_checkpoints_move_between_device_counts(tiny_config, tmp_path, capsys):
    full = loop.train(tiny_config(str(tmp_path / "full")))
    assert full["step"] == 4
    part = tiny_config(str(tmp_path / "part"))
    killed = loop.train(part, stop_at=2)
    assert killed["step"] == 2 and "top1" not in killed
    resumed = loop.train(part, resume=True)
    assert resumed["step"] == 4
    # Bitwise: same params, BN statistics and optimizer state as the uninterrupted run.
    chex.assert_trees_all_equal(_params(resumed["state"]), _params(full["state"]))
    rows = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert os.path.isfile(full["plot"]) and 0 <= full["top1"] <= full["top5"] <= 1

    # `evaluate` on the checkpoint, as a function and as the CLI command.
    ev = loop.evaluate_checkpoint(part, str(tmp_path / "full" / "checkpoints"))
    assert ev["top1"] == full["top1"] and ev["top5"] == full["top5"]
    ckpts = str(tmp_path / "full" / "checkpoints")
    argv = ["evaluate", "--config", "digits_resnet18", "--checkpoint", ckpts]
    argv += [f"--config.{k}={part[k]}" for k in ("data_dir", "image_size", "eval_batch_size")]
    argv += ["--config.model_kwargs.stage_sizes=(1,)"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1"] == full["top1"]

    # The 8-device checkpoint restores on 1 device, and a 1-device save restores on 8.
    s1 = loop.setup(part, devices=jax.devices()[:1])
    like1 = loop._fresh_state(s1)
    on1 = Checkpointer(tmp_path / "full" / "checkpoints", async_save=False).restore(like1)
    assert on1.params["conv1"]["kernel"].sharding.mesh.devices.size == 1
    chex.assert_trees_all_equal(_params(on1), _params(full["state"]))
    ck = Checkpointer(tmp_path / "one", async_save=False)
    ck.save(on1, None)
    s8 = loop.setup(part)
    on8 = ck.restore(loop._fresh_state(s8))
    assert on8.params["conv1"]["kernel"].sharding.mesh.devices.size == 8
    chex.assert_trees_all_equal(_params(on8), _params(full["state"]))


def test_resume_without_checkpoint_is_an_error(tiny_config, tmp_path, capsys):
    cfg = tiny_config(str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        loop.train(cfg, resume=True)
    argv = ["--config", "digits_resnet18", "--resume", "--workdir", str(tmp_path / "e2"),
            f"--config.data_dir={cfg.data_dir}"]  # fmt: skip
    assert cli.main(argv) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        ({"model": "resnet19"}, "did you mean 'resnet18'"),
        ({"dataset": "svhn"}, "config.dataset"),
        ({"batch_size": 36}, "not divisible by the 8 devices"),
        ({"num_classes": 100}, "has 10 classes"),
        ({"model_kwargs": {"widht": 3}}, "accepts"),
        ({"precision": "fp8"}, "precision"),
        ({"precision": "float16", "loss_scale": {"initial": 0.5, "period": 10}}, "loss_scale"),
    ],
)
def test_bad_config_fails_at_start_with_a_hint(tiny_config, tmp_path, override, message):
    cfg = tiny_config(str(tmp_path))
    cfg.update(override)
    with pytest.raises(loop.ConfigError, match=message):
        loop.setup(cfg)


def test_tensorboard_without_tensorboardx_fails_at_start(tiny_config, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboardX" else real(name, *a),
    )
    with pytest.raises(loop.ConfigError, match="pip install tensorboardX"):
        loop.setup(tiny_config(str(tmp_path), tensorboard=True))


def test_cli_overrides_are_typed():
    cfg = cli.load_config(
        "digits_lenet",
        [
            "--config.optim.learning_rate=0.2",
            "--config.num_epochs=3",
            "--config.augment.hflip=true",
        ],
    )
    assert cfg.optim.learning_rate == 0.2 and cfg.num_epochs == 3 and cfg.augment.hflip is True
    assert cfg.model == "lenet5"
    with pytest.raises(SystemExit, match="unknown config field"):
        cli.load_config("digits_lenet", ["--config.optim.lr=1"])
    with pytest.raises(SystemExit, match="expected int"):
        cli.load_config("digits_lenet", ["--config.num_epochs=many"])


def test_short_run_reaches_stated_accuracy(tiny_config, tmp_path):
    """Stated: >= 90% test top-1 on digits after 100 steps of 64 (4.5 epochs) with the
    one-block ResNet (92.8% measured)."""
    cfg = tiny_config(str(tmp_path), num_steps=100, batch_size=64, checkpoint_every_steps=100)
    cfg.optim.learning_rate = 0.2
    out = loop.train(cfg)
    assert out["top1"] >= 0.90, out


def _scalars(workdir) -> list[tuple[str, int, float]]:
    """``(tag, step, value)`` of every scalar in the TensorBoard event files in ``workdir``,
    read by hand: TFRecord framing (length, masked CRC32C, payload, masked CRC32C), checked,
    then tensorboardX's ``Event`` protobuf."""
    import struct

    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    out = []
    for name in sorted(os.listdir(workdir)):
        if not name.startswith("events.out.tfevents."):
            continue
        data, pos = (workdir / name).read_bytes(), 0
        while pos < len(data):
            header = data[pos : pos + 8]
            (n,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header)
            payload = data[pos + 12 : pos + 12 + n]
            assert struct.unpack("<I", data[pos + 12 + n : pos + 16 + n])[0] == masked_crc32c(
                payload
            )
            pos += 16 + n
            event = Event.FromString(payload)
            out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return out


def test_float16_overflows_neither_stop_nor_block_checkpoints_and_tensorboard(
    tiny_config, tmp_path
):
    """LeNet-5 in float16 from a loss scale of 2**60: every step overflows and is skipped,
    yet with ``max_nonfinite=1`` the run goes on (overflows are not non-finite steps), the
    skipped steps 2 and 4 still evaluate and checkpoint, and the loss scale is resumed from
    the checkpoint (4 halvings in all, not 2 after a restart at 2**60). With
    ``tensorboard=True`` the JSON lines' scalars are also in TensorBoard event files. The
    checkpoint then serves as a distillation teacher although it holds SGD momentum and a
    loss scale (restoring the whole state into the teacher's used to fail on those)."""
    cfg = tiny_config(
        str(tmp_path),
        model="lenet5",
        model_kwargs={},
        image_size=32,
        precision="float16",
        max_nonfinite=1,
        tensorboard=True,
        **{"loss_scale.initial": 2.0**60},
    )
    assert loop.train(cfg, stop_at=2)["step"] == 2
    out = loop.train(cfg, resume=True)
    assert out["step"] == 4
    assert float(steps.to_host(out["state"].loss_scale.scale)) == 2.0**56
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss_scale"], r["overflow_steps"]) for r in rows] == [
        (2, 2.0**59, 2),
        (4, 2.0**57, 2),
    ]
    assert not any("train_loss" in r for r in rows)  # no means over skipped steps only
    scalars = _scalars(tmp_path)
    assert {t for t, _, _ in scalars} == set(rows[0]) - {"step"}
    assert sorted((s, v) for t, s, v in scalars if t == "loss_scale") == [
        (2, 2.0**59),
        (4, 2.0**57),
    ]
    assert [v for t, s, v in scalars if t == "top1" and s == 4] == [pytest.approx(out["top1"])]

    student = tiny_config(str(tmp_path / "student"), image_size=32)
    student.distill.update(alpha=0.5, teacher="lenet5", checkpoint=str(tmp_path / "checkpoints"))
    _, variables = loop._teacher(loop.setup(student))
    got, want = steps.to_host((variables["params"], out["state"].params))
    chex.assert_trees_all_equal(got, want)

    # The float16 checkpoint evaluates under a float32 config (no loss scale to restore).
    as_fp32 = tiny_config(str(tmp_path / "eval"), model="lenet5", model_kwargs={}, image_size=32)
    ev = loop.evaluate_checkpoint(as_fp32, str(tmp_path / "checkpoints"))
    assert ev["top1"] == pytest.approx(out["top1"])


def test_restore_variables_prefers_the_ema_weights(tmp_path):
    """A run that kept an EMA evaluated its EMA weights: a teacher or ``evaluate`` restoring
    its checkpoint gets those (``prefer_ema=False``: the raw weights), and none of the
    optimizer state is needed."""
    import flax.linen as nn
    import optax

    mesh = steps.make_mesh()
    model = nn.Dense(3)
    state = steps.create_train_state(
        model, optax.sgd(0.1, momentum=0.9), jax.random.key(0), (1, 4), mesh, ema=True
    )
    state = state.replace(ema_params=jax.tree.map(lambda a: a * 2 + 1, state.ema_params))
    ckpt = Checkpointer(tmp_path, async_save=False, keep_best=False)
    ckpt.save(state, None, force=True)
    ckpt.close()
    like = {"params": state.params, "batch_stats": {}}
    reader = Checkpointer(tmp_path, async_save=False, keep_best=False)
    ema = steps.to_host(reader.restore_variables(like)["params"])
    raw = steps.to_host(reader.restore_variables(like, prefer_ema=False)["params"])
    chex.assert_trees_all_equal(ema, steps.to_host(state.ema_params))
    chex.assert_trees_all_equal(raw, steps.to_host(state.params))


def test_diverging_run_stops_with_a_hint_after_max_nonfinite_steps(tiny_config, tmp_path):
    """A learning rate of 1e30 (after the warm-up's first steps) sends the loss to inf/NaN
    from step 2 on; those updates are skipped, and after ``max_nonfinite`` consecutive ones
    the run stops naming the last such step. Step 4 is not a checkpoint step, so its metrics
    are read one step late, after step 5 was dispatched: the error must still name step 4.
    The checkpoints of steps 2 and 4 stay for a resume with a smaller learning rate."""
    cfg = tiny_config(str(tmp_path), num_steps=6, max_nonfinite=3, **{"optim.learning_rate": 1e30})
    with pytest.raises(loop.NonFiniteError, match=r"3 consecutive steps .*\(last: step 4\)"):
        loop.train(cfg)
    assert Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 4
