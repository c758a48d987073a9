"""The membership design of a group: which run trains on which pool example.

The keep matrix is LiRA's balanced design (Carlini et al. 2022, reference code
``train.py``): every example is IN for exactly ``pkeep * num_runs`` runs, so each
example has the same number of IN and OUT reference models. It is a pure function
of ``(num_examples, num_runs, pkeep, split_seed)``.
"""

from __future__ import annotations

import numpy as np


def runs_in(num_runs: int, pkeep: float) -> int:
    """Number of runs that train on each example.

    Args:
        num_runs: M, the number of runs in the group.
        pkeep: fraction of runs that keep each example.

    Returns:
        ``pkeep * num_runs`` as an int.

    Raises:
        ValueError: if ``num_runs < 1``, ``pkeep`` is not in (0, 1), or the product
            is not a whole number.

    >>> runs_in(16, 0.5)
    8
    """
    if num_runs < 1:
        raise ValueError(f"num_runs must be >= 1, got {num_runs}")
    if not 0.0 < pkeep < 1.0:
        raise ValueError(f"pkeep must be strictly between 0 and 1, got {pkeep}")
    k = num_runs * pkeep
    if abs(k - round(k)) > 1e-9:
        raise ValueError(
            f"num_runs * pkeep = {num_runs} * {pkeep} = {k:g} is not a whole number: "
            "every example must be IN for the same number of runs. Choose num_runs and "
            "pkeep so that their product is an integer (e.g. num_runs=2, pkeep=0.5)."
        )
    return int(round(k))


def keep_matrix(num_examples: int, num_runs: int, pkeep: float, split_seed: int) -> np.ndarray:
    """Balanced keep matrix of a group.

    Args:
        num_examples: N, size of the pool.
        num_runs: M, number of runs in the group.
        pkeep: fraction of runs each example is IN for.
        split_seed: seed; the matrix is a pure function of the arguments.

    Returns:
        ``bool[M, N]``: ``keep[m, n]`` is True when run m trains on example n.
        Every column has exactly ``pkeep * M`` True entries.

    >>> k = keep_matrix(6, 4, 0.5, split_seed=0)
    >>> k.shape, k.sum(axis=0).tolist()
    ((4, 6), [2, 2, 2, 2, 2, 2])
    """
    if num_examples < 1:
        raise ValueError(f"the pool is empty (num_examples={num_examples})")
    k = runs_in(num_runs, pkeep)
    rng = np.random.default_rng(split_seed)
    ranks = rng.random((num_runs, num_examples)).argsort(axis=0)  # [M, N]
    return ranks < k


def keep_row(
    num_examples: int, num_runs: int, pkeep: float, split_seed: int, run_index: int
) -> np.ndarray:
    """One run's row of the keep matrix, ``bool[N]``.

    Raises:
        ValueError: if ``run_index`` is not in ``[0, num_runs)``.

    >>> keep_row(6, 4, 0.5, 0, 1).dtype
    dtype('bool')
    """
    if not 0 <= run_index < num_runs:
        raise ValueError(
            f"run_index={run_index} is outside [0, num_runs={num_runs}): a group of "
            f"{num_runs} runs has run indices 0..{num_runs - 1}. Raise num_runs or pick "
            "another run_index."
        )
    return keep_matrix(num_examples, num_runs, pkeep, split_seed)[run_index]
