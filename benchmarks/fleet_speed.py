"""Fleet speed: mia-bench against a plain PyTorch loop doing the same work, and against
the fleet before long-lived workers and tensor-indexed loaders.

All on the Location-30 MLP recipe (``lightning_configs/location_mlp.yaml``: 30 epochs,
batch 32, whole-pool logits and the five threshold attacks every epoch), one thread per
process (2 workers on 2 cores), measured in the same run:

* ``help``: wall time of ``mia-bench --help`` and every subcommand's ``--help`` (the
  Lightning subcommands' once cold, without their cached text, then warm);
* ``single``: one run as a whole process (``mia-bench fit`` vs ``python -m
  benchmarks.plain_loop``), and warm (the second run of a one-worker fleet, as its
  worker timed it, vs the plain loop's second run in one process);
* ``fleet16``: 16 runs with 2 workers: the old fleet (``--old REV``: a process per run,
  per-example DataLoader; exported with ``git archive``), the new fleet, the packed fleet
  (``--pack K``, with one worker and with two), and 16 plain loops one after another in one
  process;
* ``quickstart``: ``mia-bench fit -c lightning_configs/quickstart.yaml`` (old vs new).

Results go to ``benchmarks/results/fleet_speed.json`` and ``.md`` (a run of some
``--parts`` replaces those parts and keeps the others)::

    python -m benchmarks.fleet_speed --data ../shared/data/location     # about 25 minutes
    python -m benchmarks.fleet_speed --runs 4 --epochs 5 --parts single  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OLD_REV = "b25a736"  # main before this round's fleet work
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds of a command (which must succeed) and its output."""
    started = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=cwd, env=os.environ | ONE_THREAD | (env or {}), capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return seconds, done.stdout + done.stderr


