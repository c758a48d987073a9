"""The callbacks in a plain Trainer: what they need of its data and model fails at setup.

A data module or model that lacks what SignalRecorder and AttackMonitor read fails
before the first training step, with one line naming what is missing and how to get it
(:func:`mia_bench.checks.check_recording`), not after the first epoch.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from mia_bench.callbacks import AttackMonitor, SignalRecorder
from mia_bench.data import DatasetMembership, PoolDataset
from mia_bench.errors import UserError

POOL = TensorDataset(torch.rand(32, 4), torch.arange(32) % 3)


class Model(L.LightningModule):
    """A tiny module that counts its training steps; ``forward`` returns ``output(logits)``."""

    def __init__(self, output=lambda logits: logits) -> None:
        super().__init__()
        self.embedding = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)
        self.output = output
        self.steps = 0

    def forward(self, x: torch.Tensor):
        return self.output(self.head(self.embedding(x)))

    def training_step(self, batch, batch_idx):
        self.steps += 1
        x, y = batch[0], batch[1]
        return nn.functional.cross_entropy(self.head(self.embedding(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class PlainData(L.LightningDataModule):
    """A user's DataModule with a training loader only: no membership design."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(POOL, batch_size=8)


class ShuffledAudit(DatasetMembership):
    def audit_dataloader(self) -> DataLoader:  # (x, y, index), the pool backwards
        return DataLoader(Subset(PoolDataset(self.pool), range(31, -1, -1)), batch_size=8)


def _fit(model: Model, tmp_path, callbacks=None, **fit_kwargs) -> None:
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=callbacks or [SignalRecorder(progress=False), AttackMonitor(plot=False)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, **fit_kwargs)


@pytest.mark.parametrize(
    ("data", "output", "messages"),
    [
        (PlainData(), None, ["SignalRecorder: PlainData lacks keep", "audit_dataloader()"]),
        (ShuffledAudit(POOL), None, ["starts at pool index 31", "no shuffling"]),
        (DatasetMembership(POOL), lambda z: (z,), ["must return logits [B, C]", "tuple"]),
        (DatasetMembership(POOL, query_views=["plain", "mirror"]), None, ["need inputs (C, H, W)"]),
    ],
    ids=["no-design", "shuffled-audit", "forward-not-logits", "image-views-on-features"],
)
def test_what_the_callbacks_need_fails_before_the_first_step(tmp_path, data, output, messages):
    model = Model() if output is None else Model(output)
    with pytest.raises(UserError) as error:
        _fit(model, tmp_path, datamodule=data)
    assert all(m in str(error.value) for m in messages), str(error.value)
    assert "\n" not in str(error.value)
    assert model.steps == 0


def test_the_message_says_how_to_get_the_design(tmp_path):
    with pytest.raises(UserError, match="mia_bench.data.DatasetMembership"):
        _fit(Model(), tmp_path, datamodule=PlainData())


def test_a_trainer_without_a_datamodule_is_told_to_pass_one(tmp_path):
    with pytest.raises(UserError, match="the trainer has none: pass trainer.fit"):
        _fit(Model(), tmp_path, train_dataloaders=DataLoader(POOL, batch_size=8))


def test_attack_monitor_without_a_recorder_fails_at_setup(tmp_path):
    model = Model()
    with pytest.raises(RuntimeError, match="needs a SignalRecorder"):
        _fit(model, tmp_path, [AttackMonitor()], datamodule=DatasetMembership(POOL))
    assert model.steps == 0


def test_layers_named_for_embeddings_must_exist(tmp_path):
    with pytest.raises(UserError, match="has no layer 'fc9'.*penultimate layer `embedding`"):
        _fit(
            Model(), tmp_path, [SignalRecorder(layers=["fc9"])], datamodule=DatasetMembership(POOL)
        )


def test_a_module_with_the_design_trains_and_is_attacked(tmp_path):
    model = Model()
    monitor = AttackMonitor(plot=False)
    data = DatasetMembership(POOL, batch_size=8)
    _fit(model, tmp_path, [SignalRecorder(progress=False), monitor], datamodule=data)
    assert model.steps == 2 and monitor.last_epoch == 0  # 16 members, batches of 8
    assert any("auc" in name for name in monitor.last_metrics)
