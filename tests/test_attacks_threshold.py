"""Threshold attacks, the Attack/AttackInputs contract and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from mia_bench import signals
from mia_bench.attacks import ATTACKS, Attack, AttackInputs, get_attack
from mia_bench.attacks import threshold as th
from mia_bench.statistics import ReferenceStats

REFERENCE_FREE = list(th.ATTACKS)  # the plain-view threshold attacks


def member_vs_nonmember() -> AttackInputs:
    """Example 0 is member-like (peaked on its label 0); example 1 is non-member-like:
    nearly flat and peaked (barely) on a wrong class, so even the label-free entropy
    and the 0/1 correctness separate the two. Views 1 and 2 are noise."""
    plain = np.array([[8.0, 0.0, 0.0], [0.0, 0.1, 0.0]])  # [N=2, C=3]
    noise = np.random.default_rng(0).normal(size=(2, 2, 3))  # [N, A-1, C]
    logits = np.concatenate([plain[:, None], noise], axis=1)  # [N, A=3, C]
    return AttackInputs(logits, np.array([0, 0]))


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=list(ATTACKS))
def test_registry_entries_are_consistent(attack: Attack) -> None:
    assert get_attack(attack.name) is attack
    assert attack.paper


@pytest.mark.parametrize("attack", REFERENCE_FREE, ids=lambda a: a.name)
def test_member_scores_above_nonmember(attack: Attack) -> None:
    scores = attack(member_vs_nonmember())
    assert scores.dtype == np.float64 and scores.shape == (2,)
    assert scores[0] > scores[1]


@pytest.mark.parametrize("attack", REFERENCE_FREE, ids=lambda a: a.name)
def test_only_the_plain_view_is_read(attack: Attack) -> None:
    x = member_vs_nonmember()
    changed = x.logits.copy()
    changed[:, 1:] = -changed[:, 1:] * 5  # rewrite every non-plain view
    np.testing.assert_array_equal(attack(x), attack(AttackInputs(changed, x.labels)))


def test_scores_are_signed_signals() -> None:
    rng = np.random.default_rng(1)
    x = AttackInputs(rng.normal(size=(20, 2, 5)), rng.integers(0, 5, size=20))
    z = x.logits[:, 0]  # [N, C]
    y = x.labels
    np.testing.assert_array_equal(th.loss_attack(x), -signals.loss(z, y))
    np.testing.assert_array_equal(th.confidence_attack(x), signals.confidence(z, y))
    np.testing.assert_array_equal(th.entropy_attack(x), -signals.entropy(z))
    np.testing.assert_array_equal(th.modified_entropy_attack(x), -signals.modified_entropy(z, y))
    np.testing.assert_array_equal(th.correctness_attack(x), signals.correct(z, y))


def test_threshold_keys() -> None:
    expected = {"loss", "confidence", "entropy", "modified_entropy", "correctness"}
    assert expected <= set(ATTACKS)


def test_unknown_attack_lists_names() -> None:
    with pytest.raises(ValueError, match="available attacks: .*modified_entropy"):
        get_attack("nope")


def test_inputs_convert_to_float64_and_freeze() -> None:
    x = AttackInputs(
        np.zeros((3, 1, 2), dtype=np.float32),
        np.array([0, 1, 0], dtype=np.int32),
        embeddings={"embedding": np.zeros((3, 4))},
    )
    assert x.logits.dtype == np.float64 and x.labels.dtype == np.int64
    with pytest.raises(TypeError):
        x.embeddings["other"] = np.zeros((3, 4))  # type: ignore[index]


def test_inputs_with_references() -> None:
    keep = np.array([[True, False, True], [False, True, False]])
    x = AttackInputs(
        np.zeros((3, 1, 2)),
        np.zeros(3, dtype=int),
        ref_logits=np.zeros((2, 3, 1, 2)),
        ref_keep=keep,
    )
    assert x.num_references == 2 and x.ref_logits.dtype == np.float64


@pytest.mark.parametrize("name", ["nn_loss", "shokri_nn"])
def test_float32_reference_logits_are_not_copied_and_score_alike(name: str) -> None:
    # the store's float32 logits stay float32 (no R-fold float64 copy); attacks convert
    # what they read to float64, which is exact, so the scores do not change
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=60)
    keep = np.argsort(rng.random((6, 60)), axis=0) < 3
    refs = (rng.normal(size=(6, 60, 2, 3)) + 2 * keep[..., None, None]).astype(np.float32)
    target = rng.normal(size=(60, 2, 3)).astype(np.float32)
    as32 = AttackInputs(target, labels, ref_logits=refs, ref_keep=keep)
    as64 = AttackInputs(target, labels, ref_logits=refs.astype(np.float64), ref_keep=keep)
    assert as32.ref_logits.dtype == np.float32 and np.shares_memory(as32.ref_logits, refs)
    np.testing.assert_array_equal(ATTACKS[name](as32), ATTACKS[name](as64))


GOOD_LOGITS = np.zeros((3, 2, 4))
GOOD_LABELS = np.array([0, 1, 3])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"logits": np.zeros((3, 4))}, r"\[N, A, C\]"),
        ({"logits": np.zeros((3, 2, 1))}, r"C >= 2"),
        ({"logits": np.array([[["a", "b"]]])}, "real numbers"),
        ({"labels": np.array([0, 1])}, r"int\[3\]"),
        ({"labels": np.array([0.0, 1.0, 2.0])}, r"int\[3\]"),
        ({"labels": np.array([0, 1, 4])}, r"\[0, 4\)"),
        ({"embeddings": {"layer1": np.zeros((2, 5))}}, "'layer1'"),
        ({"ref_logits": np.zeros((2, 3, 2, 4))}, "need their keep rows"),
        ({"ref_keep": np.ones((2, 4), dtype=bool)}, r"bool\[R, 3\]"),
        (
            {"ref_logits": np.zeros((2, 3, 1, 4)), "ref_keep": np.ones((2, 3), dtype=bool)},
            "ref_logits must have shape",
        ),
        (
            {"ref_logits": np.zeros((2, 3, 2, 4)), "ref_keep": np.ones((2, 3), dtype=int)},
            "ref_keep must be bool",
        ),
        (
            {"ref_logits": np.zeros((2, 3, 2, 4)), "ref_keep": np.ones((3, 3), dtype=bool)},
            "ref_keep must be bool",
        ),
        (
            {
                "ref_stats": ReferenceStats({"log_p": np.zeros((2, 3, 1))}),
                "ref_keep": np.ones((2, 3), dtype=bool),
            },
            r"ref_stats must have shape \[R, N, A\] = \[R, 3, 2\]",
        ),
        ({"stats": {"log_p": np.zeros((3, 1))}}, r"stats\['log_p'\] must have shape"),
    ],
)
def test_bad_inputs(kwargs: dict, match: str) -> None:
    args = {"logits": GOOD_LOGITS, "labels": GOOD_LABELS, **kwargs}
    with pytest.raises(ValueError, match=match):
        AttackInputs(**args)


def test_missing_references_are_reported() -> None:
    needy = Attack("needy", th.loss_attack, needs_references=True, paper="-")
    with pytest.raises(ValueError, match="'needy' needs reference models"):
        needy(AttackInputs(GOOD_LOGITS, GOOD_LABELS))


@pytest.mark.parametrize(
    "result, match",
    [
        (np.zeros(2), r"float64\[3\]"),
        (np.zeros(3, dtype=np.float32), r"float64\[3\]"),
        ([0.0, 0.0, 0.0], r"float64\[3\]"),
        (np.array([0.0, np.nan, np.inf]), "2 NaN or inf scores out of 3"),
    ],
)
def test_broken_attack_results_are_caught(result, match: str) -> None:
    broken = Attack("broken", lambda _: result, needs_references=False, paper="-")
    with pytest.raises(ValueError, match=match):
        broken(AttackInputs(GOOD_LOGITS, GOOD_LABELS))
