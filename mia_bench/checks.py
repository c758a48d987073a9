"""Checks of a fit before its first epoch: the group's design, the query views, the layers,
and what the callbacks need of a trainer's data and model.

Each check raises a one-line :class:`~mia_bench.errors.UserError` that names the value
and the fix. :func:`check_fit_config` needs only the parsed config, so ``mia-bench fit``
runs it before building anything (and before an MLflow run is opened), and a fleet runs
it once before starting any worker; :func:`check_layers` needs the built net and runs
right after the model is instantiated. :func:`check_membership_data` (the contract
:data:`DATA_CONTRACT` of ``trainer.datamodule``) and :func:`check_recording` (that and a
forward of the model on the audit loader's first examples) run in the callbacks'
``setup``, so a plain ``lightning.Trainer`` with data or a model that lacks something
fails before its first epoch, saying what is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mia_bench.augment import query_views, resolve_views
from mia_bench.data.splits import runs_in
from mia_bench.errors import UserError
from mia_bench.hooks import signal_net

SHOWN_LAYERS = 8  # layer names listed in an error


def check_design(num_runs: int, pkeep: float, run_index: int) -> None:
    """The group's design: ``num_runs * pkeep`` whole, ``run_index`` in ``[0, num_runs)``.

    >>> check_design(4, 0.5, 3)
    >>> check_design(2, 0.5, -1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mia_bench.errors.UserError: --data.run_index=-1 is outside 0..1, ...
    """
    try:
        runs_in(num_runs, pkeep)
    except ValueError as err:
        raise UserError(f"--data.num_runs={num_runs}, --data.pkeep={pkeep}: {err}") from None
    if not 0 <= run_index < num_runs:
        raise UserError(
            f"--data.run_index={run_index} is outside 0..{num_runs - 1}, the run indices "
            f"of a group of --data.num_runs={num_runs}: pick one of them or raise num_runs"
        )


def check_views(views: str | Sequence[str] | None, data: str, input_shape: Sequence[int]) -> None:
    """Query views that exist, start with ``plain``, and suit the data's inputs.

    Every view but ``plain`` flips or shifts an image, so it needs ``(C, H, W)`` inputs.

    Args:
        views: ``--signals.views`` (None: the data's own views).
        data: the data module's name, for the message.
        input_shape: the shape of one input of that data.

    >>> check_views(["plain", "mirror"], "CIFAR10", (3, 32, 32))
    >>> check_views("plain,mirror", "Location", (446,))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mia_bench.errors.UserError: --signals.views: the image views mirror need inputs (C, H, W), ...
    """
    if views is None:
        return
    try:
        query_views(views)
    except ValueError as err:
        raise UserError(f"--signals.views: {err}") from None
    image_only = [v for v in resolve_views(views) if v != "plain"]
    if image_only and len(input_shape) not in (0, 3):
        shown = ", ".join(image_only[:3]) + (", ..." if len(image_only) > 3 else "")
        raise UserError(
            f"--signals.views: the image views {shown} need inputs (C, H, W), but {data} "
            f"has inputs of shape {tuple(input_shape)}: use --signals.views=[plain] for it"
        )


def check_layers(net: nn.Module, layers: Sequence[str]) -> None:
    """Layer names that are module paths of ``net``; the error lists a few valid ones.

    >>> check_layers(nn.Sequential(nn.Linear(2, 2)), ["0"])
    >>> check_layers(nn.Sequential(nn.Linear(2, 2)), ["fc9"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mia_bench.errors.UserError: --signals.layers: Sequential has no layer 'fc9'; ...
    """
    names = [name for name, _ in net.named_modules() if name]
    unknown = [layer for layer in layers if layer not in names]
    if not unknown:
        return
    shallow = sorted(names, key=lambda n: n.count("."))[:SHOWN_LAYERS]  # stable: net order
    more = f" and {len(names) - len(shallow)} more" if len(names) > len(shallow) else ""
    raise UserError(
        f"--signals.layers: {type(net).__name__} has no layer "
        f"{', '.join(map(repr, unknown))}; its layers are module paths such as "
        f"{', '.join(shallow)}{more} (print the net to see them all); a module of your "
        "own names its penultimate layer `embedding` for the embedding attacks"
    )


def _data_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def check_fit_config(config: Any) -> None:
    """Everything a parsed fit config can be checked for without building it.

    Args:
        config: the resolved config of ``mia-bench fit`` (a jsonargparse namespace, as
            :func:`mia_bench.lightning_cli.parse_fit_config` returns it).

    Raises:
        UserError: a design whose ``num_runs * pkeep`` is not whole, a ``run_index``
            outside the group, or query views unknown or unfit for the data.
    """
    data = config.data.init_args
    check_design(data.num_runs, data.pkeep, data.run_index)
    data_class = _data_class(config.data.class_path)
    input_shape = getattr(data_class, "input_shape", ())
    check_views(config.signals.views, data_class.__name__, input_shape)


DATA_CONTRACT: dict[str, str] = {
    "keep": "keep (bool[N]: this run's row of the keep matrix, True = member)",
    "audit_dataloader": "audit_dataloader() (the whole pool once, in index order, as "
    "batches (x, y, index))",
    "query_views": "query_views (the views signals are recorded under, view 0 'plain')",
    "properties": "properties() ({name: int64[N]}: what property inference predicts)",
    "pool": "pool (with the pool's labels as pool.labels)",
}
"""What mia-bench's callbacks read of ``trainer.datamodule``: ``SignalRecorder`` keep,
audit_dataloader and query_views (unless given views), ``AttackMonitor`` keep,
``PropertyMonitor`` (with properties to infer) keep, properties and pool. Every
:class:`~mia_bench.data.MembershipDataModule` has them all."""

METHODS = ("audit_dataloader", "properties")
HOW_TO_GET = (
    "wrap your dataset in mia_bench.data.DatasetMembership(dataset, num_runs=..., "
    "run_index=...), or subclass mia_bench.data.MembershipDataModule and implement "
    "load_pool() (see examples/own_module)"
)


def _offered(datamodule: Any, name: str) -> bool:
    try:
        value = getattr(datamodule, name)
    except AttributeError:
        return False
    return callable(value) if name in METHODS else value is not None


def check_membership_data(datamodule: Any, needs: Sequence[str], user: str) -> None:
    """``trainer.datamodule`` offers what ``user`` reads of it (names of :data:`DATA_CONTRACT`).

    Raises:
        UserError: there is no datamodule, it lacks some of ``needs`` (each named with
            what it is), or its keep row is not ``bool[N]``.

    >>> check_membership_data(object(), ["keep"], "AttackMonitor")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mia_bench.errors.UserError: AttackMonitor: object lacks keep (bool[N]: ...
    """
    if datamodule is None:
        raise UserError(
            f"{user} reads the run's membership design from trainer.datamodule, but the "
            f"trainer has none: pass trainer.fit(model, datamodule=...); {HOW_TO_GET}"
        )
    missing = [name for name in needs if not _offered(datamodule, name)]
    if missing:
        lacks = "; ".join(DATA_CONTRACT[name] for name in missing)
        raise UserError(f"{user}: {type(datamodule).__name__} lacks {lacks}: {HOW_TO_GET}")
    keep = np.asarray(datamodule.keep) if "keep" in needs else np.zeros(1, bool)
    if keep.dtype != bool or keep.ndim != 1:
        raise UserError(
            f"{user}: {type(datamodule).__name__}.keep must be bool[N] (True = member), "
            f"got {keep.dtype}{list(keep.shape)}: {HOW_TO_GET}"
        )


def first_audit_batch(datamodule: Any, user: str) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """The audit loader's first batch, checked to be ``(x, y, index)`` from pool index 0.

    Raises:
        UserError: the loader is empty, its batches are not triples ``x`` (a tensor),
            ``y``, ``index`` of equal lengths, or the first index is not 0 (the pool
            must come in index order).
    """
    batch = next(iter(datamodule.audit_dataloader()), None)
    where = f"{user}: {type(datamodule).__name__}.audit_dataloader()"
    triple = isinstance(batch, tuple | list) and len(batch) == 3
    if not (triple and isinstance(batch[0], torch.Tensor) and len(batch[0]) == len(batch[2])):
        got = "nothing" if batch is None else type(batch).__name__
        if isinstance(batch, tuple | list):
            got += f" of {', '.join(type(item).__name__ for item in batch)}"
        raise UserError(
            f"{where} must yield batches (x, y, index), x a tensor, of the whole pool in "
            f"index order; its first batch is {got}: {HOW_TO_GET}"
        )
    index = torch.as_tensor(batch[2])
    if int(index.flatten()[0]) != 0:
        raise UserError(
            f"{where} starts at pool index {int(index.flatten()[0])}; it must yield every "
            f"index once, in order, from 0 (no shuffling): {HOW_TO_GET}"
        )
    return batch[0], batch[1], index


def check_logits(module: nn.Module, x: torch.Tensor) -> None:
    """A forward of ``x`` through :func:`~mia_bench.hooks.signal_net` gives logits ``[B, C]``.

    Run in eval mode without gradients (batch-norm statistics do not move).

    Raises:
        UserError: the module has no parameters, or its forward returns anything else.
    """
    net = signal_net(module)
    weight = next(net.parameters(), None)
    if weight is None:
        raise UserError(f"{type(net).__name__} has no parameters: there is no model to record")
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            out = net(x.to(weight.device))
    finally:
        net.train(was_training)
    if not (isinstance(out, torch.Tensor) and out.ndim == 2 and len(out) == len(x)):
        got = f"{type(out).__name__}{list(out.shape) if isinstance(out, torch.Tensor) else ''}"
        raise UserError(
            f"{type(net).__name__}.forward must return logits [B, C] of a batch [B, ...], "
            f"as signals are computed through it; on {len(x)} pool examples it returned {got}"
        )


def check_recording(
    datamodule: Any, module: nn.Module, views: Sequence[str] | None, layers: Sequence[str]
) -> None:
    """What the SignalRecorder needs of a trainer's data and model, before the first epoch.

    The data module (``trainer.datamodule``) offers the keep row, the audit loader (its
    first batch starts the pool at index 0) and, without ``views``, its query views; the
    views suit its inputs; the model has the named layers and returns logits ``[B, C]``
    on the first two examples.

    Raises:
        UserError: naming what is missing or wrong, and how to get it.
    """
    needs = ("keep", "audit_dataloader") + (() if views else ("query_views",))
    check_membership_data(datamodule, needs, "SignalRecorder")
    x, _, _ = first_audit_batch(datamodule, "SignalRecorder")
    name = type(datamodule).__name__
    check_views(views or datamodule.query_views, name, tuple(x.shape[1:]))
    check_layers(signal_net(module), layers)
    check_logits(module, x[:2])