def export_old(rev: str, into: Path) -> Path:
    """The tree of ``rev`` (``git archive``), to run the old code with ``PYTHONPATH``."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.config = str(REPO / "lightning_configs" / "location_mlp.yaml")
        self.common = [
            f"--data.root={args.data}",
            f"--trainer.max_epochs={args.epochs}",
            "--trainer.enable_progress_bar=false",
            "--signals.progress=false",
        ]
        self.old = export_old(args.old, work / "old") if args.old else None
        self.results: dict[str, dict] = {}

    def folder(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def env(self, old: bool = False, cache: Path | None = None) -> dict[str, str]:
        env = {"PYTHONPATH": str(self.old if old else REPO)}
        return env | ({"MIA_BENCH_CACHE": str(cache)} if cache else {})

    def fit(self, where: Path, *extra: str, old: bool = False) -> float:
        cmd = [sys.executable, "-m", "mia_bench", "fit", "-c", self.config, *self.common, *extra]
        return timed(cmd, where, self.env(old))[0]

    def fleet(self, where: Path, runs: int, workers: int, *extra: str, old: bool = False):
        cmd = [sys.executable, "-m", "mia_bench", "fleet", "-c", self.config, "--runs", f"0:{runs}"]
        cmd += ["--workers", str(workers), "--data.num_runs=16", *self.common, *extra]
        return timed(cmd, where, self.env(old))

    def plain(
        self, where: Path, runs: list[int], mlflow: bool = False
    ) -> tuple[float, list[float]]:
        cmd = [sys.executable, "-m", "benchmarks.plain_loop", "--data", str(self.args.data)]
        cmd += [f"--mlflow=sqlite:///{where}/mlflow.db"] if mlflow else []
        cmd += ["--epochs", str(self.args.epochs), "--out", str(where), "--run-index"]
        seconds, out = timed(cmd + [str(i) for i in runs], where, self.env())
        per_run = [json.loads(line)["seconds"] for line in out.splitlines() if line.startswith("{")]
        return seconds, per_run

    def help(self) -> None:
        cache = self.folder("help_cache")
        rows = {}
        for sub in ["", "fleet", "audit", "compare", "sweep", "record", "fit", "validate", "test"]:
            cmd = [sys.executable, "-m", "mia_bench", *([sub] if sub else []), "--help"]
            if sub in ("fit", "validate", "test"):
                shutil.rmtree(cache, ignore_errors=True)
                rows[f"{sub} (cold)"] = timed(cmd, REPO, self.env(cache=cache))[0]
            rows[sub or "mia-bench"] = timed(cmd, REPO, self.env(cache=cache))[0]
        self.results["help"] = rows

    def single(self) -> None:
        """Median of ``--repeat`` measurements of each (a single run's time varies by
        seconds on a small machine)."""
        samples: dict[str, list[float]] = {}
        for _ in range(self.args.repeat):
            for name, seconds in self._single_once().items():
                samples.setdefault(name, []).append(seconds)
        self.results["single"] = {k: statistics.median(v) for k, v in samples.items()}
        self.results["single"]["repeats"] = self.args.repeat

    def _single_once(self) -> dict[str, float]:
        whole_fit = self.fit(self.folder("single_fit"))
        whole_plain, _ = self.plain(self.folder("single_plain"), [0])
        _, out = self.fleet(self.folder("single_warm"), 2, 1)
        warm = [float(s) for s in re.findall(r"run 1: finished in ([0-9.]+)s", out)]
        _, plain_runs = self.plain(self.folder("single_plain_warm"), [0, 1])
        _, tracked_runs = self.plain(self.folder("single_plain_mlflow"), [0, 1], mlflow=True)
        return {
            "mia-bench fit (process)": whole_fit,
            "plain loop (process)": whole_plain,
            "mia-bench run in a warm worker": warm[0],
            "plain loop, second run in one process": plain_runs[1],
            "plain loop logging to MLflow, second run": tracked_runs[1],
        }

    def fleet16(self) -> None:
        runs, rows = self.args.runs, {}
        if self.old is not None:
            rows["old fleet (process per run)"] = self.fleet(
                self.folder("old16"), runs, 2, old=True
            )[0]
        rows["new fleet"] = self.fleet(self.folder("new16"), runs, 2)[0]
        for spec in filter(None, self.args.pack.split(",")):  # K or KxWORKERS
            k, _, workers = spec.partition("x")
            name = f"packed fleet (K={k}, workers={workers or 1})"
            folder = self.folder(f"pack16_{spec}")
            rows[name] = self.fleet(folder, runs, int(workers or 1), f"--pack={k}")[0]
        rows["plain loops one after another"] = self.plain(
            self.folder("plain16"), list(range(runs))
        )[0]
        self.results["fleet16"] = rows | {"runs": runs}

    def quickstart(self) -> None:
        config = str(REPO / "lightning_configs" / "quickstart.yaml")
        rows = {}
        for name, old in (("old", True), ("new", False)):
            if old and self.old is None:
                continue
            cmd = [sys.executable, "-m", "mia_bench", "fit", "-c", config]
            cmd += ["--trainer.enable_progress_bar=false", "--signals.progress=false"]
            rows[name] = timed(cmd, self.folder(f"quickstart_{name}"), self.env(old))[0]
        self.results["quickstart"] = rows


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = ["# Fleet speed (`python -m benchmarks.fleet_speed`)", ""]
    lines += [
        f"2 cores, one thread per process; Location-30 MLP, {args.epochs} epochs; "
        f"old = `{args.old}`.",
        "",
    ]
    for part, rows in results.items():
        lines += [f"## {part}", "", "| what | seconds |", "|---|---|"]
        lines += [
            f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in rows.items()
        ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data" / "location")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument(
        "--pack", default="16,8x2", help="packed fleets to time: K or KxWORKERS, comma-separated"
    )
    parser.add_argument("--old", default=OLD_REV, help="the old code's git revision ('' : none)")
    parser.add_argument("--parts", default="help,single,fleet16,quickstart")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of the single run")
    parser.add_argument("--output", type=Path, default=RESULTS / "fleet_speed")
    args = parser.parse_args()
    args.data = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix="fleet-speed-") as tmp:
        bench = Bench(args, Path(tmp))
        for part in args.parts.split(","):
            getattr(bench, part)()
            print(json.dumps({part: bench.results[part]}), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    path = args.output.with_suffix(".json")
    results = json.loads(path.read_text()) if path.is_file() else {}  # parts not rerun stay
    results.update(bench.results)
    path.write_text(json.dumps(results, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(results, args))
    print(markdown(results, args))


if __name__ == "__main__":
    main()
