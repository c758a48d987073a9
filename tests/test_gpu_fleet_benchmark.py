"""benchmarks/gpu_fleet.py in its tiny CPU mode: a real fleet of two workers, with bf16
autocast and channels-last, whose timings come back from MLflow into the report."""

from __future__ import annotations

import json

import pytest

from benchmarks.gpu_fleet import main, summarize


@pytest.mark.slow
def test_tiny_mode_runs_a_fleet_and_reports_throughput(tmp_path, capsys):
    result = main(["--tiny", "--out", str(tmp_path / "gpu_fleet")])
    assert "tiny, on CPU" in capsys.readouterr().out  # says it measured no GPU
    saved = json.loads((tmp_path / "gpu_fleet.json").read_text())
    assert saved["summary"] == result["summary"] and saved["mode"].startswith("tiny, on CPU")
    assert "Fleet throughput: tiny, on CPU" in (tmp_path / "gpu_fleet.md").read_text()
    assert len(result["runs"]) == 2  # two workers, two runs
    for run in result["runs"]:
        assert run["precision"] == "bf16-mixed" and run["memory_format"] == "channels_last"
        assert len(run["train_epoch_s"]) == len(run["signals_s"]) == 1  # one epoch, recorded
        assert 0 < run["members"] < 512
    summary = result["summary"]
    assert summary["images_per_s_training"] > summary["images_per_s_end_to_end"] > 0
    assert 0 < summary["signals_share_at_100_epochs"] < 1
    assert summary["models_per_hour_at_100_epochs"] > 0


def test_the_summary_extrapolates_steady_epochs_to_100():
    run = {"members": 1000, "train_epoch_s": [9.0, 1.0, 1.0], "test_epoch_s": [0.5, 0.5, 0.5]}
    run["signals_s"] = [2.0, 2.0, 2.0]
    # measured 11 + 1.5 + 6 = 18.5 s of the 28.5 s fleet: 10 s startup
    summary = summarize([run, dict(run)], wall=28.5, every_n=5)
    assert summary["images_per_s_training"] == 2000.0  # two workers at 1,000 members/s
    assert summary["first_epoch_train_s"] == 9.0  # compile and warm-up, left out of steady state
    assert summary["startup_s"] == 10.0
    assert summary["run_s_at_100_epochs"] == 100 * 1.5 + 20 * 2.0 + 10.0
    assert summary["models_per_hour_at_100_epochs"] == round(2 * 3600 / 200.0, 2)
    assert summary["signals_share_at_100_epochs"] == 40.0 / 200.0
