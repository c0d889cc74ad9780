"""Checkpoints with orbax's ``CheckpointManager``: train state + grain iterator state.

Each step directory holds two items: ``state`` (params, batch_stats, optimizer state,
step, EMA, the dynamic loss scale and its growth count; ``StandardSave``) and ``data``
(every process's grain iterator position), so a resumed run continues with exactly the
next batch. Saves are asynchronous and atomic (orbax writes to a temporary directory and
renames it), the last ``keep`` checkpoints are kept plus the best one by ``best_metric``
(eval top-1; mean IoU for segmentation), and a preemption signal (when the JAX distributed
runtime reports one) triggers a save at the next step.

Restoring takes the shardings of the state it restores into, not those that were saved:
a checkpoint written on 8 devices restores on 1 and vice versa.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from .steps import LossScale, TrainState

__all__ = ["CheckpointError", "Checkpointer"]


class CheckpointError(RuntimeError):
    """A checkpoint that should be there is not (``--resume`` into an empty directory), cannot
    be read (corrupt or truncated files), or was written for another model or setting (its
    arrays' names, shapes or dtypes differ from the state restoring it)."""


def _key_name(key: Any) -> str:
    for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``path -> (shape, dtype)`` of every array leaf; a path joins the keys with ``/``
    whatever the container (a dict, a sequence, an optax named tuple), so that a state and
    orbax's metadata of its saved copy (plain dicts and lists) name their leaves alike."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(_key_name(k) for k in path): (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
        for path, leaf in leaves
    }


def _differences(saved: Any, like: Any, *, limit: int = 3) -> str | None:
    """What differs between the arrays a checkpoint holds (its metadata) and those of the
    state restoring it, in words, or ``None``. A whole top-level entry missing on one side
    (``ema_params``, ``loss_scale``) is named once, not leaf by leaf."""
    have, want = _leaf_specs(saved), _leaf_specs(like)
    tops_have = {k.split("/")[0] for k in have}
    tops_want = {k.split("/")[0] for k in want}
    out = [f"{t} is not in the checkpoint" for t in sorted(tops_want - tops_have)]
    out += [f"the checkpoint has {t}, this run has not" for t in sorted(tops_have - tops_want)]

    def order(k):  # the parameters first: their names are the model's
        return (not k.startswith("params/"), k)

    for k in sorted(have.keys() & want.keys(), key=order):
        (s_shape, s_dtype), (w_shape, w_dtype) = have[k], want[k]
        if s_shape != w_shape:
            out.append(f"{k} has shape {s_shape} in the checkpoint, {w_shape} here")
        elif s_dtype != w_dtype:
            out.append(f"{k} is {s_dtype} in the checkpoint, {w_dtype} here")
    common = tops_have & tops_want
    for k in sorted(want.keys() - have.keys(), key=order):
        if k.split("/")[0] in common:
            out.append(f"{k} is not in the checkpoint")
    for k in sorted(have.keys() - want.keys(), key=order):
        if k.split("/")[0] in common:
            out.append(f"the checkpoint has {k}, this run has not")
    if not out:
        return None
    more = f" (and {len(out) - limit} more)" if len(out) > limit else ""
    return "; ".join(out[:limit]) + more


def _unreadable(path: str, e: Exception) -> CheckpointError:
    reason = (str(e).strip().splitlines() or [""])[0][:300]
    return CheckpointError(
        f"checkpoint {path} cannot be read (corrupt or truncated?): {type(e).__name__}: {reason}"
    )


def _as_tree(state: TrainState) -> dict[str, Any]:
    tree = {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }
    if state.ema_params is not None:
        tree["ema_params"] = state.ema_params
    if state.loss_scale is not None:
        tree["loss_scale"] = {
            "scale": state.loss_scale.scale,
            "good_steps": state.loss_scale.good_steps,
        }
    return tree


def _from_tree(tree: dict[str, Any]) -> TrainState:
    ls = tree.get("loss_scale")
    return TrainState(
        step=tree["step"],
        params=tree["params"],
        batch_stats=tree["batch_stats"],
        opt_state=tree["opt_state"],
        ema_params=tree.get("ema_params"),
        loss_scale=None if ls is None else LossScale(ls["scale"], ls["good_steps"]),
    )


