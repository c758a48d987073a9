"""The one LightningModule: an injected net trained with cross-entropy.

Per epoch it reports ``train/acc``, ``train/loss`` (over the run's members, as seen
while training), ``test/acc``, ``test/loss`` (over the run's OUT half of the pool),
and the generalization gaps of Rahmani et al. 2026 (eqs. 3-4): ``gap/acc = train/acc - test/acc``
and ``gap/loss = test/loss - train/loss``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from mia_bench.acceleration import (
    check_memory_format,
    compiled_forward,
    net_to_memory_format,
    to_memory_format,
)
from mia_bench.errors import UserError
from mia_bench.tracking import log_epoch_metrics

NetFactory = Callable[[Sequence[int], int], nn.Module]


class Defense:
    """A training recipe that changes how the Classifier learns (``model.defense`` in YAML).

    Subclasses (``mia_bench.defenses``) override what they change; the defaults train
    with plain cross-entropy. Hooks receive the Classifier as ``module``.
    ``supports_compile`` is False for a defense whose hooks would not fire in compiled
    code (DP-SGD's per-sample gradients).
    """

    supports_compile = True

    def check_installed(self) -> None:
        """Raise the one-line error of a missing optional library it needs (checked before
        a fit opens its run)."""

    def setup(self, module: Classifier) -> None:
        """Called once when fitting starts (before the optimizer is built)."""

    def training_loss(
        self, module: Classifier, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        """The loss to minimize for a batch (logits ``[B, C]``, labels and pool indices ``[B]``)."""
        return F.cross_entropy(logits, y, label_smoothing=module.label_smoothing)

    def configure_optimizer(
        self, module: Classifier, optimizer: torch.optim.Optimizer
    ) -> torch.optim.Optimizer:
        """Wrap or replace the optimizer (DP-SGD does)."""
        return optimizer

    def epoch_metrics(self, module: Classifier) -> dict[str, float]:
        """Extra per-epoch metrics, e.g. ``{"privacy/epsilon": ...}``."""
        return {}


def epoch_metrics(train: dict[str, float], test: dict[str, float]) -> dict[str, float]:
    """An epoch's ``train/*``, ``test/*`` and ``gap/*`` metrics (no test: train only).

    >>> epoch_metrics({"acc": 1.0, "loss": 0.1}, {"acc": 0.75, "loss": 0.6})["gap/acc"]
    0.25
    """
    metrics = {f"train/{k}": v for k, v in train.items()}
    if test:
        metrics |= {f"test/{k}": v for k, v in test.items()}
        metrics["gap/acc"] = train["acc"] - test["acc"]
        metrics["gap/loss"] = test["loss"] - train["loss"]
    return metrics


class _StageMetrics(nn.Module):
    """Running accuracy (micro: correct / seen) and mean loss (weighted by batch size) of
    one stage.

    Plain tensor sums on the batches' device: no per-step synchronisation, and a tenth
    of torchmetrics' per-update cost, which showed at the thousands of small steps of a
    tabular run.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self._sums: torch.Tensor | None = None  # [correct, seen, loss * seen]

    def update(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        if len(y) == 0:  # an empty batch: DP-SGD's Poisson sampling can draw one
            return
        with torch.no_grad():
            seen = torch.tensor(float(len(y)), device=logits.device)
            batch = torch.stack(
                [(logits.argmax(1) == y).sum().float(), seen, loss.detach().float() * seen]
            )
            self._sums = batch if self._sums is None else self._sums + batch

    def compute_and_reset(self) -> dict[str, float]:
        if self._sums is None:  # nothing seen: as torchmetrics, 0 accuracy and nan loss
            return {"acc": 0.0, "loss": float("nan")}
        correct, seen, loss = self._sums.double().tolist()
        self._sums = None
        return {"acc": correct / seen, "loss": loss / seen}


class Classifier(L.LightningModule):
    """Cross-entropy classifier around an injected net.

    Args:
        net: builds the ``nn.Module`` from ``(input_shape, num_classes)``; in YAML a
            ``class_path`` from ``mia_bench.nets`` with its options as ``init_args``.
        num_classes: linked from ``data.num_classes`` by the CLI.
        input_shape: linked from ``data.input_shape`` by the CLI.
        optimizer: optimizer factory (default Adam, lr 1e-3).
        scheduler: optional learning-rate scheduler factory, stepped every epoch.
        label_smoothing: cross-entropy label smoothing (0 = none).
        defense: a training recipe from ``mia_bench.defenses`` (None = plain training).
        memory_format: ``contiguous`` or ``channels_last``: how the net's 4-D weights and
            image batches ``[B, C, H, W]`` (train, test and signal recording) lie in
            memory; ``channels_last`` is the fast layout of GPU convolutions with
            ``--trainer.precision bf16-mixed``. Images only. Part of the recipe (the
            convolutions' rounding changes; tag ``mia.memory_format``).
        compile: run training and test steps through ``torch.compile``, compiled once per
            process (a fleet worker's next run reuses it, see
            :mod:`mia_bench.acceleration`); signals are recorded through the
            uncompiled net. Checkpoints are those of an uncompiled run. Not a recipe
            change (left out of the fingerprint, like the device); tag ``mia.compile``.
        compile_mode: ``torch.compile`` mode (None, ``reduce-overhead``, ``max-autotune``).
        compile_backend: ``inductor`` (default; needs a C compiler on CPU),
            ``aot_eager`` or ``eager`` (no code generation).
    """

    def __init__(
        self,
        net: NetFactory,
        num_classes: int = 10,
        input_shape: Sequence[int] = (64,),
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        defense: Defense | None = None,
        memory_format: str = "contiguous",
        compile: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "defense"])
        check_memory_format(memory_format, input_shape)
        self.memory_format = memory_format
        self.net = net_to_memory_format(net(tuple(input_shape), num_classes), memory_format)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.label_smoothing = label_smoothing
        self.defense = defense or Defense()
        if compile and not self.defense.supports_compile:
            raise UserError(
                f"--model.compile true does not work with {type(self.defense).__name__} "
                "(its hooks do not fire in compiled code): drop --model.compile"
            )
        self._compiled = compiled_forward(compile_backend, compile_mode) if compile else None
        self.train_metrics = _StageMetrics(num_classes)
        self.test_metrics = _StageMetrics(num_classes)
        self._test_epoch: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of a batch ``x`` ``[B, ...]`` (compiled if ``compile``)."""
        x = to_memory_format(x, self.memory_format)
        if self._compiled is None:
            return self.net(x)  # [B, C]
        return self._compiled(self.net, x)  # [B, C]

    def run_settings(self) -> dict[str, str]:
        """How this model runs, as ``mia.*`` tags: memory format and compilation."""
        hp = self.hparams
        compiled = f"{hp.compile_backend}:{hp.compile_mode or 'default'}"
        return {"memory_format": self.memory_format, "compile": compiled if hp.compile else "off"}

    def _step(self, batch: tuple, metrics: _StageMetrics) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _index = batch
        logits = self(x)  # [B, C]
        metrics.update(logits, y, F.cross_entropy(logits, y))
        return logits, y

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.defense.setup(self)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        logits, y = self._step(batch, self.train_metrics)
        return self.defense.training_loss(self, logits, y, batch[2])

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, self.test_metrics)

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        test = self.test_metrics.compute_and_reset()
        if self.trainer.sanity_checking:
            return
        self._test_epoch = test
        for name, value in test.items():
            self.log(f"test/{name}", value, prog_bar=True, logger=False)

    def on_test_epoch_end(self) -> None:
        test = self.test_metrics.compute_and_reset()
        for name, value in test.items():
            self.log(f"test/{name}", value)

    def on_train_epoch_end(self) -> None:
        train = self.train_metrics.compute_and_reset()
        metrics = epoch_metrics(train, self._test_epoch)
        self._test_epoch = {}
        metrics |= self.defense.epoch_metrics(self)
        self.log("train/acc", train["acc"], prog_bar=True, logger=False)
        log_epoch_metrics(self.trainer, metrics)

    def configure_optimizers(self):
        optimizer = self.defense.configure_optimizer(self, self.optimizer(self.parameters()))
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
