"""The Classifier's running accuracy and loss agree with torchmetrics' (what they replace)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mia_bench.classifier import _StageMetrics


def test_stage_metrics_equal_torchmetrics_micro_accuracy_and_weighted_mean_loss():
    torch.manual_seed(0)
    ours = _StageMetrics(5)
    acc, mean = MulticlassAccuracy(num_classes=5, average="micro"), MeanMetric()
    for epoch in range(2):  # compute_and_reset starts the next epoch from nothing
        for n in (7, 3, 0, 9):  # an empty batch (DP-SGD's Poisson sampling) is skipped
            logits, y = torch.randn(n, 5), torch.randint(0, 5, (n,))
            loss = F.cross_entropy(logits, y) if n else torch.tensor(0.0)
            ours.update(logits, y, loss)
            if n:
                acc.update(logits, y)
                mean.update(loss, weight=n)
        got = ours.compute_and_reset()
        assert got["acc"] == pytest.approx(float(acc.compute()), abs=1e-7), epoch
        assert got["loss"] == pytest.approx(float(mean.compute()), rel=1e-6), epoch
        acc.reset()
        mean.reset()
    assert ours.compute_and_reset()["acc"] == 0.0
