"""NN attacks trained on the references' outputs: shokri_nn, nn_loss, nn_prediction."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from mia_bench.attacks import ATTACKS, AttackInputs, get_attack
from mia_bench.attacks import nn_attack as nn
from mia_bench.metrics import auc

NN_ATTACKS = ["shokri_nn", "nn_loss", "nn_prediction"]


def balanced_keep(runs: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``bool[runs, n]``: every example IN for exactly ``runs // 2`` runs."""
    return rng.random((runs, n)).argsort(axis=0) < runs // 2


def logits_inputs(
    n: int = 400, refs: int = 8, classes: int = 5, views: int = 2, shift: float = 2.0, seed: int = 0
) -> tuple[AttackInputs, np.ndarray]:
    """Run 0 is the target, runs 1.. the references; members' true-label logit is +shift."""
    rng = np.random.default_rng(seed)
    keep = balanced_keep(refs + 1, n, rng)  # [M, N]
    labels = rng.integers(0, classes, size=n)
    logits = rng.normal(size=(refs + 1, n, views, classes))  # [M, N, A, C]
    onehot = np.eye(classes)[labels]  # [N, C]
    logits += shift * keep[:, :, None, None] * onehot[None, :, None, :]
    x = AttackInputs(logits[0], labels, ref_logits=logits[1:], ref_keep=keep[1:])
    return x, keep[0]


def xor_inputs(n: int = 600, refs: int = 8, s: float = 1.5, seed: int = 0):
    """Two classes; p_0 is high for members of class 0 and for NON-members of class 1.

    The prediction vector alone has the same law for members and non-members, so a
    pooled model sees no signal; the label (the per-class model) reveals it all.
    """
    rng = np.random.default_rng(seed)
    keep = balanced_keep(refs + 1, n, rng)
    labels = rng.integers(0, 2, size=n)
    sign = np.where(keep == (labels == 0), 1.0, -1.0)  # [M, N]
    d = s * sign + rng.normal(size=sign.shape)
    logits = np.stack([d / 2, -d / 2], axis=-1)[:, :, None, :]  # [M, N, A=1, C=2]
    return AttackInputs(logits[0], labels, ref_logits=logits[1:], ref_keep=keep[1:]), keep[0]


def test_registry_entries() -> None:
    for name in NN_ATTACKS:
        assert ATTACKS[name].needs_references and ATTACKS[name].paper


@pytest.mark.parametrize("name", NN_ATTACKS)
def test_learnable_signal_is_found_and_absent_signal_is_not(name: str) -> None:
    x, member = logits_inputs()
    scores = get_attack(name)(x)
    assert scores.dtype == np.float64 and scores.shape == (400,) and np.isfinite(scores).all()
    assert auc(scores, member) > 0.8
    x0, member0 = logits_inputs(shift=0.0, seed=1)
    assert abs(auc(get_attack(name)(x0), member0) - 0.5) < 0.1


@pytest.mark.parametrize("name", NN_ATTACKS)
def test_deterministic_and_reads_only_the_example_itself(name: str) -> None:
    x, _ = logits_inputs(n=200, refs=4)
    first = get_attack(name)(x)
    np.testing.assert_array_equal(first, get_attack(name)(x))
    other = x.logits.copy()
    other[1:] = np.random.default_rng(5).normal(size=other[1:].shape)  # change examples 1..
    changed = AttackInputs(other, x.labels, ref_logits=x.ref_logits, ref_keep=x.ref_keep)
    assert get_attack(name)(changed)[0] == first[0]  # nothing is fitted on the target


@pytest.mark.parametrize("name", NN_ATTACKS)
def test_no_references_is_refused(name: str) -> None:
    x, _ = logits_inputs(n=20, refs=2)
    with pytest.raises(ValueError, match="needs reference models"):
        get_attack(name)(AttackInputs(x.logits, x.labels))


def test_single_membership_label_is_refused() -> None:
    x, _ = logits_inputs(n=30, refs=2)
    all_in = AttackInputs(
        x.logits, x.labels, ref_logits=x.ref_logits, ref_keep=np.ones_like(x.ref_keep)
    )
    with pytest.raises(ValueError, match="member and non-member"):
        nn.nn_attack(all_in)


