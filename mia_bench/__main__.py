"""``python -m mia_bench`` = ``mia-bench`` (same exit status)."""

from mia_bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