class Checkpointer:
    """Save and restore ``(TrainState, grain iterator)`` pairs under ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 2,
        keep_best: bool = True,
        best_metric: str = "top1",
        async_save: bool = True,
    ):
        self.directory = os.path.abspath(os.fspath(directory))
        policies: list[cm.PreservationPolicy] = [cm.LatestN(keep)]
        if keep_best:
            policies.append(
                cm.BestN(
                    get_metric_fn=lambda m: m[best_metric],
                    reverse=False,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=cm.AnyPreservationPolicy(policies),
                enable_async_checkpointing=async_save,
                create=True,
            ),
            item_names=("state", "data"),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self,
        state: TrainState,
        data_iter: Any,
        *,
        metrics: dict[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        step = int(jax.device_get(state.step.addressable_data(0)))
        args = {"state": ocp.args.StandardSave(_as_tree(state))}
        if data_iter is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iter)
        return self.manager.save(
            step, args=ocp.args.Composite(**args), metrics=metrics, force=force
        )

    def restore(
        self, like: TrainState, data_iter: Any = None, *, step: int | None = None
    ) -> TrainState:
        """Restore into the shapes, dtypes and shardings of ``like``; ``data_iter`` (if given)
        is moved to the saved position in place."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(
                f"no checkpoint to resume from in {self.directory}; drop --resume to start afresh"
            )
        tree = _as_tree(like)
        self._check_matches(step, tree)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
        args = {"state": ocp.args.StandardRestore(abstract)}
        if data_iter is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # orbax, tensorstore and json raise many types on bad bytes
            raise _unreadable(os.path.join(self.directory, str(step)), e) from None
        return _from_tree(out["state"])

    def _saved_metadata(self, step: int) -> Any:
        """The tree of ``(shape, dtype)`` metadata of the state saved at ``step``."""
        path = os.path.join(self.directory, str(step), "state")
        try:
            with ocp.PyTreeCheckpointer() as reader:
                saved = reader.metadata(path).item_metadata
        except Exception as e:  # a missing, truncated or corrupt metadata file
            raise _unreadable(path, e) from None
        # orbax reads some damaged files (the tree metadata, the array index) as an empty tree
        if saved is None or not jax.tree.leaves(saved):
            raise CheckpointError(
                f"checkpoint {path} cannot be read (corrupt or truncated?): its metadata "
                "lists no arrays"
            )
        return saved

    def _check_matches(self, step: int, like: Any) -> None:
        """Refuse, naming what differs, a checkpoint whose arrays are not those of ``like``
        (another model, ``model_kwargs``, input channels, optimizer, EMA or precision): orbax
        would fail with a message about the first array it could not fit, or not at all
        where only the dtype differs."""
        diff = _differences(self._saved_metadata(step), like)
        if diff:
            raise CheckpointError(
                f"checkpoint {os.path.join(self.directory, str(step))} does not match this "
                f"run: {diff}"
            )

    def restore_variables(
        self, like: Mapping[str, Any], *, step: int | None = None, prefer_ema: bool = True
    ) -> dict[str, Any]:
        """Only the model's variables, into the shapes, dtypes and shardings of ``like``
        (``{'params', 'batch_stats'}``): a distillation teacher, or ``evaluate``.

        With ``prefer_ema`` (the default) a checkpoint of a run that kept an EMA gives its
        EMA weights as ``params``: those are what that run evaluated and reported. Whatever
        else the checkpoint holds (optimizer state of any optimizer, loss scale) is not
        read, so it need not match the run restoring it (other optimizer, precision, EMA).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        # The "state" item is written by StandardCheckpointHandler in the PyTree format, which
        # PyTreeCheckpointer can read in part.
        path = os.path.join(self.directory, str(step), "state")
        saved = self._saved_metadata(step)
        src = "ema_params" if prefer_ema and "ema_params" in saved else "params"
        tree = {src: like["params"], "batch_stats": like.get("batch_stats", {})}
        diff = _differences({k: saved.get(k, {}) for k in tree}, tree)
        if diff:
            raise CheckpointError(f"checkpoint {path} does not match this model: {diff}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
        restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), tree)
        try:
            with ocp.PyTreeCheckpointer() as reader:
                out = reader.restore(
                    path,
                    args=ocp.args.PyTreeRestore(
                        item=abstract, restore_args=restore_args, partial_restore=True
                    ),
                )
        except Exception as e:  # orbax, tensorstore and json raise many types on bad bytes
            raise _unreadable(path, e) from None
        return {"params": out[src], "batch_stats": out["batch_stats"]}

    def reached_preemption(self, step: int) -> bool:
        return self.manager.reached_preemption(step)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