def test_features() -> None:
    z = np.random.default_rng(0).normal(size=(6, 3, 12))  # [M, A, C]
    y = np.arange(6)
    assert nn.loss_features(z, y).shape == (6, 3)
    f = nn.prediction_features(z, y, top_k=4)  # [M, A * (4 + 1)]
    assert f.shape == (6, 15)
    per_view = f.reshape(6, 3, 5)
    assert (np.diff(per_view[..., :4], axis=-1) <= 0).all()  # sorted, descending
    assert nn.prediction_features(z[..., :3], y % 3).shape == (6, 3 * 4)  # top_k > C: all C


def test_logit_is_the_log_odds_of_the_member_probability() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = x[:, 0] + 0.5 * rng.normal(size=300) > 0
    for mlp in (nn.NN_MLP, nn.SHOKRI_MLP):
        model = nn.fit_member_model(x, y, mlp, seed=0)
        p = model.mlp.predict_proba(model.scaler.transform(x))[:, 1]
        np.testing.assert_allclose(1 / (1 + np.exp(-model.logit(x))), p, rtol=1e-9, atol=1e-12)


def test_balanced_pairs_hide_the_leave_one_out_imbalance() -> None:
    keep = balanced_keep(10, 50, np.random.default_rng(0))[1:]  # IN counts 4 or 5
    r, n, y = nn.reference_pairs(keep)
    assert (keep[r, n] == y).all()
    assert set(np.bincount(n[y], minlength=50)) == {4}
    assert set(np.bincount(n[~y], minlength=50)) == {4}
    _, n_all, _ = nn.reference_pairs(keep, balance=False)
    assert len(n_all) == keep.size
    one_ref = keep[:1]  # every example has 0 IN or 0 OUT: balancing impossible, use all
    assert len(nn.reference_pairs(one_ref)[0]) == 50


def test_max_pairs_caps_the_training_set(monkeypatch) -> None:
    seen = []
    fit = nn.fit_member_model

    def counting_fit(x, y, *args, **kwargs):
        seen.append(len(y))
        return fit(x, y, *args, **kwargs)

    monkeypatch.setattr(nn, "fit_member_model", counting_fit)
    x, _ = logits_inputs(n=100, refs=4)
    nn.nn_attack(x, max_pairs=150)
    assert seen == [150]


def test_per_class_models_read_the_label() -> None:
    x, member = xor_inputs()
    per_class = auc(nn.shokri_nn(x), member)
    pooled = auc(nn.shokri_nn(x, per_class=False), member)
    assert per_class > 0.8
    assert pooled < 0.65


def test_small_class_falls_back_to_the_pooled_model() -> None:
    x, _ = logits_inputs(n=300, refs=6, classes=3)
    labels = np.where(x.labels == 2, 0, x.labels)
    labels[:3] = 2  # class 2: 3 examples -> 3 * k_in member pairs < 10
    x = AttackInputs(x.logits, labels, ref_logits=x.ref_logits, ref_keep=x.ref_keep)
    scores, pooled = nn.shokri_nn(x), nn.shokri_nn(x, per_class=False)
    np.testing.assert_allclose(scores[:3], pooled[:3], rtol=1e-12)  # same model, other rows
    assert not np.allclose(scores[3:], pooled[3:])


def test_single_label_class_falls_back_to_the_pooled_model() -> None:
    x, _ = logits_inputs(n=300, refs=6, classes=3)
    keep = x.ref_keep.copy()
    keep[:, x.labels == 2] = True  # every reference trains on every class-2 example
    x = AttackInputs(x.logits, x.labels, ref_logits=x.ref_logits, ref_keep=keep)
    run = partial(nn.shokri_nn, x, balance=False)
    scores, pooled = run(), run(per_class=False)
    c2 = x.labels == 2
    np.testing.assert_allclose(scores[c2], pooled[c2], rtol=1e-12)
    assert not np.allclose(scores[~c2], pooled[~c2])
