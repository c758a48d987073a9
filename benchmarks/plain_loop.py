"""The baseline of the speed benchmarks: a plain PyTorch loop doing a Location run's work.

What one ``mia-bench fit -c lightning_configs/location_mlp.yaml`` does, written as
directly as PyTorch allows (no Lightning, no MLflow, no DataLoader): train the
Location-30 MLP (446-256-128-30, tanh; Adam 1e-3, batch 32, 30 epochs) on the run's
members (its keep row of a 16-run group), and after every epoch evaluate the
non-members, record the whole pool's logits (``.npy``), score the five threshold attacks
(loss, confidence, entropy, modified entropy, correctness: AUC and TPR at 0.1% and 1%
FPR against the keep row) and save a resumable checkpoint (model and optimizer); with
``--mlflow URI`` it also logs each epoch's metrics to an MLflow run.

    python -m benchmarks.plain_loop --data ../shared/data/location --run-index 0 --out DIR

imports nothing of mia-bench but its keep matrix (``mia_bench/data/splits.py``, NumPy
only, loaded from its file: importing the ``mia_bench.data`` package would import
Lightning), so as a whole process it pays only torch's start-up.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

SPLITS = Path(__file__).resolve().parents[1] / "mia_bench" / "data" / "splits.py"


def _keep_row_function():
    spec = importlib.util.spec_from_file_location("_mia_splits", SPLITS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.keep_row


keep_row = _keep_row_function()

FPRS = (0.001, 0.01)


def load_location(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Location's features ``float32[N, 446]`` and labels ``int64[N]`` (the parsed cache)."""
    arrays = np.load(folder / "dataset_location.npz")
    return (
        torch.from_numpy(arrays["features"].astype(np.float32)),
        torch.from_numpy(arrays["labels"].astype(np.int64)),
    )


def mlp(inputs: int = 446, classes: int = 30) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inputs, 256), nn.Tanh(), nn.Linear(256, 128), nn.Tanh(), nn.Linear(128, classes)
    )


def auc_and_tprs(scores: np.ndarray, members: np.ndarray) -> tuple[float, list[float]]:
    """ROC AUC (ties counted half) and TPR at :data:`FPRS` of ``scores`` (higher = member)."""
    order = np.argsort(-scores, kind="stable")
    hits = members[order]
    tpr = np.concatenate([[0.0], np.cumsum(hits) / hits.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(~hits) / (~hits).sum()])
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(scores) + 1)
    pos = members.sum()
    auc = (ranks[members].sum() - pos * (pos + 1) / 2) / (pos * (len(scores) - pos))
    return float(auc), [float(tpr[np.searchsorted(fpr, f, side="right") - 1]) for f in FPRS]


def threshold_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """The five threshold attacks' scores (Yeom et al. 2018; Song and Mittal 2021)."""
    logp = torch.log_softmax(logits.double(), dim=1)
    p = logp.exp()
    at = logp.gather(1, labels[:, None])[:, 0]
    p_y = at.exp()
    log1m = torch.log1p(-p.clamp(max=1 - 1e-12))
    others = p * log1m
    mentr = -(1 - p_y) * at - (others.sum(1) - others.gather(1, labels[:, None])[:, 0])
    mentr = mentr - p_y * torch.log1p(-p_y.clamp(max=1 - 1e-12))
    return {
        "loss": at.numpy(),
        "confidence": p_y.numpy(),
        "entropy": (p * logp).sum(1).numpy(),
        "modified_entropy": (-mentr).numpy(),
        "correctness": (logits.argmax(1) == labels).double().numpy(),
    }


def train_run(
    features: torch.Tensor,
    labels: torch.Tensor,
    run_index: int,
    out: Path,
    epochs: int = 30,
    num_runs: int = 16,
    seed: int = 0,
    tracking: tuple | None = None,
) -> dict[str, float]:
    """Train and audit one run as described in the module docstring; its last metrics.

    ``tracking``: ``(MlflowClient, experiment id)`` to log each epoch's metrics to an
    MLflow run as well (one ``log_batch`` an epoch), as a user tracking runs would.
    """
    run_id = None
    if tracking is not None:
        client, exp_id = tracking
        run_id = client.create_run(exp_id, tags={"plain.run_index": str(run_index)}).info.run_id
    torch.manual_seed(seed + run_index)
    keep = keep_row(len(labels), num_runs, 0.5, 0, run_index)
    members = torch.from_numpy(np.flatnonzero(keep))
    nonmembers = torch.from_numpy(np.flatnonzero(~keep))
    net = mlp(features.shape[1], int(labels.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    for epoch in range(epochs):
        net.train()
        order = members[torch.randperm(len(members))]
        correct = 0
        for start in range(0, len(order), 32):
            index = order[start : start + 32]
            x, y = features[index], labels[index]
            logits = net(x)
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == y).sum())
        net.eval()
        with torch.inference_mode():
            pool_logits = torch.cat(
                [net(features[s : s + 1024]) for s in range(0, len(labels), 1024)]
            )
        test_logits = pool_logits[nonmembers]
        metrics = {
            "train/acc": correct / len(members),
            "test/acc": float((test_logits.argmax(1) == labels[nonmembers]).float().mean()),
            "test/loss": float(loss_fn(test_logits, labels[nonmembers])),
        }
        np.save(out / f"logits_{epoch:03d}.npy", pool_logits.numpy()[:, None, :])
        for name, scores in threshold_scores(pool_logits, labels).items():
            auc, tprs = auc_and_tprs(scores, keep)
            metrics[f"mia/{name}/auc"] = auc
            metrics |= {f"mia/{name}/tpr_at_fpr_{f:g}": t for f, t in zip(FPRS, tprs, strict=True)}
        torch.save(
            {"model": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, out / "last.pt"
        )
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
        if run_id is not None:
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            batch = [Metric(k, v, stamp, epoch) for k, v in metrics.items()]
            client.log_batch(run_id, metrics=batch)
    if run_id is not None:
        client.set_terminated(run_id)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/location"))
    parser.add_argument("--run-index", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("plain_loop_runs"))
    parser.add_argument("--mlflow", default=None, help="also log to this tracking URI")
    args = parser.parse_args()
    torch.set_num_threads(1)
    features, labels = load_location(args.data)
    tracking = None
    if args.mlflow:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(args.mlflow)
        found = client.get_experiment_by_name("plain")
        tracking = (client, found.experiment_id if found else client.create_experiment("plain"))
    for i in args.run_index:
        started = time.perf_counter()
        out = args.out / f"run_{i:03d}"
        metrics = train_run(features, labels, i, out, args.epochs, tracking=tracking)
        seconds = time.perf_counter() - started
        print(json.dumps({"run_index": i, "seconds": round(seconds, 2), **metrics}))


if __name__ == "__main__":
    main()
