"""Neighbourhood comparison: a record's loss against that of its neighbours.

The Embedding Attack Project (open question 3) asks how an attack that compares a record with its
neighbourhood fares against loss- and embedding-based attacks. The loss attack ranks
records by loss alone, so hard non-members look like members when they are easy and
vice versa; comparing with similar records calibrates the difficulty away, as
reference models do, but with no reference model: the neighbours come from the target
itself. Two neighbourhoods:

* ``neighbourhood`` (pool neighbours): the ``k`` pool records nearest to the record in
  the target's embedding of one layer (cosine similarity; the record itself excluded).
  Score ``(mean_nbr_loss - loss) / (std_nbr_loss + eps)``: how much better the target
  fits the record than its look-alikes. The per-layer sweep (``--layers``) asks which
  layer's neighbourhood calibrates best.
* ``neighbourhood_views`` (perturbed copies, as Mattern et al., ACL Findings 2023, do
  for language models): the neighbours are the record's own query views (mirror,
  shifts); score ``mean_a>0 loss(view a) - loss(plain)``. Needs at least two views.

Neither reads membership or references.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from mia_bench import signals
from mia_bench.attacks.base import Attack, AttackInputs

MATTERN_2023 = (
    "Mattern, Mireshghallah, Jin, Schoelkopf, Sachan, Berg-Kirkpatrick. Membership Inference "
    "Attacks against Language Models via Neighbourhood Comparison. ACL Findings 2023"
)
SEED_000 = "Embedding Attack Project (arXiv 2401.13854), open question 3"
CHUNK = 1024  # rows of the similarity matrix formed at once
EPS = 1e-6


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), so ``a @ b.T`` is cosine.

    >>> unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    x = np.asarray(features, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(features: np.ndarray, k: int) -> np.ndarray:
    """Indices ``int64[N, k]`` of each record's ``k`` most cosine-similar other records.

    >>> f = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> nearest_neighbours(f, 1).ravel().tolist()
    [1, 0, 3, 2]
    """
    if not 1 <= k < len(features):
        raise ValueError(f"k must lie in [1, {len(features) - 1}] (records - 1), got {k}")
    unit = unit_rows(features)
    out = np.empty((len(unit), k), dtype=np.int64)
    for start in range(0, len(unit), CHUNK):
        stop = min(start + CHUNK, len(unit))
        sims = unit[start:stop] @ unit.T  # [B, N]
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never itself
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # [B, k], unordered
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start:stop] = np.take_along_axis(top, order, axis=1)
    return out


def neighbourhood_attack(
    inputs: AttackInputs, *, layer: str = "embedding", k: int = 10
) -> np.ndarray:
    """Standardized loss gap to the ``k`` nearest pool records in ``layer``; higher = member.

    Args:
        inputs: the target's ``logits`` (plain view), ``labels`` and ``embeddings[layer]``.
        layer: the layer whose embedding space defines the neighbourhood.
        k: neighbours per record.

    Raises:
        ValueError: if the target lacks ``layer``.
    """
    if layer not in inputs.embeddings:
        raise ValueError(
            f"the neighbourhood attack reads the target's {layer!r} embeddings; it has "
            f"{sorted(inputs.embeddings) or 'none'}. Record it (--signals.layers)"
        )
    loss = signals.loss(inputs.logits[:, 0], inputs.labels)  # [N]
    nbr = loss[nearest_neighbours(inputs.embeddings[layer], k)]  # [N, k]
    return (nbr.mean(axis=1) - loss) / (nbr.std(axis=1) + EPS)


def view_neighbourhood_attack(inputs: AttackInputs) -> np.ndarray:
    """Mean loss of the perturbed query views minus the plain view's loss; higher = member.

    >>> logits = np.log(np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.6, 0.4], [0.6, 0.4]]]))
    >>> view_neighbourhood_attack(AttackInputs(logits, np.array([0, 0]))).round(3).tolist()
    [0.405, 0.0]
    """
    if inputs.logits.shape[1] < 2:
        raise ValueError(
            "neighbourhood_views compares a record with its perturbed copies: record more "
            "query views (--signals.views [plain, mirror] or a preset such as lira18)"
        )
    labels = np.broadcast_to(inputs.labels[:, None], inputs.logits.shape[:2])
    loss = signals.loss(inputs.logits, labels)  # [N, A]
    return loss[:, 1:].mean(axis=1) - loss[:, 0]


ATTACKS: tuple[Attack, ...] = (
    Attack(
        "neighbourhood",
        partial(neighbourhood_attack, layer="embedding"),
        needs_references=False,
        paper=SEED_000,
        needs_embeddings=True,
    ),
    Attack(
        "neighbourhood_views",
        view_neighbourhood_attack,
        needs_references=False,
        paper=MATTERN_2023,
        min_views=2,
    ),
)
