"""Your own LightningModule and data in a plain ``lightning.Trainer``, audited every epoch.

    cd examples/own_module && python train.py --max_epochs 20

The data module is :class:`mia_bench.data.DatasetMembership` around the Dataset: run
``--run_index`` of a group of 2 trains on its half of the pool (its row of the keep
matrix). ``SignalRecorder`` records the model's logits on the whole pool every epoch,
``AttackMonitor`` attacks them, and the run goes to the same MLflow store as
``mia-bench fit`` (``sqlite:///mlruns/mlflow.db``, experiment ``mia-bench``), with its
checkpoints in ``mlruns/checkpoints/<run_id>/``, so that ``mia-bench audit --checkpoint``
finds its keep row (see README.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
from my_module import DigitsDataset, DigitsMLP

from mia_bench.callbacks import AttackMonitor, RunSummary, SignalRecorder
from mia_bench.data import DatasetMembership
from mia_bench.store.checkpoints import EpochCheckpoint
from mia_bench.store.settings import MlflowSettings
from mia_bench.tracking import BufferedMLFlowLogger


def main(argv: list[str] | None = None) -> str:
    """Train one run; returns its MLflow run id."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_epochs", type=int, default=20)
    parser.add_argument("--run_index", type=int, default=0, help="0 or 1: which half it trains on")
    args = parser.parse_args(argv)
    store = MlflowSettings()  # mia-bench fit's defaults: the runs meet in one store
    logger = BufferedMLFlowLogger(  # metrics sent once each epoch's checkpoint is written
        experiment_name=store.experiment_name,
        tracking_uri=store.tracking_uri,
        artifact_location=Path(store.artifact_location).resolve().as_uri(),
    )
    trainer = L.Trainer(
        max_epochs=args.max_epochs,
        logger=logger,
        callbacks=[
            SignalRecorder(progress=False),  # signals/epoch_XXX.npz and keep.npy
            AttackMonitor(),  # mia/... metrics and roc/epoch_XXX.png
            RunSummary(),  # a line per epoch, mia_vs_epoch.png, the result table at the end
            EpochCheckpoint(Path(store.checkpoint_dir) / logger.run_id),
        ],
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = DatasetMembership(DigitsDataset(), num_runs=2, run_index=args.run_index, batch_size=64)
    trainer.fit(DigitsMLP(), datamodule=data)
    print(f"run {logger.run_id}: checkpoints in {Path(store.checkpoint_dir) / logger.run_id}")
    return logger.run_id


if __name__ == "__main__":
    main()
