"""Packed training: K runs of one recipe in one process, vectorized over the run axis.

For small nets (MLPs on tabular data) a run's step is a few tiny matrix products and
the per-step overhead dominates; stacking the K runs' parameters
(``torch.func.stack_module_state``) and running ``torch.func.functional_call`` under
``torch.vmap`` turns K small steps into one batched one. Each run keeps everything
that makes it the run it is alone:

* its init: the run is instantiated as ``mia-bench fit`` instantiates it, after
  ``seed_everything(seed + run_index)`` (:mod:`mia_bench.study.pack_run`);
* its batches: its own members in the order :func:`mia_bench.data.batches.epoch_order`
  gives for its seed and the epoch; a last partial batch is padded and masked, and a
  run with fewer batches than the pack's longest epoch does not step on the missing ones;
* its optimizer state and step count (:mod:`mia_bench.study.pack_optim`);
* its MLflow run, keep row, signals, statistics, attacks, metrics and checkpoints,
  written by its own callbacks, so ``mia-bench record`` and ``mia-bench audit`` read it
  as any run, and its config fingerprint is the unpacked recipe's.

A pack killed mid-way resumes each run from its own last complete epoch (its
``epoch_XXX.ckpt``); runs of the pack that are further along wait (do not step) until
the others catch up. :func:`supports_packing` names what packing cannot reproduce.
"""

from __future__ import annotations

import copy
import logging
import traceback

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from mia_bench.classifier import epoch_metrics
from mia_bench.data.batches import epoch_order, num_batches
from mia_bench.errors import UserError
from mia_bench.store.leases import EXIT_ALREADY_TRAINED, EXIT_LEASE_HELD, LeaseHeld
from mia_bench.store.runs import canonical_config
from mia_bench.store.slots import AlreadyTrained
from mia_bench.study.pack_optim import StackedOptimizer, unsupported_options
from mia_bench.study.pack_run import OpenedRun, open_packed_run
from mia_bench.tracking import log_epoch_metrics

PACKABLE_NETS = ("mia_bench.nets.MLP", "mia_bench.nets.mlp.MLP")
# trainer options that change the training step or the epoch, with their neutral values
NEUTRAL_TRAINER = {
    "accumulate_grad_batches": (1, None),
    "gradient_clip_val": (None, 0, 0.0),
    "limit_train_batches": (None, 1.0),
    "limit_val_batches": (None, 1.0),
    "overfit_batches": (0, 0.0, None),
    "max_steps": (-1, None),
    "min_epochs": (None,),
    "min_steps": (None,),
    "max_time": (None,),
    "fast_dev_run": (False, None, 0),
    "val_check_interval": (None, 1.0),
    "check_val_every_n_epoch": (1, None),
    "precision": (None, 32, "32", "32-true"),
    "callbacks": (None, []),
}
_log = logging.getLogger(__name__)


def supports_packing(config) -> str | None:
    """None when the recipe can be trained packed, else the one-line reason it cannot.

    Args:
        config: the resolved fit config (``parse_fit_config(...)[0]``, or its dict).

    >>> supports_packing({"model": {"net": {"class_path": "mia_bench.nets.CNN"}}})
    'net mia_bench.nets.CNN: packing is for MLPs (others train faster unpacked); train it unpacked'
    """
    config = config.clone().as_dict() if hasattr(config, "as_dict") else dict(config)
    config = canonical_config(config)
    model, data = config.get("model") or {}, config.get("data") or {}
    if model.get("class_path"):  # a LightningModule of the user's
        name = model["class_path"]
        return f"model {name}: packing is for mia-bench's Classifier; train it unpacked"
    net = model.get("net") or {}
    if net.get("class_path") not in PACKABLE_NETS:
        name = net.get("class_path")
        return f"net {name}: packing is for MLPs (others train faster unpacked); train it unpacked"
    if (net.get("init_args") or {}).get("dropout"):
        return "dropout: a packed run's dropout masks would differ from its own; train it unpacked"
    for key, what in (("defense", "defense"), ("scheduler", "learning-rate scheduler")):
        if model.get(key):
            name = model[key].get("class_path", model[key])
            return f"{what} {name} changes the training step; train it unpacked"
    optimizer = model.get("optimizer") or {"class_path": "torch.optim.Adam"}
    kind = str(optimizer.get("class_path", "")).rsplit(".", 1)[-1]
    why = unsupported_options(kind, optimizer.get("init_args") or {})
    if why:
        return f"{why} is not vectorized; train it unpacked"
    if (data.get("init_args") or {}).get("augment"):
        return "augmentations draw per-example randomness; train it unpacked"
    seed = config.get("seed_everything")
    if isinstance(seed, bool) or not isinstance(seed, int):
        return (
            f"seed_everything={seed!r}: packing needs an integer seed (runs use seed + run_index)"
        )
    trainer = config.get("trainer") or {}
    if not isinstance(trainer.get("max_epochs"), int) or trainer["max_epochs"] < 1:
        return (
            f"trainer.max_epochs={trainer.get('max_epochs')!r}: packing needs a fixed epoch count"
        )
    for key, neutral in NEUTRAL_TRAINER.items():
        if trainer.get(key) not in neutral:
            return f"trainer.{key}={trainer[key]!r} is not supported packed; train it unpacked"
    return None


