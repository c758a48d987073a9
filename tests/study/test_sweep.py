"""mia-bench sweep: trains, audits and compares recipes; a second call redoes nothing."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from mia_bench.cli import main
from mia_bench.store.groups import client_and_experiment
from mia_bench.store.runs import MlflowSettings


@pytest.mark.slow
def test_sweep_is_resumable(in_tmp):
    sweep = {
        "name": "tiny",
        "args": [
            "--data.num_runs=4",
            "--trainer.max_epochs=2",
            "--model.net.init_args.hidden=[16]",
            "--data.batch_size=256",
        ],
        "runs": "0:3",
        "workers": 2,
        "recipes": {"base": {}, "smooth": {"args": ["--model.label_smoothing=0.2"]}},
        "audit": {"epoch": "last", "targets": 2, "attacks": ["loss", "lira_offline"]},
        "extra_audits": [{"group": "smooth", "references": ["base"]}],
        "compare": {"attacks": ["loss", "lira_offline"], "output_dir": "cmp"},
    }
    (in_tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    assert main(["sweep", "sweep.yaml"]) == 0
    client, exp_id = client_and_experiment(MlflowSettings())
    trained = client.search_runs([exp_id], "tags.`mia.run_index` != ''")
    audits = client.search_runs([exp_id], "tags.`mia.sweep` = 'tiny'")
    assert len(trained) == 6 and len(audits) == 3
    table = pd.read_csv(in_tmp / "cmp" / "compare.csv")
    assert sorted(zip(table["group"], table["references"], strict=True)) == [
        ("base", "base"),
        ("smooth", "base"),
        ("smooth", "smooth"),
    ]
    smooth = client.search_runs([exp_id], "tags.`mia.group` = 'smooth'")
    assert all(r.data.params["cfg.model.label_smoothing"] == "0.2" for r in smooth)

    assert main(["sweep", "sweep.yaml"]) == 0  # nothing left to do
    assert len(client.search_runs([exp_id], "tags.`mia.run_index` != ''")) == 6
    assert len(client.search_runs([exp_id], "tags.`mia.sweep` = 'tiny'")) == 3
