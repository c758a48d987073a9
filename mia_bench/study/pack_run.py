"""One run of a pack, set up as ``mia-bench fit`` sets it up, and driven without a Trainer.

:func:`open_packed_run` parses the run's fit arguments with mia-bench's LightningCLI,
seeds with ``seed_everything(seed + run_index)`` and instantiates the model, data module
and callbacks in the order ``mia-bench fit`` does (so the net's initial weights are the
ones the run gets alone), claims the run's lease, opens its MLflow run (tags, params,
``config.yaml``), and resumes from its last complete epoch. :class:`RunTrainer` is the
part of ``lightning.Trainer`` that mia-bench's callbacks read (epoch, loggers, data
module, ``save_checkpoint``), so the run's own ``SignalRecorder``, ``AttackMonitor``,
``PropertyMonitor`` and ``EpochCheckpoint`` record, attack and checkpoint it as they do
under ``mia-bench fit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers.utilities import _log_hyperparams
from mlflow.tracking import MlflowClient

from mia_bench.callbacks.run_summary import RunSummary
from mia_bench.callbacks.signal_recorder import layers_needed
from mia_bench.checks import check_layers
from mia_bench.classifier import Classifier
from mia_bench.data.membership import MembershipDataModule, Pool
from mia_bench.errors import UserError
from mia_bench.lightning_cli import MiaCLI, config_params, log_new_params, parse_only
from mia_bench.store.artifacts import local_artifact_dir
from mia_bench.store.checkpoints import (
    EpochCheckpoint,
    EpochCommit,
    checkpoint_epoch,
    discard_beyond,
    newest_checkpoint,
)
from mia_bench.store.leases import Lease
from mia_bench.store.remote import mirror_run
from mia_bench.store.runs import experiment_id, resolve_tracking_uri
from mia_bench.store.slots import claim_slot, open_run
from mia_bench.tracking import BufferedMLFlowLogger


class _RunCLI(MiaCLI):
    """Seeds and instantiates one run's classes as ``mia-bench fit`` does; no Trainer."""

    def instantiate_classes(self) -> None:
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")


def parse_run(fit_args: list[str]) -> _RunCLI:
    """The run of ``mia-bench fit FIT_ARGS``, seeded and instantiated, nothing opened."""
    return parse_only(fit_args, _RunCLI)


