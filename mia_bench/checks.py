"""Checks of a fit before its first epoch: the group's design, the query views, the layers.

Each check raises a one-line :class:`~mia_bench.errors.UserError` that names the value
and the fix. :func:`check_fit_config` needs only the parsed config, so ``mia-bench fit``
runs it before building anything (and before an MLflow run is opened), and a fleet runs
it once before starting any worker; :func:`check_layers` needs the built net and runs
right after the model is instantiated.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from torch import nn

from mia_bench.augment import query_views, resolve_views
from mia_bench.data.splits import runs_in
from mia_bench.errors import UserError

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
        f"{', '.join(shallow)}{more} (print the net to see them all)"
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
