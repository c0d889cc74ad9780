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
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from .steps import LossScale, TrainState

__all__ = ["CheckpointError", "Checkpointer"]


class CheckpointError(RuntimeError):
    """A checkpoint that should be there is not (e.g. ``--resume`` into an empty directory)."""


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
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _as_tree(like))
        args = {"state": ocp.args.StandardRestore(abstract)}
        if data_iter is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        out = self.manager.restore(step, args=ocp.args.Composite(**args))
        return _from_tree(out["state"])

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
        with ocp.PyTreeCheckpointer() as reader:
            saved = reader.metadata(path).item_metadata
            src = "ema_params" if prefer_ema and "ema_params" in saved else "params"
            tree = {src: like["params"], "batch_stats": like.get("batch_stats", {})}
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
            restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), tree)
            out = reader.restore(
                path,
                args=ocp.args.PyTreeRestore(
                    item=abstract, restore_args=restore_args, partial_restore=True
                ),
            )
        return {"params": out[src], "batch_stats": out["batch_stats"]}

    def reached_preemption(self, step: int) -> bool:
        return self.manager.reached_preemption(step)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
