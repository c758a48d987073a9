"""The audit engine (:mod:`~mia_bench.audit.engine`: one target at one epoch, and
leave-one-out over a group), its reports and tables, and audits of a single checkpoint."""
