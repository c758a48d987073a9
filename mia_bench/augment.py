"""Views of an example: query views used when recording signals.

A query view is a deterministic function of a batch ``[B, ...]``; view 0 of the
signals is always ``plain``. LiRA queries the model on the plain image and its
horizontal mirror (Carlini et al. 2022, Section VI-A).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x


def _mirror(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(
            f"the mirror view needs image batches [B, C, H, W], got shape {tuple(x.shape)}"
        )
    return x.flip(-1)  # [B, C, H, W]


QUERY_VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "plain": _plain,
    "mirror": _mirror,
}


def query_views(names: Sequence[str]) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Look up query views by name; the first must be ``plain``.

    >>> len(query_views(["plain", "mirror"]))
    2
    """
    unknown = [n for n in names if n not in QUERY_VIEWS]
    if unknown:
        raise ValueError(f"unknown query views {unknown}; available: {sorted(QUERY_VIEWS)}")
    if not names or names[0] != "plain":
        raise ValueError(f"view 0 must be 'plain', got {list(names)}")
    return [QUERY_VIEWS[n] for n in names]
