"""The store a run will write, projected from its config before anything trains.

``mia-bench fleet --dry-run`` prints it per run and for the fleet. The numbers are
upper bounds: only the signals' labels are saved compressed
(:func:`mia_bench.store.artifacts.write_npz`), the rest as it is.

Per recorded epoch a run writes its logits ``[N, A, C]`` (``--signals.logits_dtype``) and
labels, the sufficient statistics ``stats/epoch_XXX.npz`` (``float32[N, A]`` each of
:data:`mia_bench.statistics.RECORDED`: scaled logit, log p, log p at temperature 2) and
``float32[N, D]`` embeddings of each recorded layer. Checkpoints are ``--checkpoints.*``'s:
the newest with the optimizer's state (:func:`optimizer_state_factor` copies of the
weights), the others weights only.
The pool size comes from the data module's ``pool_size`` where the dataset fixes it, so
CIFAR needs no files here; a subset (``max_examples``) is loaded to be counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mia_bench.budget import AuditCost, recorded_epochs, run_audit_cost
from mia_bench.callbacks.signal_recorder import layers_needed
from mia_bench.hooks import capture_outputs, signal_net
from mia_bench.statistics import RECORDED
from mia_bench.store.runs import canonical_config

FLOAT32 = 4
NUM_STATS = len(RECORDED)  # the statistics stored per recorded epoch
STATE_FACTOR = {"Adam": 3, "AdamW": 3, "Adamax": 3, "NAdam": 3, "RAdam": 3, "Adagrad": 2}
UNKNOWN_STATE_FACTOR = 3  # an optimizer not listed: assume Adam's two moments


def optimizer_state_factor(class_path: str, init_args: Mapping[str, Any]) -> int:
    """Copies of the weights a full checkpoint holds: the weights plus optimizer state.

    >>> optimizer_state_factor("torch.optim.SGD", {"momentum": 0.9})
    2
    >>> optimizer_state_factor("SGD", {}), optimizer_state_factor("torch.optim.Adam", {})
    (1, 3)
    """
    name = class_path.rpartition(".")[2]
    if name == "SGD":
        return 2 if init_args.get("momentum") else 1
    if name == "RMSprop":
        return 3 if init_args.get("momentum") else 2
    return STATE_FACTOR.get(name, UNKNOWN_STATE_FACTOR)


@dataclass(frozen=True)
class Footprint:
    """Bytes one run stores, as upper bounds.

    Args:
        pool_size: N.
        num_views: A.
        num_classes: C.
        logits_bytes: bytes per logit (4: float32, 2: float16).
        layer_dims: recorded layer -> D.
        num_recorded: recorded epochs.
        num_weights: numbers in the model's state dict (parameters and buffers).
        state_factor: copies of the weights in a full checkpoint.
        full_checkpoints: checkpoints kept with optimizer state (the newest).
        weights_only_checkpoints: kept checkpoints stripped to the weights.

    >>> f = Footprint(60_000, 2, 10, 4, {}, 20, 11_183_582, 2, 1, 9)  # ResNet-18, CIFAR-10
    >>> round(f.signals_per_epoch / 1e6, 2), round(f.checkpoints / 1e6), round(f.total / 1e6)
    (6.72, 492, 627)
    """

    pool_size: int
    num_views: int
    num_classes: int
    logits_bytes: int
    layer_dims: Mapping[str, int]
    num_recorded: int
    num_weights: int
    state_factor: int
    full_checkpoints: int
    weights_only_checkpoints: int

    @property
    def logits_per_epoch(self) -> int:
        """``N x A x C x bytes`` plus the int64 labels."""
        n, a, c = self.pool_size, self.num_views, self.num_classes
        return n * a * c * self.logits_bytes + n * 8

    @property
    def stats_per_epoch(self) -> int:
        """``3 x N x A x 4``."""
        return NUM_STATS * self.pool_size * self.num_views * FLOAT32

    @property
    def signals_per_epoch(self) -> int:
        """Logits, labels and statistics of one recorded epoch."""
        return self.logits_per_epoch + self.stats_per_epoch

    @property
    def embeddings_per_epoch(self) -> int:
        """``N x D x 4`` summed over the recorded layers."""
        return sum(self.pool_size * d * FLOAT32 for d in self.layer_dims.values())

    @property
    def weights_only_checkpoint(self) -> int:
        """One checkpoint without optimizer state: ``weights x 4``."""
        return self.num_weights * FLOAT32

    @property
    def full_checkpoint(self) -> int:
        """One checkpoint with optimizer state."""
        return self.weights_only_checkpoint * self.state_factor

    @property
    def checkpoints(self) -> int:
        """Every kept checkpoint (``last.ckpt`` is a hard link to the newest: no bytes)."""
        full = self.full_checkpoints * self.full_checkpoint
        return full + self.weights_only_checkpoints * self.weights_only_checkpoint

    @property
    def total(self) -> int:
        """Everything a finished run keeps (plus its keep row)."""
        per_epoch = self.signals_per_epoch + self.embeddings_per_epoch
        return self.num_recorded * per_epoch + self.checkpoints + self.pool_size


def layer_dims(net: torch.nn.Module, input_shape: Sequence[int], layers: Sequence[str]) -> dict:
    """``layer -> D``, the width of each layer's recorded features, from one dummy batch."""
    if not layers:
        return {}
    was_training = net.training
    net.eval()
    try:
        for dtype in (torch.float32, torch.long):  # images and features; token ids
            x = torch.zeros(2, *input_shape, dtype=dtype)  # [2, *input_shape]
            try:
                with torch.no_grad(), capture_outputs(net, layers) as captured:
                    net(x)
                return {name: int(out[0].shape[1]) for name, out in captured.items()}
            except (RuntimeError, TypeError):
                continue
    finally:
        net.train(was_training)
    raise ValueError(f"could not run {type(net).__name__} on a dummy input of shape {input_shape}")


