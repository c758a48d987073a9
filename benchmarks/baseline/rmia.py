"""RMIA (Zarifzadeh et al. 2024) as scored before sufficient statistics: from float64
logits, plain softmax (T = 1) and a fixed offline a = 0.3."""

from __future__ import annotations

import numpy as np

from benchmarks.baseline.inputs import AttackInputs
from mia_bench import signals
from mia_bench.attacks.rmia import dominance


def rmia(
    inputs: AttackInputs, *, online: bool = False, a: float = 0.3, gamma: float = 1.0
) -> np.ndarray:
    log_p = -signals.loss(inputs.logits, signals.expand_labels(inputs.labels, inputs.logits))
    ref_log_p = -signals.loss(
        inputs.ref_logits, signals.expand_labels(inputs.labels, inputs.ref_logits, axis=1)
    )  # [R, N, A]
    log_lr = log_p - log_marginal(ref_log_p, inputs.ref_keep, online, a)  # [N, A]
    views = [dominance(v, inputs.population, np.log(gamma)) for v in log_lr.T]
    return np.mean(views, axis=0)


def log_marginal(ref_log_p: np.ndarray, ref_keep: np.ndarray, online: bool, a: float):
    log_in, log_out = _log_mean(ref_log_p, ref_keep), _log_mean(ref_log_p, ~ref_keep)
    has_in, has_out = ref_keep.any(axis=0)[:, None], (~ref_keep).any(axis=0)[:, None]
    with np.errstate(divide="ignore"):
        approx = np.logaddexp(np.log1p(a) + log_out, np.log1p(-a)) - np.log(2.0)
    both = np.logaddexp(log_in, log_out) - np.log(2.0) if online else approx
    return np.where(has_out, np.where(has_in, both, approx), log_in)


def _log_mean(log_p: np.ndarray, mask: np.ndarray) -> np.ndarray:
    masked = np.where(mask[..., None], log_p, -np.inf)  # [R, N, A]: an R-fold copy
    top = masked.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    total = np.exp(masked - top).sum(axis=0)
    count = mask.sum(axis=0)[:, None]
    with np.errstate(divide="ignore"):
        out = np.log(total) + top - np.log(np.maximum(count, 1))
    return np.where(count > 0, out, -np.inf)
