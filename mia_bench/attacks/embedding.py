"""Embedding-based NN attack of the Embedding Attack Project (arXiv 2401.13854).

An attack model is trained on one layer's embeddings of the reference models (pair
``(r, n)``: features ``ref_embeddings[layer][r, n]``, label ``ref_keep[r, n]``) and scores
the target's embeddings of the same layer. The pairs, the balancing, the cap, the MLP
(one hidden layer of 64 ReLU units, early stopping) and the log-odds score are those of
:func:`mia_bench.attacks.nn_attack.nn_attack`.

``nn_embedding`` reads the layer named ``embedding``, the penultimate layer of every
mia-bench net; other layers are ``functools.partial(embedding_attack, layer="fc")``.
The report's finding is that deeper layers leak more: :func:`layer_sweep_scores` scores
every recorded layer so the harness can put one metric per layer side by side.

High-dimensional layers (conv feature maps, D in the thousands): when D exceeds
``max_dim``, the features are standardized and projected on their first ``max_dim``
principal components (randomized PCA, fixed seed), fitted on at most ``pca_rows`` of the
references' training pairs, never on the target. Large matrices are transformed in
blocks, so a [20k, 16k] float64 matrix is never formed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from mia_bench.attacks.base import Attack, AttackInputs
from mia_bench.attacks.nn_attack import (
    CHUNK,
    EMBEDDING_ATTACK_PROJECT,
    MAX_PAIRS,
    NN_MLP,
    fit_member_model,
    reference_pairs,
    subsample,
    transform,
)

MAX_DIM = 256
PCA_ROWS = 4096


def embedding_attack(
    inputs: AttackInputs,
    *,
    layer: str = "embedding",
    max_dim: int = MAX_DIM,
    pca_rows: int = PCA_ROWS,
    mlp: Mapping[str, Any] = NN_MLP,
    max_pairs: int | None = MAX_PAIRS,
    balance: bool = True,
    seed: int = 0,
    sort_units: bool = True,
) -> np.ndarray:
    """Scores ``float64[N]`` of an attack model on one layer's embeddings; higher = member.

    The hidden units of independently trained models come in arbitrary order, so an
    attack model fitted on the references' raw embeddings does not transfer to the
    target (measured on Location-30 with 15 references of other seeds: AUC 0.50).
    With ``sort_units`` (default) each embedding vector is sorted, which makes the
    features invariant to that permutation, as sorting the softmax does for prediction
    attacks (Salem et al. 2019); the same setting then gives AUC 0.64.

    Args:
        inputs: target ``embeddings[layer] [N, D]``, ``ref_embeddings[layer] [R, N, D]``
            and ``ref_keep``.
        layer: the layer to read.
        max_dim: above this many features, reduce to ``max_dim`` principal components.
        pca_rows: how many training pairs fit the PCA.
        mlp: ``MLPClassifier`` keyword arguments.
        max_pairs: cap on the training pairs (seeded subset); None for all.
        balance: balance IN / OUT pairs per example (see :mod:`~mia_bench.attacks.nn_attack`).
        seed: seeds the subset, the PCA and the MLP.
        sort_units: sort each embedding vector (permutation-invariant features).

    Raises:
        ValueError: if the target or the references lack ``layer`` (naming the layers
            present), or the reference pairs hold one membership label only.
    """
    target, refs = _layer(inputs, layer)  # [N, D], [R, N, D]
    order = partial(np.sort, axis=-1) if sort_units else np.asarray
    target = order(target)
    r, n, y = reference_pairs(inputs.ref_keep, balance)
    pick = subsample(len(y), max_pairs, seed)
    r, n, y = r[pick], n[pick], y[pick]
    reducer = None
    if refs.shape[-1] > max_dim:
        reducer = _fit_pca(order(refs[r[:pca_rows], n[:pca_rows]]), max_dim, seed)
    blocks = range(0, len(r), CHUNK)
    x = [transform(reducer, order(refs[r[i : i + CHUNK], n[i : i + CHUNK]])) for i in blocks]
    model = fit_member_model(np.concatenate(x), y, mlp, seed, reducer)  # x: [P, D']
    return model.logit(target)


def layer_sweep_scores(
    inputs: AttackInputs, layers: Iterable[str] | None = None, **kwargs: Any
) -> dict[str, np.ndarray]:
    """Scores of :func:`embedding_attack` for every layer, ``{layer: float64[N]}``.

    The truth is not an input: the harness turns each layer's scores into metrics
    (``mia_bench.metrics.auc(scores[layer], membership)``) to see which depth leaks most.

    Args:
        inputs: as :func:`embedding_attack`.
        layers: the layers to attack, in order; None for every layer the references have
            (``inputs.ref_embeddings``, in their order).
        **kwargs: passed on to :func:`embedding_attack` (``max_dim``, ``seed``, ...).

    Raises:
        ValueError: if a requested layer is missing, naming the layers present.
    """
    names = list(inputs.ref_embeddings if layers is None else layers)
    return {name: embedding_attack(inputs, layer=name, **kwargs) for name in names}


def _layer(inputs: AttackInputs, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """The target's ``[N, D]`` and the references' ``[R, N, D]`` embeddings of ``layer``."""
    if layer not in inputs.embeddings or layer not in inputs.ref_embeddings:
        raise ValueError(
            f"the embedding attack needs layer {layer!r} for the target and the references; "
            f"target layers: {sorted(inputs.embeddings)}, reference layers: "
            f"{sorted(inputs.ref_embeddings)}. Record it (signal recorder layers) or pass "
            "layer= one of those present"
        )
    return inputs.embeddings[layer], inputs.ref_embeddings[layer]


def _fit_pca(x: np.ndarray, max_dim: int, seed: int) -> Pipeline:
    """Standardize + randomized PCA to ``min(max_dim, rows, D)`` dims, fitted on ``x [M, D]``."""
    dims = min(max_dim, *x.shape)
    pca = PCA(n_components=dims, svd_solver="randomized", random_state=seed)
    return make_pipeline(StandardScaler(), pca).fit(np.asarray(x, dtype=np.float64))


ATTACKS: tuple[Attack, ...] = (
    Attack(
        "nn_embedding",
        partial(embedding_attack, layer="embedding"),
        needs_references=True,
        paper=EMBEDDING_ATTACK_PROJECT,
        needs_embeddings=True,
    ),
    Attack(
        "nn_embedding_raw",
        partial(embedding_attack, layer="embedding", sort_units=False),
        needs_references=True,
        paper=EMBEDDING_ATTACK_PROJECT,
        needs_embeddings=True,
    ),
)
