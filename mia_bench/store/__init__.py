"""The one source of truth about runs: MLflow lookup and group membership
(:mod:`~mia_bench.store.runs`), leases (:mod:`~mia_bench.store.leases`), the on-disk
artifact contract (:mod:`~mia_bench.store.artifacts`), reference loading
(:mod:`~mia_bench.store.references`) and checkpoints (:mod:`~mia_bench.store.checkpoints`)."""
