"""Synthetic target + references where membership raises the true-label logit."""

from __future__ import annotations

import numpy as np

from mia_bench.attacks import AttackInputs


def member_like(
    seed: int, n: int = 300, r: int = 16, c: int = 5, population: bool = False
) -> tuple[AttackInputs, np.ndarray]:
    """IN references and target members get +2.5 on the true-label logit, on top of a
    per-example difficulty; balanced keep (each example IN for r/2 references); two views.
    With ``population``, RMIA's population is the target's non-members."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    difficulty = rng.normal(0.0, 2.0, size=n)

    def logits(member: np.ndarray) -> np.ndarray:  # member bool[..., n] -> [..., n, 2, c]
        boost = (difficulty + 2.5 * member)[..., None, None]
        return rng.normal(size=(*member.shape, 2, c)) + np.eye(c)[labels][:, None, :] * boost

    keep = np.argsort(rng.random((r, n)), axis=0) < r // 2
    membership = rng.random(n) < 0.5
    x = AttackInputs(
        logits(membership),
        labels,
        ref_logits=logits(keep),
        ref_keep=keep,
        population=~membership if population else None,
    )
    return x, membership
