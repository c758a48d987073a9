"""The GPU path's recipe options in a real fit (on CPU): bf16 autocast and channels-last
are part of the recipe (fingerprint, tags), torch.compile is not; every epoch logs how
long training, testing and recording took."""

from __future__ import annotations

import pytest

from mia_bench.cli import main
from mia_bench.lightning_cli import parse_fit_config
from mia_bench.store.artifacts import load_signals, local_artifact_dir
from mia_bench.store.groups import client_and_experiment
from mia_bench.store.runs import MlflowSettings, config_fingerprint

IMAGES = ["--data=mia_bench.data.SyntheticImages", "--data.num_examples=64"]
IMAGES += ["--model.net=mia_bench.nets.CNN", "--model.net.init_args.channels=[4,8,8]"]
IMAGES += ["--model.net.init_args.hidden=16"]
TINY = ["--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"]
TINY += ["--signals.progress=false", "--data.batch_size=16"]
FAST = ["--trainer.precision=bf16-mixed", "--model.memory_format=channels_last"]
COMPILE = ["--model.compile=true", "--model.compile_backend=aot_eager"]


def _fingerprint(*args: str) -> str:
    config, _ = parse_fit_config([*IMAGES, *args])
    return config_fingerprint(config.clone().as_dict())


def test_precision_and_memory_format_are_recipe_compile_is_not():
    base = _fingerprint()
    assert _fingerprint("--trainer.precision=bf16-mixed") != base
    assert _fingerprint("--model.memory_format=channels_last") != base
    assert _fingerprint(*COMPILE, "--model.compile_mode=max-autotune") == base
    assert _fingerprint("--signals.forward_batch_size=64") == base
    assert _fingerprint("--signals.autocast=true") != base  # bf16-rounded logits


@pytest.mark.slow
def test_a_bf16_channels_last_compiled_fit_is_tagged_timed_and_records_float32(in_tmp):
    assert main(["fit", *IMAGES, *TINY, *FAST, *COMPILE, "--group=fast"]) == 0
    client, exp = client_and_experiment(MlflowSettings())
    (run,) = client.search_runs([exp])
    tags = run.data.tags
    assert tags["mia.precision"] == "bf16-mixed"
    assert tags["mia.memory_format"] == "channels_last"
    assert tags["mia.compile"] == "aot_eager:default"
    assert tags["mia.fingerprint"] == _fingerprint(*TINY, *FAST)  # compile left out
    for name in ("time/train_epoch_s", "time/test_epoch_s", "time/signals_s"):
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == [0, 1], name
        assert all(m.value > 0 for m in history)
    signals = load_signals(local_artifact_dir(run.info.artifact_uri), 1)
    assert signals.logits.shape == (64, 2, 10) and str(signals.logits.dtype) == "float32"
