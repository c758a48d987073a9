"""Records per-example signals of the whole pool, epoch by epoch."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from tqdm.auto import tqdm

from mia_bench.acceleration import to_memory_format
from mia_bench.augment import query_views, resolve_views
from mia_bench.callbacks.epoch_timer import synchronized_clock
from mia_bench.checks import check_recording
from mia_bench.console import tqdm_disable
from mia_bench.hooks import capture_outputs, signal_net
from mia_bench.store.artifacts import (
    EpochSignals,
    as_stored,
    check_logits_dtype,
    run_artifact_dir,
    save_keep,
    save_signals,
)
from mia_bench.store.remote import mirror_of
from mia_bench.tracking import log_epoch_metrics

# Examples per forward of the signal pass on a GPU, views of a batch together. On CPU the
# default is one view per forward: batching them measured 0.89x (2 views) and 0.94x (18) of
# its speed there (benchmarks/results/batched_views.json), larger batches being memory-bound.
FORWARD_BATCH_SIZE = 4096


@torch.inference_mode()
def compute_signals(
    net: torch.nn.Module,
    loader: Any,
    views: Sequence[str] = ("plain",),
    layers: Sequence[str] = ("embedding",),
    epoch: int = 0,
    progress: bool | None = False,
    memory_format: str = "contiguous",
    forward_batch_size: int | None = None,
) -> EpochSignals:
    """Logits of every pool example under each query view, and layer embeddings.

    The views of a loader batch go through the net together, concatenated along the
    batch axis, ``max(1, forward_batch_size // B)`` views per forward; embeddings are
    kept of view 0 (plain) only. In eval mode this equals one forward per view up to
    float rounding (``tests/callbacks/test_batched_views.py``).

    Args:
        net: the model (put in eval mode for the pass, then restored).
        loader: yields ``(x, y, index)`` over the whole pool in index order.
        views: query view names (see :mod:`mia_bench.augment`), view 0 = plain.
        layers: module paths whose outputs (on view 0) are kept as embeddings.
        epoch: stored with the signals.
        progress: show a progress bar (on stderr); None: only when stderr is a terminal.
        memory_format: the model's ``memory_format`` (``channels_last`` converts the
            4-D view batches).
        forward_batch_size: bound on the examples of one forward (at least one view of
            a loader batch goes in each); None: ``FORWARD_BATCH_SIZE`` on a GPU, one view
            per forward on CPU.

    Returns:
        ``EpochSignals`` with logits ``float32[N, A, C]`` and embeddings ``[N, D]``.
    """
    fns = query_views(views)
    device = next(net.parameters()).device
    if forward_batch_size is None:
        forward_batch_size = FORWARD_BATCH_SIZE if device.type == "cuda" else 1
    was_training = net.training
    net.eval()
    logits, labels, indices = [], [], []
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    try:
        for x, y, index in tqdm(
            loader, desc=f"signals epoch {epoch}", disable=tqdm_disable(progress), leave=False
        ):
            x = x.to(device)
            args = (fns, layers, captured, memory_format, forward_batch_size)
            logits.append(_views_logits(net, x, *args))  # [B, A, C]
            labels.append(y)
            indices.append(index)
    finally:
        net.train(was_training)
    index = torch.cat(indices).numpy()
    if not np.array_equal(index, np.arange(len(index))):
        raise ValueError("the audit loader must yield every pool index once, in order")
    embeddings = {n: torch.cat(v).float().numpy() for n, v in captured.items()}
    return EpochSignals(
        epoch=epoch,
        logits=torch.cat(logits).numpy(),  # [N, A, C]
        labels=torch.cat(labels).numpy().astype(np.int64),  # [N]
        embeddings=embeddings,
    )


def _views_logits(
    net: torch.nn.Module,
    x: torch.Tensor,
    fns: Sequence[Any],
    layers: Sequence[str],
    captured: dict[str, list[torch.Tensor]],
    memory_format: str,
    forward_batch_size: int,
) -> torch.Tensor:
    """float32 ``[B, A, C]`` logits of one batch ``x`` ``[B, ...]`` under the A views.

    Layer outputs of view 0 (rows ``:B`` of the first forward) go into ``captured``.
    """
    b = len(x)
    per_forward = max(1, forward_batch_size // max(1, b))
    out = []
    for start in range(0, len(fns), per_forward):
        chunk = fns[start : start + per_forward]
        xs = chunk[0](x) if len(chunk) == 1 else torch.cat([fn(x) for fn in chunk])  # [k*B, ...]
        xs = to_memory_format(xs, memory_format)
        if start == 0 and layers:
            with capture_outputs(net, layers) as batch_captured:
                z = net(xs)  # [k*B, C]
            for n, outputs in batch_captured.items():
                captured[n].extend(o[:b].cpu() for o in outputs)  # view 0 only
        else:
            z = net(xs)  # [k*B, C]
        out.append(z.float().reshape(len(chunk), b, -1))  # [k, B, C]
    return torch.cat(out).transpose(0, 1).cpu()  # [B, A, C]


def records_epoch(epoch: int, every_n_epochs: int, max_epochs: int | None) -> bool:
    """Whether the recorder records ``epoch``: every n-th epoch, and always the last.

    >>> [e for e in range(7) if records_epoch(e, 3, 7)]
    [2, 5, 6]
    """
    last = max_epochs is not None and max_epochs > 0 and epoch + 1 >= max_epochs
    return (epoch + 1) % every_n_epochs == 0 or last


EMBEDDING_LAYERS = ("embedding",)  # the penultimate layer of every net


def layers_needed(callbacks: Sequence[Any]) -> tuple[str, ...]:
    """The layers to record when none are named: ``embedding`` if a callback uses it.

    A callback uses embeddings when its ``needs_embeddings`` is true (an
    ``AttackMonitor`` with an embedding attack, a ``PropertyMonitor`` with properties).

    >>> class Uses: needs_embeddings = True
    >>> layers_needed([Uses()]), layers_needed([object()])
    (('embedding',), ())
    """
    uses = any(getattr(callback, "needs_embeddings", False) for callback in callbacks)
    return EMBEDDING_LAYERS if uses else ()


class SignalRecorder(Callback):
    """Saves logits of the whole pool (and embeddings) as run artifacts.

    At the end of every ``every_n_epochs``-th training epoch, and always after the
    last one, the model is queried on every pool example under each query view;
    ``signals/epoch_XXX.npz`` and ``embeddings/epoch_XXX/<layer>.npy`` are written
    atomically into the run's artifact folder, next to ``keep.npy``.

    Args:
        every_n_epochs: record every n-th epoch (and always the last).
        layers: module paths to capture with forward hooks; None (the default):
            ``embedding``, the penultimate layer of every net, if an attack or property
            monitor of the trainer uses embeddings (:func:`layers_needed`), else none.
            ResNet-18's embeddings of CIFAR-10's pool take 123 MB per recorded epoch.
        views: query views, a list or a preset such as ``lira18`` (checked at once);
            default the datamodule's ``query_views`` (plain, plus
            mirror for images).
        progress: show a progress bar while scoring the pool; None (default): only when
            stderr is a terminal and the trainer shows no progress bar of its own.
        logits_dtype: ``float32`` or ``float16``, how logits are stored (float16 halves
            them; the sufficient statistics are computed from float32 logits either way,
            so LiRA, RMIA and the calibrated attacks are unchanged; see the README for
            the effect on the attacks reading logits).
        forward_batch_size: at most this many examples per forward of the signal pass
            (the views of a batch go through together; memory and speed only, not the
            result); None: 4096 on a GPU, one view per forward on CPU.
        autocast: record under the trainer's precision context (bf16 autocast with
            ``--trainer.precision bf16-mixed``): faster on GPUs, but the logits are then
            rounded to bf16 before being stored as float32. Default False: the pass
            runs in float32 whatever the training precision.

    The time the pass takes is logged as ``time/signals_s`` at the recorded epoch.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        layers: Sequence[str] | None = None,
        views: str | Sequence[str] | None = None,
        progress: bool | None = None,
        logits_dtype: str = "float32",
        forward_batch_size: int | None = None,
        autocast: bool = False,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.layers = None if layers is None else tuple(layers)
        self.views = resolve_views(views) if views is not None else None
        if self.views is not None:
            query_views(self.views)  # unknown names or a first view other than plain: fail now
        self.progress = progress
        check_logits_dtype(logits_dtype)
        self.logits_dtype = logits_dtype
        if forward_batch_size is not None and forward_batch_size < 1:
            raise ValueError(f"forward_batch_size must be >= 1, got {forward_batch_size}")
        self.forward_batch_size = forward_batch_size
        self.autocast = autocast
        self.latest: EpochSignals | None = None
        self.recorded_epochs: list[int] = []
        self.run_dir: Path | None = None
        self._checked: tuple[int, int] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.layers is None:
            self.layers = layers_needed(trainer.callbacks)
        if stage != "fit":
            return
        self.check(trainer.datamodule, pl_module)  # before epoch 0
        save_keep(self.artifact_dir(trainer), trainer.datamodule.keep)

    def check(self, datamodule: Any, module: torch.nn.Module) -> None:
        """What recording needs of the data and model (:func:`check_recording`), once per
        pair: ``mia-bench fit`` checks before it opens its run, ``setup`` does not redo it."""
        if self._checked != (id(datamodule), id(module)):
            check_recording(datamodule, module, self.views, self.layers)
            self._checked = (id(datamodule), id(module))

    def artifact_dir(self, trainer: L.Trainer) -> Path:
        """The run's artifact folder, looked up in MLflow once."""
        if self.run_dir is None:
            self.run_dir = run_artifact_dir(trainer)
        return self.run_dir

    def is_due(self, trainer: L.Trainer) -> bool:
        """Whether this epoch's signals should be recorded."""
        due = records_epoch(trainer.current_epoch, self.every_n_epochs, trainer.max_epochs)
        return due or trainer.should_stop

    def _progress(self, trainer: L.Trainer) -> bool | None:
        """The pass's bar: by default none beside the trainer's (two live bars tangle)."""
        if self.progress is None and getattr(trainer, "progress_bar_callback", None) is not None:
            return False
        return self.progress

    def record_if_due(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> EpochSignals | None:
        """Record this epoch's signals once; returns them, or None when not due."""
        if trainer.sanity_checking or not self.is_due(trainer):
            return None
        return self.record(trainer, pl_module, trainer.current_epoch)

    def record_final(self, trainer: L.Trainer, pl_module: L.LightningModule) -> EpochSignals | None:
        """At the end of fit: the last epoch's signals, if nothing recorded them yet.

        A callback that stops training after this one has run (``EarlyStopping``
        checking at the end of the epoch) leaves the last epoch unrecorded; this
        records it. Returns None when the last epoch was recorded already.
        """
        last = trainer.current_epoch - 1  # the epoch counter has moved past the last epoch
        if last < 0 or last in self.recorded_epochs:
            return None
        return self.record(trainer, pl_module, last)

    def record(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> EpochSignals:
        """Compute and save the signals of the model as it is now, as ``epoch``."""
        if self.latest is not None and self.latest.epoch == epoch:
            return self.latest
        dm = trainer.datamodule
        views = self.views or dm.query_views
        net = signal_net(pl_module)  # layer names are paths inside it
        memory_format = getattr(pl_module, "memory_format", "contiguous")
        context = trainer.precision_plugin.forward_context() if self.autocast else nullcontext()
        start = synchronized_clock(pl_module.device)
        with context:
            signals = compute_signals(
                net,
                dm.audit_dataloader(),
                views,
                self.layers,
                epoch,
                self._progress(trainer),
                memory_format=memory_format,
                forward_batch_size=self.forward_batch_size,
            )
        seconds = synchronized_clock(pl_module.device) - start
        log_epoch_metrics(trainer, {"time/signals_s": seconds}, epoch=epoch)
        signals = as_stored(signals, self.logits_dtype)  # as an audit will read them
        save_signals(self.artifact_dir(trainer), signals)
        self.latest = signals
        self.recorded_epochs.append(epoch)
        return signals

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record_if_due(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record_final(trainer, pl_module)
        stored = mirror_of(self.artifact_dir(trainer))
        if stored is not None:  # remote artifacts: every file there before the run counts
            stored.push_missing()
        tag_recorded_epochs(trainer, self.recorded_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"recorded_epochs": list(self.recorded_epochs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.recorded_epochs = list(state_dict.get("recorded_epochs", []))


def tag_recorded_epochs(trainer: L.Trainer, epochs: Sequence[int]) -> None:
    """Tag the MLflow run with the epochs it recorded (``mia.recorded_epochs``).

    The group membership rule (:mod:`mia_bench.store.groups`) checks a finished run
    against this tag, so a run whose signals went missing is reported, not used.
    """
    from lightning.pytorch.loggers import MLFlowLogger

    value = ",".join(str(e) for e in sorted(set(epochs)))
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger) and logger.run_id:
            logger.experiment.set_tag(logger.run_id, "mia.recorded_epochs", value)
