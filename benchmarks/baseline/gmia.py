"""GMIA's direct test (Long et al. 2018) as scored before sufficient statistics."""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from benchmarks.baseline.calibrated import losses
from benchmarks.baseline.inputs import AttackInputs
from mia_bench.attacks.gmia import MIN_STD


def direct_log_pvalues(inputs: AttackInputs) -> np.ndarray:
    target, refs = losses(inputs)  # [N], [R, N]
    out = ~inputs.ref_keep
    count = out.sum(axis=0)
    mean = np.where(out, refs, 0.0).sum(axis=0) / np.maximum(count, 1)
    var = np.where(out, (refs - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
    z = (target - mean) / np.maximum(np.sqrt(var), MIN_STD)
    return np.where(count > 0, log_ndtr(z), 0.0)
