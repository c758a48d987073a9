"""Membership-inference attacks: one file per family, one registry.

``ATTACKS`` maps a name to an :class:`~mia_bench.attacks.base.Attack`. Each family module
exports a tuple ``ATTACKS`` of its entries; to add a family, import it here and append
its tuple to the ``_registry(...)`` call (variants are ``functools.partial`` entries).

>>> {'confidence', 'correctness', 'entropy'} <= set(ATTACKS)
True
>>> get_attack("loss").needs_references
False
"""

from __future__ import annotations

from mia_bench.attacks import (
    calibrated,
    embedding,
    gmia,
    label_only,
    lira,
    neighbourhood,
    nn_attack,
    rmia,
    threshold,
)
from mia_bench.attacks.base import Attack, AttackInputs

__all__ = ["ATTACKS", "Attack", "AttackInputs", "get_attack"]


def _registry(*families: tuple[Attack, ...]) -> dict[str, Attack]:
    """Merge families' attack tuples into one dict, refusing duplicate names."""
    attacks = [a for family in families for a in family]
    names = [a.name for a in attacks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"attack names registered twice: {duplicates}")
    return {a.name: a for a in attacks}


ATTACKS: dict[str, Attack] = _registry(
    threshold.ATTACKS,
    calibrated.ATTACKS,
    lira.ATTACKS,
    rmia.ATTACKS,
    nn_attack.ATTACKS,
    embedding.ATTACKS,
    label_only.ATTACKS,
    gmia.ATTACKS,
    neighbourhood.ATTACKS,
)


def get_attack(name: str) -> Attack:
    """The registered attack called ``name``.

    Raises:
        ValueError: for an unknown name, listing the available ones.
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; available attacks: {', '.join(ATTACKS)}")
    return ATTACKS[name]
