"""A fit or a fleet with a bad design, view or layer stops before its first epoch.

The real CLI runs in-process on the shipped configs; each mistake must give one line
``mia-bench: error: ...``, exit status 2, no traceback, and leave no MLflow store behind
(no run was opened, no epoch trained, no worker started).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mia_bench.study.fleet as fleet
from mia_bench.checks import check_layers
from mia_bench.cli import main
from mia_bench.lightning_cli import instantiate_from_config, parse_fit_config

CONFIGS = Path(__file__).resolve().parents[1] / "lightning_configs"
QUICKSTART = str(CONFIGS / "quickstart.yaml")
TINY = [
    "--trainer.max_epochs=1",
    "--model.net.init_args.hidden=[32]",
    "--signals.progress=false",
    "--trainer.enable_progress_bar=false",
]


def _fails_at_once(capsys, in_tmp: Path, argv: list[str], *expected: str) -> str:
    """Run ``mia-bench ARGV``; assert one error line with ``expected``, exit 2, no store."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mia-bench: error:")]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in err
    assert not (in_tmp / "mlruns").exists()  # no MLflow run, checkpoint or signals
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--signals.layers=[embedding,nosuch]"],
            ["MLP has no layer 'nosuch'", "fc0, embedding, head"],
        ),
        (["--signals.views=[plain,mirror]"], ["image views mirror", "Digits", "(64,)"]),
        (["--signals.views=lira18"], ["shift_-1_-1", "Digits"]),
        (["--signals.views=[plain,nope]"], ["unknown query views ['nope']"]),
        (["--data.run_index=-1"], ["--data.run_index=-1 is outside 0..1"]),
        (["--data.run_index=2"], ["--data.run_index=2 is outside 0..1"]),
        (["--data.num_runs=3", "--data.pkeep=0.5"], ["3 * 0.5 = 1.5 is not a whole number"]),
    ],
    ids=[
        "unknown-layer",
        "mirror-on-digits",
        "lira18-on-digits",
        "unknown-view",
        "index-1",
        "index-past-end",
        "design-not-whole",
    ],
)
def test_bad_fit_stops_before_the_first_epoch(in_tmp, capsys, args, expected):
    _fails_at_once(capsys, in_tmp, ["fit", "-c", QUICKSTART, *TINY, *args], *expected)


@pytest.mark.parametrize(
    ("config", "data"),
    [("location_mlp.yaml", "Location"), ("agnews_transformer.yaml", "AGNews")],
)
def test_image_views_on_tabular_or_text_data_name_the_view_and_data(in_tmp, capsys, config, data):
    argv = ["fit", "-c", str(CONFIGS / config), "--signals.views=[plain,mirror]", *TINY[:1]]
    _fails_at_once(capsys, in_tmp, argv, "mirror", data)


def test_fleet_with_a_design_that_is_not_whole_starts_no_worker(in_tmp, capsys, monkeypatch):
    def no_worker(*args, **kwargs):
        pytest.fail("a worker was started")

    monkeypatch.setattr(fleet.Fleet, "run", no_worker, raising=False)
    argv = ["fleet", "--runs", "0:3", "-c", QUICKSTART, "--data.num_runs=3", "--data.pkeep=0.5"]
    _fails_at_once(capsys, in_tmp, [*argv, *TINY], "--data.num_runs=3, --data.pkeep=0.5")


@pytest.mark.parametrize(
    "args",
    [
        ["-c", str(CONFIGS / "cifar10_partial_cnn.yaml"), "--signals.views=lira18"],
        ["-c", QUICKSTART, "--data.num_runs=4", "--data.pkeep=0.25", "--data.run_index=3"],
    ],
    ids=["lira18-on-images", "quarter-design"],
)
def test_good_configs_pass_the_checks(args):
    config, _ = parse_fit_config(args)
    assert config.data.init_args.num_runs >= 2


def test_nested_module_paths_are_layers():
    model, _ = instantiate_from_config(Path(QUICKSTART))
    check_layers(model.net, ["fc0", "fc1.0", "embedding", "head"])


def test_a_fleet_worker_sees_the_exit_status(in_tmp):
    """Workers run ``python -m mia_bench fit``: its status must be main()'s."""
    command = [sys.executable, "-m", "mia_bench", "fit", "--data.run_index=5", *TINY]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "mia-bench: error: --data.run_index=5 is outside 0..1" in result.stderr
    assert "Traceback" not in result.stderr
