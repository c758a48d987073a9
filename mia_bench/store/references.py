"""Load the signals of a group's runs (see :mod:`mia_bench.store.groups`) as references.

A reference is another run of a group (or of another group: "the attacker did not
know the recipe") whose keep row and signals of the same epoch are known to the
attacker. References must share the target's pool: the same dataset, pool size and
split seed; other groups are refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mia_bench.store.artifacts import EpochSignals, load_keep, load_signals
from mia_bench.store.groups import GroupRun

POOL_TAGS = ("mia.dataset", "mia.num_examples", "mia.split_seed")


def check_same_pool(target_tags: dict[str, str], refs: Sequence[GroupRun]) -> None:
    """Refuse references whose pool differs from the target's.

    Raises:
        ValueError: naming the reference group and the tag that differs.
    """
    for ref in refs:
        for tag in POOL_TAGS:
            if ref.tags.get(tag) != target_tags.get(tag):
                raise ValueError(
                    f"reference group {ref.group!r} (run {ref.run_index}) has {tag}="
                    f"{ref.tags.get(tag)!r} but the target has {target_tags.get(tag)!r}: "
                    "references must be trained on the same pool with the same split seed."
                )


@dataclass(frozen=True)
class References:
    """Reference signals stacked for the attacks.

    Attributes:
        logits: ``float32[R, N, A, C]``.
        keep: ``bool[R, N]``.
        embeddings: layer -> ``float32[R, N, D]``.
        run_ids: the R runs used.
        epochs: the epoch used for each run.
    """

    logits: np.ndarray
    keep: np.ndarray
    embeddings: dict[str, np.ndarray]
    run_ids: list[str]
    epochs: list[int]


def load_references(
    runs: Sequence[GroupRun],
    epoch: int | str,
    layers: Sequence[str] = (),
    target_keep: np.ndarray | None = None,
) -> References | None:
    """Stack the signals of ``runs`` at ``epoch`` (an int, or ``"last"``).

    Runs without signals for that epoch are left out (documented behaviour: a
    reference that has not reached the epoch, or recorded other epochs, does not
    take part), and so is any run trained on exactly ``target_keep`` (the same
    training set as the target: with the same seed it would be the target itself).
    Returns None when no run is left.
    """
    picked = [(r, r.resolve_epoch(epoch), load_keep(r.artifact_dir)) for r in runs]
    picked = [
        (r, e, k)
        for r, e, k in picked
        if e is not None and (target_keep is None or not np.array_equal(k, target_keep))
    ]
    if not picked:
        return None
    loaded: list[EpochSignals] = [load_signals(r.artifact_dir, e, layers) for r, e, _ in picked]
    return References(
        logits=np.stack([s.logits for s in loaded]),  # [R, N, A, C]
        keep=np.stack([k for _, _, k in picked]),  # [R, N]
        embeddings={
            layer: np.stack([s.embeddings[layer] for s in loaded]) for layer in layers
        },  # [R, N, D]
        run_ids=[r.run_id for r, _, _ in picked],
        epochs=[e for _, e, _ in picked],
    )
