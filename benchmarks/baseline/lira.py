"""LiRA (Carlini et al. 2022) as scored before sufficient statistics: from float64 logits."""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from benchmarks.baseline.inputs import AttackInputs
from mia_bench import signals
from mia_bench.attacks.lira import (
    MIN_STD,
    _log_pdf,
    _masked_median,
    _masked_std,
    split_references,
)


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
    in_mask, out_mask = split_references(inputs.ref_keep, balance)
    mu_out, s_out, n_out = gaussian_fit(ref, out_mask, fix_variance)
    offline = np.mean(log_ndtr((phi - mu_out) / s_out), axis=1)  # [N]
    if not online:
        return np.where(n_out > 0, offline, np.log(0.5))
    mu_in, s_in, n_in = gaussian_fit(ref, in_mask, fix_variance)
    llr = np.mean(_log_pdf(phi, mu_in, s_in) - _log_pdf(phi, mu_out, s_out), axis=1)  # [N]
    return np.where(n_out == 0, 0.0, np.where(n_in == 0, offline, llr))