def project_run(config: Any, init: Any) -> tuple[Footprint, AuditCost]:
    """The footprint and audit cost of one run of a fit config.

    Args:
        config: the resolved fit config.
        init: its instantiated form (see :func:`mia_bench.lightning_cli.instantiate_fit`).
    """
    data, recorder, trainer = init.data, init.signals, config.trainer
    layers = recorder.layers
    if layers is None:
        layers = layers_needed([init.attacks, init.properties])
    n, views = data.known_num_examples(), len(recorder.views or data.query_views)
    epochs = trainer.max_epochs
    kept = init.checkpoints.kept(epochs) if trainer.enable_checkpointing is not False else []
    stripped = len(kept) - 1 if init.checkpoints.weights_only and kept else 0
    optimizer = canonical_config(config).model.get("optimizer") or {}  # the Classifier's
    footprint = Footprint(
        pool_size=n,
        num_views=views,
        num_classes=data.num_classes,
        logits_bytes=np.dtype(recorder.logits_dtype).itemsize,
        layer_dims=layer_dims(signal_net(init.model), data.input_shape, layers),
        num_recorded=len(recorded_epochs(epochs, recorder.every_n_epochs)),
        num_weights=sum(t.numel() for t in init.model.state_dict().values()),
        state_factor=optimizer_state_factor(
            optimizer.get("class_path", "torch.optim.Adam"), optimizer.get("init_args") or {}
        ),
        full_checkpoints=len(kept) - stripped,
        weights_only_checkpoints=stripped,
    )
    cost = run_audit_cost(n, round(n * data.pkeep), views, recorder.every_n_epochs, epochs)
    return footprint, cost


def size(num_bytes: float) -> str:
    """Bytes in decimal units.

    >>> size(626_537_608), size(62_900), size(1.2e9)
    ('626.5 MB', '62.9 kB', '1.20 GB')
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return (
                f"{num_bytes / scale:.2f} {unit}"
                if unit == "GB"
                else f"{num_bytes / scale:.1f} {unit}"
            )
    return f"{int(num_bytes)} B"


def describe(f: Footprint, num_runs: int) -> list[str]:
    """The projection as lines: signals, embeddings, checkpoints, per run and for ``num_runs``."""
    n, a, c, r = f.pool_size, f.num_views, f.num_classes, f.num_recorded
    views = "view" if a == 1 else "views"
    layers = ", ".join(f"{name} {n:,} x {d} x 4 B" for name, d in f.layer_dims.items())
    embeddings = f"{r} recorded epochs x ({layers}) = {size(r * f.embeddings_per_epoch)}"
    return [
        "projected store size per run (upper bounds; only the labels are saved compressed):",
        f"  signals      {r} recorded epochs x {size(f.signals_per_epoch)} (logits {n:,} x {a} "
        f"{views} x {c} classes x {f.logits_bytes} B + stats {NUM_STATS} x {n:,} x {a} x 4 B) "
        f"= {size(r * f.signals_per_epoch)}",
        f"  embeddings   {embeddings if f.layer_dims else 'none (no attack or property uses one)'}",
        f"  checkpoints  {f.full_checkpoints} full x {size(f.full_checkpoint)} ({f.num_weights:,} "
        f"weights x 4 B x {f.state_factor}, with optimizer state) + {f.weights_only_checkpoints} "
        f"weights-only x {size(f.weights_only_checkpoint)} = {size(f.checkpoints)}",
        f"  total        {size(f.total)} per run; {size(num_runs * f.total)} for {num_runs} runs",
    ]
