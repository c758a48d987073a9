"""The scoring path of mia-bench before per-run sufficient statistics (frozen copy).

The benchmark in ``benchmarks/scoring.py`` measures it against the current path in the
same run, and ``tests/attacks/test_statistics_equivalence.py`` checks that both give the
same scores. It holds every reference's logits as float64 ``[R, N, A, C]`` and derives
the statistics from them for each attack: do not use it for audits.
"""
