"""A LightningModule and a Dataset of your own, as mia-bench audits them.

``DigitsMLP`` is a plain LightningModule: its own layers, training step and optimizer.
What mia-bench needs of it (see README.md): ``forward(x)`` returns logits ``[B, C]``,
its steps take mia-bench's batches ``(x, y, index)``, and a submodule named
``embedding`` (the penultimate layer) serves the embedding attacks. ``DigitsDataset``
is a plain map-style Dataset of ``(x, y)``: scikit-learn's bundled digits.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset

from mia_bench.tracking import log_epoch_metrics


class DigitsDataset(Dataset):
    """1,797 8x8 digits as 64 features in [0, 1]; item ``n`` is ``(x_n float32[64], y_n)``."""

    def __init__(self) -> None:
        bunch = load_digits()
        self.inputs = torch.as_tensor(bunch.data / 16.0, dtype=torch.float32)  # [N, 64]
        self.targets = torch.as_tensor(bunch.target, dtype=torch.long)  # [N]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, n: int) -> tuple[torch.Tensor, int]:
        return self.inputs[n], int(self.targets[n])


class DigitsMLP(L.LightningModule):
    """A two-layer MLP with its own training loop.

    Args:
        hidden: width of the hidden layer.
        lr: Adam's learning rate.
        num_classes: C; ``mia-bench fit`` links it from the data (``data.num_classes``).
        input_shape: one input's shape; linked from ``data.input_shape`` too.
    """

    def __init__(
        self,
        hidden: int = 64,
        lr: float = 1e-3,
        num_classes: int = 10,
        input_shape: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(int(np.prod(input_shape)), hidden), nn.ReLU())
        self.embedding = nn.Identity()  # the penultimate layer, named for the embedding attacks
        self.head = nn.Linear(hidden, num_classes)
        self.sums: dict[str, torch.Tensor] = {}  # stage -> [loss * n, correct, n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of a batch ``[B, 64]``: what mia-bench's signals are."""
        return self.head(self.embedding(self.body(x.flatten(1))))

    def _step(self, batch: tuple, stage: str) -> torch.Tensor:
        x, y, _index = batch  # mia-bench's loaders yield (inputs, labels, pool indices)
        logits = self(x)  # [B, C]
        loss = F.cross_entropy(logits, y)
        correct = (logits.argmax(1) == y).sum().item()
        batch_sums = torch.tensor([loss.item() * len(y), correct, len(y)], dtype=torch.float64)
        self.sums[stage] = self.sums.get(stage, 0) + batch_sums
        return loss

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, "test")  # the validation loader holds the run's non-members

    def on_validation_epoch_start(self) -> None:
        self.sums.pop("test", None)

    def on_train_epoch_end(self) -> None:
        # step = epoch, as mia-bench's attack metrics: MLflow draws them on one axis
        metrics = {}
        for stage, (loss, correct, seen) in self.sums.items():
            metrics |= {f"{stage}/loss": float(loss / seen), f"{stage}/acc": float(correct / seen)}
        self.sums = {}
        log_epoch_metrics(self.trainer, metrics)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
