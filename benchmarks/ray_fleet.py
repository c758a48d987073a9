"""Fleet throughput through Ray against the local backend, on this machine.

The 16-run Location-30 MLP fleet (``lightning_configs/location_mlp.yaml``: 30 epochs,
whole-pool logits and the five threshold attacks every epoch), one thread per run, two
runs at once, measured in the same run:

* ``local``: ``--backend local --workers 2`` with the SQLite store (the baseline);
* ``ray``: ``--backend ray --ray.cpus_per_run 1`` on a Ray instance the fleet starts
  (2 CPUs), same store: Ray's start-up and scheduling are in the time;
* ``ray_server``: the same through an ``mlflow server`` on PostgreSQL (pgserver, unix
  socket) with served artifacts, so every signal file is uploaded and every lease and
  metric goes over HTTP: the setup of a real cluster, minus the network.

Wall time of each whole fleet command; results in ``benchmarks/results/ray_fleet.json``
and ``.md``::

    python -m benchmarks.ray_fleet --data ../shared/data/location          # about 6 minutes
    python -m benchmarks.ray_fleet --data ../shared/data/location --runs 4 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests"))

from services import mlflow_server, postgres  # noqa: E402

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def fleet_seconds(args: argparse.Namespace, folder: Path, backend: list[str], store: str) -> float:
    """Wall seconds of one whole fleet (which must train every run)."""
    folder.mkdir(parents=True)
    command = [
        sys.executable, "-m", "mia_bench", "fleet", "-c",
        str(REPO / "lightning_configs" / "location_mlp.yaml"),
        "--runs", f"0:{args.runs}", "--group", "bench", f"--data.root={args.data}",
        f"--data.num_runs={max(16, args.runs)}", f"--trainer.max_epochs={args.epochs}",
        f"--mlflow.tracking_uri={store}", *backend,
    ]  # fmt: skip
    env = os.environ | ONE_THREAD | {"MIA_BENCH_CACHE": str(folder / "cache")}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or done.stdout.count(": finished in ") != args.runs:
        raise RuntimeError(f"{backend} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return round(seconds, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of dataset_location.tgz")
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    args.data = str(Path(args.data).resolve())
    sqlite = "sqlite:///mlruns/mlflow.db"
    ray = ["--backend", "ray", "--ray.cpus_per_run", "1"]
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["local"] = fleet_seconds(args, work / "local", ["--workers", "2"], sqlite)
        results["ray"] = fleet_seconds(args, work / "ray", ray, sqlite)
        srv = work / "server"
        with postgres(srv / "pg") as db, mlflow_server(db, srv / "art", srv / "log") as uri:
            results["ray_server"] = fleet_seconds(args, work / "ray_server", ray, uri)
    report = {
        "runs": args.runs,
        "epochs": args.epochs,
        "cores": os.cpu_count(),
        "seconds": results,
        "runs_per_hour": {k: round(args.runs / v * 3600, 1) for k, v in results.items()},
        "speed_vs_local": {k: round(results["local"] / v, 3) for k, v in results.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_fleet.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Fleet throughput through Ray (`python -m benchmarks.ray_fleet`)", "",
        f"{args.runs} Location-30 MLP runs of {args.epochs} epochs, 2 at once, one thread each, "
        f"{report['cores']} cores.", "",
        "| backend | seconds | runs/hour | speed vs local |", "|---|---|---|---|",
    ]  # fmt: skip
    for key, seconds in results.items():
        lines.append(f"| {key} | {seconds} | {report['runs_per_hour'][key]} | "
                     f"{report['speed_vs_local'][key]:.2f}x |")  # fmt: skip
    (RESULTS / "ray_fleet.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
