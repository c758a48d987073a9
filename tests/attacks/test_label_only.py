"""Label-only data-augmentation attack: a loop over views from the paper's definition."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import member_like

from mia_bench.attacks import AttackInputs, get_attack
from mia_bench.metrics import auc


def _loop_reference(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Count, per example, the augmented queries whose predicted label is right."""
    out = np.zeros(len(labels))
    for n in range(logits.shape[0]):
        correct = sum(int(np.argmax(logits[n, a]) == labels[n]) for a in range(logits.shape[1]))
        out[n] = correct / logits.shape[1]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_loop_and_ranks_members_higher(seed):
    inputs, membership = member_like(seed)
    scores = get_attack("label_only_augmentation")(inputs)
    np.testing.assert_array_equal(scores, _loop_reference(inputs.logits, inputs.labels))
    assert auc(scores, membership) > 0.6


def test_one_view_is_the_correctness_attack():
    rng = np.random.default_rng(0)
    inputs = AttackInputs(rng.normal(size=(50, 1, 4)), rng.integers(0, 4, 50))
    np.testing.assert_array_equal(
        get_attack("label_only_augmentation")(inputs), get_attack("correctness")(inputs)
    )


def test_reads_only_the_labels():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 3, 5))
    labels = rng.integers(0, 5, 40)
    attack = get_attack("label_only_augmentation")
    rescaled = AttackInputs(logits * 7.0 + 3.0, labels)  # same argmax everywhere
    np.testing.assert_array_equal(attack(AttackInputs(logits, labels)), attack(rescaled))