class PoolLoaders:
    """A run's data module, with the audit loader served from in-memory pool tensors.

    Everything but :meth:`audit_dataloader` is the wrapped module's; the audit batches
    hold the same examples in the same order as its DataLoader's, by slicing.
    """

    def __init__(self, dm: MembershipDataModule, x: torch.Tensor, y: torch.Tensor) -> None:
        self._dm, self._x, self._y = dm, x, y  # [N, ...], [N]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dm, name)

    def audit_dataloader(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        size, n = self._dm.eval_batch_size, len(self._y)
        index = torch.arange(n)
        return [
            (self._x[s : s + size], self._y[s : s + size], index[s : s + size])
            for s in range(0, n, size)
        ]


@dataclass
class RunTrainer:
    """What mia-bench's callbacks read of ``lightning.Trainer``, for one packed run.

    Attributes:
        module: the run's Classifier; its net holds the run's weights after each epoch.
        datamodule: the run's data (a :class:`PoolLoaders`).
        logger: the run's MLflow logger (metrics held back until the epoch is complete).
        callbacks: the run's callbacks in Lightning's order (checkpointing last).
        max_epochs: epochs to train.
        optimizer: the run's own torch.optim optimizer (for its state dict format).
        current_epoch: the epoch being completed.
        global_step: optimizer steps so far.
    """

    module: Classifier
    datamodule: Any
    logger: BufferedMLFlowLogger
    callbacks: list[Any]
    max_epochs: int
    optimizer: torch.optim.Optimizer
    current_epoch: int = 0
    global_step: int = 0
    epoch_steps: int = 0  # optimizer steps of the current epoch
    val_batches: int = 0  # batches of its test (validation) pass
    sanity_checking: bool = False
    should_stop: bool = False
    default_root_dir: str = "."
    callback_metrics: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loggers(self) -> list[BufferedMLFlowLogger]:
        return [self.logger]

    @property
    def lightning_module(self) -> Classifier:
        return self.module

    @property
    def enable_checkpointing(self) -> bool:
        return any(isinstance(c, EpochCheckpoint) for c in self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        """Call ``hook(trainer, module, *args)`` on every callback, in order."""
        for callback in self.callbacks:
            getattr(callback, hook)(self, self.module, *args)

    def checkpoint(self) -> dict[str, Any]:
        """The Lightning-format checkpoint of the run after ``current_epoch``."""
        states = {c.state_key: c.state_dict() for c in self.callbacks}
        ckpt = {
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            "pytorch-lightning_version": L.__version__,
            "state_dict": self.module.state_dict(),
            "callbacks": {k: v for k, v in states.items() if v},
            "optimizer_states": [self.optimizer.state_dict()],
            "lr_schedulers": [],
            "loops": lightning_loops(
                self.current_epoch, self.global_step, self.epoch_steps, self.val_batches
            ),
            "hparams_name": "kwargs",
            "hyper_parameters": dict(self.module.hparams),
            "datamodule_hparams_name": "kwargs",
            "datamodule_hyper_parameters": dict(self.datamodule.hparams),
            "mia_packed": True,
        }
        self.call("on_save_checkpoint", ckpt)
        return ckpt

    def save_checkpoint(self, path: str | Path) -> None:
        """Write :meth:`checkpoint` to ``path`` (``EpochCheckpoint`` makes it atomic)."""
        torch.save(self.checkpoint(), path)


def _progress(value: int, keys: str = "ready completed started processed") -> dict[str, int]:
    return dict.fromkeys(keys.split(), value)


def _counts(total: int, current: int, keys: str = "ready completed started processed") -> dict:
    return {"total": _progress(total, keys), "current": _progress(current, keys)}


def lightning_loops(epoch: int, global_step: int, epoch_steps: int, val_batches: int) -> dict:
    """The ``loops`` entry Lightning 2.6 writes in a checkpoint at the end of ``epoch``.

    With it, ``mia-bench fit --ckpt_path last`` resumes a run trained packed at the next
    epoch, as it resumes a run it trained itself (one optimizer step per batch, a test
    pass every epoch, no scheduler).

    >>> loops = lightning_loops(1, 30, 15, 1)["fit_loop"]
    >>> loops["epoch_progress"]["current"], loops["epoch_loop.state_dict"]
    ({'ready': 2, 'started': 2, 'processed': 2, 'completed': 1}, {'_batches_that_stepped': 30})
    """
    two = "ready completed"
    epochs = {k: epoch + 1 for k in ("ready", "started", "processed")} | {"completed": epoch}
    idle = {"state_dict": {}, "batch_progress": _counts(0, 0) | {"is_last_batch": False}}
    fit = {
        "state_dict": {},
        "epoch_loop.state_dict": {"_batches_that_stepped": global_step},
        "epoch_loop.batch_progress": _counts(global_step, epoch_steps) | {"is_last_batch": True},
        "epoch_loop.scheduler_progress": _counts(0, 0, two),
        "epoch_loop.automatic_optimization.state_dict": {},
        "epoch_loop.automatic_optimization.optim_progress": {
            "optimizer": {
                "step": _counts(global_step, epoch_steps, two),
                "zero_grad": _counts(global_step, epoch_steps, "ready completed started"),
            }
        },
        "epoch_loop.manual_optimization.state_dict": {},
        "epoch_loop.manual_optimization.optim_step_progress": _counts(0, 0, two),
        "epoch_loop.val_loop.state_dict": {},
        "epoch_loop.val_loop.batch_progress": _counts(val_batches, val_batches)
        | {"is_last_batch": True},
        "epoch_progress": {"total": dict(epochs), "current": dict(epochs)},
    }
    predict = {"state_dict": {}, "batch_progress": _counts(0, 0)}
    return {"fit_loop": fit, "validate_loop": idle, "test_loop": idle, "predict_loop": predict}


@dataclass
class OpenedRun:
    """A run of the pack, ready to train from ``start_epoch``."""

    run_index: int
    seed: int
    trainer: RunTrainer
    lease: Lease | None
    start_epoch: int
    resumed: dict[str, Any] | None  # the checkpoint resumed from


def open_packed_run(
    fit_args: list[str], group: str, run_index: int, resume: bool, pool: Pool | None
) -> OpenedRun:
    """Set up run ``run_index`` of ``group`` as ``mia-bench fit`` would (see the module).

    Args:
        fit_args: the recipe's fit arguments (no ``--group``, ``--data.run_index``).
        group: the group's name.
        run_index: the run.
        resume: continue the group's unfinished run of this index from its last
            complete epoch (``mia-bench fit --ckpt_path last``).
        pool: the group's pool when loaded already (every run shares it), else None.

    Raises:
        LeaseHeld, AlreadyTrained, UserError: as ``mia-bench fit`` raises them.
    """
    cli = parse_run([*fit_args, f"--group={group}", f"--data.run_index={run_index}"])
    init, dm, model = cli.config_init, cli.datamodule, cli.model
    if pool is not None:
        dm._pool = pool
    if init["signals"].layers is None:
        init["signals"].layers = layers_needed([init["attacks"], init["properties"]])
    check_layers(model.net, init["signals"].layers)
    settings = init["mlflow"]
    info = dm.membership_info() | {"seed": cli.run_seed, "command": "fit"}
    info["fingerprint"] = cli.config_fingerprint()
    cli._report_audit_cost(init)
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    exp_id = experiment_id(client, settings)
    lease = claim_slot(client, exp_id, group, run_index, info["fingerprint"], resume)
    try:
        run_id = open_run(settings, group, info, resume=resume, lease=False)
        logger = BufferedMLFlowLogger(
            experiment_name=settings.experiment_name,
            tracking_uri=resolve_tracking_uri(settings.tracking_uri),
            run_id=run_id,
            log_model=False,
        )
        logger.experiment.log_text(
            run_id, cli.parser.dump(cli.config, skip_none=False), "config.yaml"
        )
        log_new_params(logger.experiment, run_id, config_params(cli.config))
        checkpoints = Path(settings.checkpoint_dir) / run_id
        mirrors = mirror_run(logger._tracking_uri, run_id, checkpoints)
        trainer = _run_trainer(cli, logger, checkpoints)
        trainer.call("setup", "fit")  # the recorder saves the keep row
        start, resumed = _resume(trainer, checkpoints, mirrors) if resume else (0, None)
        _log_hyperparams(trainer)  # the module's and data's hparams, as Lightning logs them
        trainer.call("on_fit_start")
        trainer.call("on_train_start")
    except BaseException:
        lease.release()
        raise
    return OpenedRun(run_index, cli.run_seed, trainer, lease, start, resumed)


def _run_trainer(cli: _RunCLI, logger: BufferedMLFlowLogger, checkpoints: Path) -> RunTrainer:
    init, dm, model = cli.config_init, cli.datamodule, cli.model
    trainer_init = init["trainer"]
    keeper = (
        EpochCheckpoint(checkpoints, init["checkpoints"])
        if trainer_init.get("enable_checkpointing") is not False
        else EpochCommit()
    )
    callbacks = [init["signals"], init["attacks"], init["properties"], RunSummary(), keeper]
    if dm.train_transform() is not None or dm.eval_transform() is not None:
        raise UserError(
            f"{type(dm).__name__} transforms its examples; packing reads the pool as stored "
            "(tabular data): train this recipe unpacked"
        )
    dm.setup("fit")
    x = torch.as_tensor(dm.pool.inputs)  # [N, ...]
    data = PoolLoaders(dm, x, dm.audit_set.labels)
    optimizer = model.configure_optimizers()
    return RunTrainer(model, data, logger, callbacks, trainer_init["max_epochs"], optimizer)


def _resume(
    trainer: RunTrainer, checkpoints: Path, mirrors: tuple | None
) -> tuple[int, dict[str, Any] | None]:
    """Load the newest complete epoch's checkpoint; returns (first epoch to train, it)."""
    path = newest_checkpoint(checkpoints, mirrors)
    epoch = None if path is None else checkpoint_epoch(path)
    run = trainer.logger.experiment.get_run(trainer.logger.run_id)
    run_dir = local_artifact_dir(run.info.artifact_uri, run.info.run_id)
    discard_beyond(run_dir, checkpoints, epoch, mirrors)
    if path is None:
        return 0, None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    trainer.module.load_state_dict(ckpt["state_dict"])
    trainer.optimizer.load_state_dict(ckpt["optimizer_states"][0])
    for callback in trainer.callbacks:
        state = ckpt.get("callbacks", {}).get(callback.state_key)
        if state:
            callback.load_state_dict(state)
    trainer.call("on_load_checkpoint", ckpt)
    trainer.global_step = int(ckpt.get("global_step", 0))
    return int(ckpt["epoch"]) + 1, ckpt
