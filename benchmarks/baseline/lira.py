"""LiRA (Carlini et al. 2022) as scored before sufficient statistics: from float64 logits."""

from __future__ import annotations

from functools import partial

import numpy as np

from benchmarks.baseline.inputs import AttackInputs
from mia_bench import signals
from mia_bench.attacks.lira import MIN_STD, _masked_median, _masked_std, likelihood_scores


def gaussian_fit(stat: np.ndarray, mask: np.ndarray, fix_variance: bool):
    count = mask.sum(axis=0)  # [N]
    m = np.broadcast_to(mask[..., None], stat.shape)  # [R, N, A], float64 copies follow
    pooled = np.std(stat[m]) if m.sum() >= 2 else 0.0
    if fix_variance:
        std = np.full(stat.shape[1:], pooled)
    else:
        per_example = _masked_std(stat, m, count)
        std = np.where(count[:, None] >= 2, per_example, pooled)
    return _masked_median(stat, m, count), np.maximum(std, MIN_STD), count


def lira(
    inputs: AttackInputs, *, online: bool = True, fix_variance: bool = False, balance: bool = True
) -> np.ndarray:
    phi = signals.scaled_logit(inputs.logits, signals.expand_labels(inputs.labels, inputs.logits))
    ref = signals.scaled_logit(
        inputs.ref_logits, signals.expand_labels(inputs.labels, inputs.ref_logits, axis=1)
    )  # [R, N, A]
    fit = partial(gaussian_fit, ref, fix_variance=fix_variance)  # the float64 fit above
    return likelihood_scores(phi, fit, inputs.ref_keep, online, balance)