class PackedNets:
    """K copies of one net architecture with stacked parameters ``{name: [K, ...]}``.

    Args:
        nets: the runs' nets (same architecture), their weights as initialized.
        device: where the stacks live.
    """

    def __init__(self, nets: list[nn.Module], device: torch.device) -> None:
        params, buffers = stack_module_state(nets)
        self.params = {n: p.detach().to(device).requires_grad_() for n, p in params.items()}
        self.buffers = {n: b.to(device) for n, b in buffers.items()}
        self.names = [n for n, _ in nets[0].named_parameters()]  # torch.optim's order
        self.base = copy.deepcopy(nets[0]).to("meta")

    def _one(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[K, B, C]`` of inputs ``[K, B, ...]`` (run k's net on ``x[k]``)."""
        return torch.vmap(self._one)(self.params, self.buffers, x)

    @torch.no_grad()
    def copy_to(self, k: int, net: nn.Module) -> None:
        """Put run ``k``'s weights into ``net``."""
        for name, p in net.named_parameters():
            p.copy_(self.params[name][k])

    @torch.no_grad()
    def copy_from(self, k: int, net: nn.Module) -> None:
        """Put ``net``'s weights into run ``k``'s slice."""
        for name, p in net.named_parameters():
            self.params[name][k].copy_(p)


def _optimizer(runs: list[OpenedRun], nets: PackedNets) -> StackedOptimizer:
    first = runs[0].trainer.optimizer
    defaults = {k: v for k, v in first.param_groups[0].items() if k != "params"}
    opt = StackedOptimizer(type(first).__name__, nets.params, defaults)
    for k, run in enumerate(runs):
        optimizer, params = run.trainer.optimizer, list(run.trainer.module.parameters())
        opt.load_run_state(
            k, nets.names, {i: optimizer.state.get(p, {}) for i, p in enumerate(params)}
        )
    return opt


class Pack:
    """The training loop of a pack of opened runs (see the module docstring).

    Args:
        runs: the opened runs, each at its own ``start_epoch``.
        device: where to train.
    """

    def __init__(self, runs: list[OpenedRun], device: torch.device) -> None:
        self.runs, self.device = runs, device
        for run in runs:
            run.trainer.module.to(device)
        self.nets = PackedNets([r.trainer.module.net for r in runs], device)
        self.opt = _optimizer(runs, self.nets)
        dm = runs[0].trainer.datamodule
        self.x = torch.as_tensor(dm.pool.inputs).to(device)  # [N, ...]
        self.y = torch.as_tensor(np.asarray(dm.pool.labels), dtype=torch.long).to(device)  # [N]
        self.batch_size = dm.batch_size
        self.members = [torch.from_numpy(np.flatnonzero(r.trainer.datamodule.keep)) for r in runs]
        self.smoothing = runs[0].trainer.module.label_smoothing
        self.failed: dict[int, str] = {}  # position in the pack -> why

    def live(self, epoch: int) -> list[int]:
        """Positions of the runs that train ``epoch``."""
        return [
            k for k, r in enumerate(self.runs) if k not in self.failed and r.start_epoch <= epoch
        ]

    def batches(self, epoch: int, live: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool indices ``int64[K, S, B]`` and mask ``bool[K, S, B]`` of the epoch's S steps."""
        orders = {k: epoch_order(self.members[k], self.runs[k].seed, epoch) for k in live}
        longest = max((len(o) for o in orders.values()), default=0)
        steps = num_batches(longest, self.batch_size)
        index = torch.zeros(len(self.runs), steps * self.batch_size, dtype=torch.long)
        mask = torch.zeros_like(index, dtype=torch.bool)
        for k, order in orders.items():
            index[k, : len(order)], mask[k, : len(order)] = order, True
        shape = (len(self.runs), steps, self.batch_size)
        return index.view(shape).to(self.device), mask.view(shape).to(self.device)

    def train_epoch(self, epoch: int, live: list[int]) -> dict[str, torch.Tensor]:
        """One epoch of every live run; returns per-run sums ``[K]``: loss, correct, count."""
        index, mask = self.batches(epoch, live)
        k = len(self.runs)
        sums = {
            key: torch.zeros(k, dtype=torch.float64, device=self.device)
            for key in ("loss", "correct", "count")
        }
        for step in range(index.shape[1]):
            idx, m = index[:, step], mask[:, step]  # [K, B]
            logits = self.nets(self.x[idx])  # [K, B, C]
            flat, y = logits.flatten(0, 1), self.y[idx].flatten()
            ce = F.cross_entropy(flat, y, reduction="none").view(m.shape)  # [K, B]
            loss = ce
            if self.smoothing:
                loss = F.cross_entropy(flat, y, reduction="none", label_smoothing=self.smoothing)
                loss = loss.view(m.shape)
            count = m.sum(1)  # [K]
            total = ((loss * m).sum(1) / count.clamp(min=1)).sum()
            for p in self.nets.params.values():
                p.grad = None
            total.backward()
            self.opt.step(count > 0)
            with torch.no_grad():
                sums["loss"] += (ce * m).sum(1).double()
                sums["correct"] += ((logits.argmax(-1) == y.view(m.shape)) & m).sum(1).double()
                sums["count"] += count.double()
        return sums

    def run(self, max_epochs: int) -> None:
        """Train every run to ``max_epochs``, ending each epoch with its callbacks."""
        first = min((r.start_epoch for r in self.runs), default=max_epochs)
        for epoch in range(first, max_epochs):
            live = self.live(epoch)
            for k in live:
                self._guard(k, self._epoch_start, k, epoch)
            live = [k for k in live if k not in self.failed]
            sums = self.train_epoch(epoch, live)
            for k in live:
                self._guard(k, self._epoch_end, k, sums)

    def _guard(self, k: int, fn, *args) -> None:
        """Run ``fn(*args)`` for run ``k``; a failure fails that run only."""
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001 - one run's failure must not stop the pack
            self.failed[k] = f"{type(err).__name__}: {err}"
            _log.error("run %d failed:\n%s", self.runs[k].run_index, traceback.format_exc())
            finish_run(self.runs[k], ok=False)

    def _epoch_start(self, k: int, epoch: int) -> None:
        trainer = self.runs[k].trainer
        trainer.current_epoch = epoch
        trainer.call("on_train_epoch_start")

    def _epoch_end(self, k: int, sums: dict[str, torch.Tensor]) -> None:
        trainer = self.runs[k].trainer
        module = trainer.module
        self.nets.copy_to(k, module.net)
        params = list(module.parameters())
        for i, state in self.opt.run_state(k, self.nets.names).items():
            trainer.optimizer.state[params[i]] = state
        trainer.epoch_steps = num_batches(int(sums["count"][k]), self.batch_size)  # its steps
        trainer.global_step += trainer.epoch_steps
        dm = trainer.datamodule
        trainer.val_batches = num_batches(int((~dm.keep).sum()), dm.eval_batch_size)
        n = float(sums["count"][k])
        train = {"acc": float(sums["correct"][k]) / n, "loss": float(sums["loss"][k]) / n}
        # Lightning's order: callbacks, the module, then checkpointing
        for callback in trainer.callbacks[:-1]:
            callback.on_train_epoch_end(trainer, module)
        test = self.test_metrics(k, self._recorded(k, trainer.current_epoch))
        log_epoch_metrics(trainer, epoch_metrics(train, test))
        trainer.callbacks[-1].on_train_epoch_end(trainer, module)

    def _recorded(self, k: int, epoch: int) -> torch.Tensor | None:
        """Run ``k``'s plain-view pool logits ``float32[N, C]`` of ``epoch``, when its
        recorder recorded them in float32 (the test metrics then need no forward of their
        own)."""
        for callback in self.runs[k].trainer.callbacks:
            latest = getattr(callback, "latest", None)
            stored = getattr(latest, "logits", None)
            if latest is not None and latest.epoch == epoch and stored.dtype == np.float32:
                return torch.from_numpy(np.asarray(latest.logits[:, 0], dtype=np.float32))
        return None

    @torch.no_grad()
    def test_metrics(self, k: int, pool_logits: torch.Tensor | None = None) -> dict[str, float]:
        """``test/acc`` and ``test/loss`` of run ``k`` over its non-members, from its pool
        logits ``[N, C]`` when given (the same net in eval mode), else by a forward."""
        dm = self.runs[k].trainer.datamodule
        out = torch.from_numpy(np.flatnonzero(~dm.keep)).to(self.device)
        net = self.runs[k].trainer.module.net.eval()
        loss = correct = 0.0
        for s in range(0, len(out), dm.eval_batch_size):
            idx = out[s : s + dm.eval_batch_size]
            y = self.y[idx]
            logits = (
                net(self.x[idx]) if pool_logits is None else pool_logits[idx.cpu()].to(y.device)
            )
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(-1) == y).sum())
        net.train()
        return {"acc": correct / len(out), "loss": loss / len(out)}


def finish_run(run: OpenedRun, ok: bool) -> None:
    """End a run as ``mia-bench fit`` ends it: fit-end callbacks, MLflow status, lease."""
    try:
        if ok:
            run.trainer.call("on_train_end")
            run.trainer.call("on_fit_end")
            run.trainer.call("teardown", "fit")
        run.trainer.logger.finalize("success" if ok else "failed")
    finally:
        if run.lease is not None:
            run.lease.release()


def _device(config) -> torch.device:
    accelerator = str(config.trainer.accelerator or "auto")
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")


def fit_packed(
    fit_args: list[str],
    run_indices: list[int],
    group: str,
    resume: dict[int, bool] | None = None,
) -> dict[int, int]:
    """Train runs ``run_indices`` of ``group`` as one pack; the exit status of each.

    Each run is what ``mia-bench fit FIT_ARGS --group GROUP --data.run_index I
    [--ckpt_path last]`` would have made of it (see the module docstring).

    Args:
        fit_args: the recipe's fit arguments (``-c CONFIG``, overrides), without
            ``--group``, ``--data.run_index`` and ``--ckpt_path``.
        run_indices: the runs to train.
        group: the group's name.
        resume: ``{run_index: True}`` for runs to continue from their last complete
            epoch (a fleet's plan says which); others start fresh.

    Returns:
        ``{run_index: status}``: 0 trained, 75 another process holds its lease, 76 the
        group has it already, 1 it failed (logged; its MLflow run is marked FAILED and
        its complete epochs stay, so it can be resumed).

    Raises:
        UserError: the recipe cannot be packed (:func:`supports_packing` says why).
    """
    from mia_bench.lightning_cli import parse_fit_config

    config, _ = parse_fit_config([*fit_args, f"--group={group}"])
    reason = supports_packing(config)
    if reason is not None:
        raise UserError(f"cannot train group {group!r} packed: {reason}")
    status, runs, pool = {}, [], None
    for i in run_indices:
        try:
            run = open_packed_run(list(fit_args), group, i, bool((resume or {}).get(i)), pool)
        except LeaseHeld:
            status[i] = EXIT_LEASE_HELD
            continue
        except AlreadyTrained:
            status[i] = EXIT_ALREADY_TRAINED
            continue
        except Exception:  # noqa: BLE001 - the other runs still train
            _log.error("run %d could not be opened:\n%s", i, traceback.format_exc())
            status[i] = 1
            continue
        pool = run.trainer.datamodule.pool
        runs.append(run)
    if runs:
        _train(runs, config, status)
    return dict(sorted(status.items()))


def _train(runs: list[OpenedRun], config, status: dict[int, int]) -> None:
    pack = None
    try:
        pack = Pack(runs, _device(config))
        pack.run(runs[0].trainer.max_epochs)
    except Exception:  # noqa: BLE001 - the shared step failed: every unfinished run fails
        _log.error("the pack failed:\n%s", traceback.format_exc())
        failed = set(range(len(runs))) if pack is None else set(range(len(runs))) - set(pack.failed)
        for k in failed:
            status[runs[k].run_index] = 1
            finish_run(runs[k], ok=False)
        if pack is not None:
            pack.failed |= {k: "pack failed" for k in failed}
        return
    for k, run in enumerate(runs):
        if k in pack.failed:
            status[run.run_index] = 1
            continue
        try:
            finish_run(run, ok=True)
            status[run.run_index] = 0
        except Exception:  # noqa: BLE001
            _log.error("run %d failed at its end:\n%s", run.run_index, traceback.format_exc())
            status[run.run_index] = 1
