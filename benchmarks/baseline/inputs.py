"""The attack inputs of the frozen scoring path: every array as float64, in memory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AttackInputs:
    """Target logits ``[N, A, C]``, references ``[R, N, A, C]`` and their keep rows."""

    logits: np.ndarray
    labels: np.ndarray
    ref_logits: np.ndarray
    ref_keep: np.ndarray
    population: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "logits", np.asarray(self.logits, dtype=np.float64))
        object.__setattr__(self, "ref_logits", np.asarray(self.ref_logits, dtype=np.float64))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64))

    @property
    def num_examples(self) -> int:
        return self.logits.shape[0]

    @property
    def num_references(self) -> int:
        return self.ref_logits.shape[0]
