"""Embedding-based NN attack (Embedding Attack Project): one layer, the sweep, PCA."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from mia_bench.attacks import ATTACKS, Attack, AttackInputs, get_attack
from mia_bench.attacks import embedding as emb
from mia_bench.metrics import auc


def embedding_inputs(
    n: int = 400, refs: int = 8, dim: int = 16, shift: float = 1.5, seed: int = 0
) -> tuple[AttackInputs, np.ndarray]:
    """Run 0 is the target. Layer ``embedding``: an example-specific base, run noise, and
    members shifted by ``shift`` along one direction; layer ``fc0``: no membership signal."""
    rng = np.random.default_rng(seed)
    m = refs + 1
    keep = rng.random((m, n)).argsort(axis=0) < m // 2  # [M, N], balanced
    u = np.zeros(dim)
    u[0] = 1.0
    base = rng.normal(size=(n, dim))  # the same example looks alike in every run
    signal = base + 0.5 * rng.normal(size=(m, n, dim)) + shift * keep[..., None] * u
    noise = base + 0.5 * rng.normal(size=(m, n, dim))  # [M, N, D]
    labels = rng.integers(0, 3, size=n)
    logits = rng.normal(size=(m, n, 1, 3))
    x = AttackInputs(
        logits[0],
        labels,
        embeddings={"fc0": noise[0], "embedding": signal[0]},
        ref_logits=logits[1:],
        ref_keep=keep[1:],
        ref_embeddings={"fc0": noise[1:], "embedding": signal[1:]},
    )
    return x, keep[0]


def test_registry_entry() -> None:
    attack = ATTACKS["nn_embedding"]
    assert attack.needs_references and attack.paper


def test_signal_layer_is_attacked() -> None:
    x, member = embedding_inputs()
    scores = get_attack("nn_embedding_raw")(x)  # the runs share one basis here
    assert scores.dtype == np.float64 and scores.shape == (400,) and np.isfinite(scores).all()
    assert auc(scores, member) > 0.75
    np.testing.assert_array_equal(scores, get_attack("nn_embedding_raw")(x))  # deterministic


def test_layer_is_a_parameter() -> None:
    x, member = embedding_inputs(seed=1)
    fc0 = Attack("nn_embedding_fc0", partial(emb.embedding_attack, layer="fc0"), True, "x")
    assert abs(auc(fc0(x), member) - 0.5) < 0.1  # no signal in fc0


def test_layer_sweep_ranks_the_signal_layer_first() -> None:
    x, member = embedding_inputs(seed=2)
    scores = emb.layer_sweep_scores(x, sort_units=False)
    assert list(scores) == ["fc0", "embedding"]
    aucs = {layer: auc(s, member) for layer, s in scores.items()}
    assert aucs["embedding"] > aucs["fc0"] + 0.15
    assert list(emb.layer_sweep_scores(x, ["embedding"])) == ["embedding"]


def test_missing_layer_names_the_layers_present() -> None:
    x, _ = embedding_inputs(n=20, refs=2)
    with pytest.raises(ValueError, match=r"'conv3'.*\['embedding', 'fc0'\]"):
        emb.embedding_attack(x, layer="conv3")
    with pytest.raises(ValueError, match="'conv3'"):
        emb.layer_sweep_scores(x, ["embedding", "conv3"])
    target_only = AttackInputs(
        x.logits, x.labels, x.embeddings, ref_logits=x.ref_logits, ref_keep=x.ref_keep
    )
    with pytest.raises(ValueError, match=r"reference layers: \[\]"):
        get_attack("nn_embedding")(target_only)


def test_no_references_is_refused() -> None:
    x, _ = embedding_inputs(n=20, refs=2)
    with pytest.raises(ValueError, match="needs reference models"):
        get_attack("nn_embedding")(AttackInputs(x.logits, x.labels, x.embeddings))


def test_wide_layer_is_reduced_by_pca_fitted_on_the_references(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    n, refs, dim, latent = 400, 8, 1024, 8
    keep = rng.random((refs + 1, n)).argsort(axis=0) < (refs + 1) // 2
    z = rng.normal(size=(refs + 1, n, latent))
    z[..., 0] += 1.5 * keep  # the signal lives in a low-dimensional latent space
    wide = z @ rng.normal(size=(latent, dim)) + 0.1 * rng.normal(size=(refs + 1, n, dim))
    x = AttackInputs(
        rng.normal(size=(n, 1, 2)),
        rng.integers(0, 2, size=n),
        embeddings={"conv1": wide[0]},
        ref_logits=rng.normal(size=(refs, n, 1, 2)),
        ref_keep=keep[1:],
        ref_embeddings={"conv1": wide[1:]},
    )
    fitted = []
    fit_pca = emb._fit_pca
    monkeypatch.setattr(emb, "_fit_pca", lambda *a: fitted.append(a[0].shape) or fit_pca(*a))
    scores = emb.embedding_attack(x, layer="conv1", max_dim=32, pca_rows=1000, sort_units=False)
    assert fitted == [(1000, dim)]
    assert auc(scores, keep[0]) > 0.75
    other = wide[0].copy()
    other[1:] = rng.normal(size=other[1:].shape)  # change the target's examples 1..
    changed = AttackInputs(
        x.logits,
        x.labels,
        embeddings={"conv1": other},
        ref_logits=x.ref_logits,
        ref_keep=x.ref_keep,
        ref_embeddings=x.ref_embeddings,
    )
    again = emb.embedding_attack(
        changed, layer="conv1", max_dim=32, pca_rows=1000, sort_units=False
    )
    assert again[0] == scores[0]  # nothing (PCA, scaler, MLP) is fitted on the target


def test_sorted_units_transfer_across_runs_with_permuted_units() -> None:
    """Each run orders its hidden units differently (as independently initialized nets do)
    and members get larger activations: only permutation-invariant features transfer."""
    rng = np.random.default_rng(3)
    m, n, dim = 9, 400, 16
    keep = rng.random((m, n)).argsort(axis=0) < m // 2  # [M, N]
    act = np.abs(rng.normal(size=(m, n, dim))) * (1.0 + 0.8 * keep[..., None])
    act = np.stack([a[:, rng.permutation(dim)] for a in act])  # per-run unit order
    logits = rng.normal(size=(m, n, 1, 3))
    x = AttackInputs(
        logits[0],
        rng.integers(0, 3, n),
        {"embedding": act[0]},
        logits[1:],
        keep[1:],
        {"embedding": act[1:]},
    )
    assert auc(get_attack("nn_embedding")(x), keep[0]) > 0.75
    np.testing.assert_allclose(  # invariant to the target's own unit order
        get_attack("nn_embedding")(x),
        get_attack("nn_embedding")(
            AttackInputs(
                x.logits,
                x.labels,
                {"embedding": act[0][:, ::-1]},
                x.ref_logits,
                x.ref_keep,
                {"embedding": act[1:]},
            )
        ),
    )
