"""The calibrated loss attacks (Ye et al. 2022, Watson et al. 2022, Sablayrolles et al.
2019) as scored before sufficient statistics: losses from float64 logits."""

from __future__ import annotations

import numpy as np

from benchmarks.baseline.inputs import AttackInputs
from mia_bench import signals
from mia_bench.attacks.calibrated import interpolated_cdf, side_mean
from mia_bench.attacks.lira import split_references


def losses(inputs: AttackInputs) -> tuple[np.ndarray, np.ndarray]:
    ref_plain = inputs.ref_logits[:, :, 0]  # [R, N, C]
    ref_labels = signals.expand_labels(inputs.labels, ref_plain, axis=1)
    return signals.loss(inputs.logits[:, 0], inputs.labels), signals.loss(ref_plain, ref_labels)


def attack_r(inputs: AttackInputs, *, balance: bool = True) -> np.ndarray:
    loss, ref_loss = losses(inputs)
    return 1.0 - interpolated_cdf(loss, ref_loss, split_references(inputs.ref_keep, balance)[1])


def watson_calibrated(inputs: AttackInputs) -> np.ndarray:
    loss, ref_loss = losses(inputs)
    return side_mean(ref_loss, ~inputs.ref_keep) - loss


def calibrated_loss(inputs: AttackInputs) -> np.ndarray:
    loss, ref_loss = losses(inputs)
    sides = [side_mean(ref_loss, m) for m in (inputs.ref_keep, ~inputs.ref_keep) if m.any()]
    tau = np.mean(sides, axis=0) if sides else np.zeros_like(loss)
    return tau - loss
