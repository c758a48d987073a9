"""Packed training (mia_bench.study.pack): each packed run is the run trained alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mia_bench.audit.checkpoint import load_weights
from mia_bench.lightning_cli import parse_fit_config, run_lightning_cli
from mia_bench.store.artifacts import load_signals
from mia_bench.store.checkpoints import complete_epochs
from mia_bench.store.groups import client_and_experiment, scan_group
from mia_bench.store.leases import release_held
from mia_bench.store.runs import MlflowSettings
from mia_bench.study import pack as pack_module
from mia_bench.study.pack import fit_packed, supports_packing
from mia_bench.study.pack_optim import StackedOptimizer

# digits, 4-run group: runs 0, 1, 2 have 907, 888, 898 members = 15, 14, 15 batches of
# 64, each epoch ending in a partial batch
RECIPE = [
    "--data.num_runs=4",
    "--trainer.max_epochs=3",
    "--model.net.init_args.hidden=[32, 16]",
    "--signals.progress=false",
    "--trainer.enable_progress_bar=false",
    "--checkpoints.every_n_epochs=1",
]
RUNS = [0, 1, 2]
EPOCHS = [0, 1, 2]


# --- the vectorized optimizer against torch.optim -------------------------------------
OPTIMIZERS = [
    (torch.optim.Adam, {"lr": 0.01}),
    (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.99)}),
    (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    (torch.optim.SGD, {"lr": 0.1}),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01, "dampening": 0.1}),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
]


@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS)
def test_stacked_optimizer_follows_each_runs_torch_optimizer(cls, options):
    gen = torch.Generator().manual_seed(0)
    shapes = {"w": (5, 3), "b": (3,)}
    alone = [{n: torch.randn(s, generator=gen, requires_grad=True) for n, s in shapes.items()}]
    alone += [{n: torch.randn(s, generator=gen, requires_grad=True) for n, s in shapes.items()}]
    optimizers = [cls(list(p.values()), **options) for p in alone]
    stacked = {n: torch.stack([p[n].detach() for p in alone]).requires_grad_() for n in shapes}
    defaults = {k: v for k, v in optimizers[0].param_groups[0].items() if k != "params"}
    opt = StackedOptimizer(cls.__name__, stacked, defaults)
    steps = [[True, True], [True, False], [False, True], [True, True], [False, True]]
    for active in steps:  # run 1 misses its 2nd step, run 0 its 3rd and 5th
        grads = {n: torch.randn((2, *s), generator=gen) for n, s in shapes.items()}
        for n in shapes:
            stacked[n].grad = grads[n].clone()
        opt.step(torch.tensor(active))
        for k, (params, optimizer) in enumerate(zip(alone, optimizers, strict=True)):
            if active[k]:
                for n, p in params.items():
                    p.grad = grads[n][k].clone()
                optimizer.step()
    for k, params in enumerate(alone):
        for n, p in params.items():
            torch.testing.assert_close(stacked[n][k], p.detach(), rtol=1e-6, atol=1e-7)
        state = opt.run_state(k, list(shapes))
        want = optimizers[k].state_dict()["state"]
        for i in want:
            for key, value in want[i].items():
                if value is not None:
                    torch.testing.assert_close(state[i][key], value, rtol=1e-6, atol=1e-7)


def test_stacked_optimizer_state_round_trips():
    params = {"w": torch.zeros(3, 2, requires_grad=True)}
    opt = StackedOptimizer(
        "Adam", params, {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0}
    )
    params["w"].grad = torch.ones(3, 2)
    opt.step(torch.tensor([True, False, True]))
    again = StackedOptimizer("Adam", {"w": torch.zeros(3, 2)}, opt.defaults)
    for k in range(3):
        again.load_run_state(k, ["w"], opt.run_state(k, ["w"]))
    assert again.steps.tolist() == [1, 0, 1]
    torch.testing.assert_close(again.state["w"]["exp_avg"], opt.state["w"]["exp_avg"])


# --- what can be packed ----------------------------------------------------------------
def test_supports_packing_accepts_the_mlp_recipes():
    for name in ("quickstart", "location_mlp", "purchase100_mlp"):
        config, _ = parse_fit_config(["-c", f"lightning_configs/{name}.yaml"])
        assert supports_packing(config) is None, name


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["-c", "lightning_configs/defense/dropout.yaml"], "dropout"),
        (["-c", "lightning_configs/defense/dp_sgd.yaml"], "defense mia_bench.defenses.DPSGD"),
        (["-c", "lightning_configs/early_stopping.yaml"], "trainer.callbacks"),
        (["--model.optimizer=torch.optim.RMSprop"], "optimizer RMSprop"),
        (["--model.optimizer.init_args.amsgrad=true"], "amsgrad=True"),
        (["--trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val"),
        (["--model.class_path=lightning.LightningModule"], "packing is for mia-bench's Classifier"),
        (
            ["--model.scheduler=torch.optim.lr_scheduler.StepLR", "--model.scheduler.step_size=2"],
            "scheduler",
        ),
    ],
)
def test_supports_packing_names_what_it_cannot_reproduce(extra, reason):
    config, _ = parse_fit_config(["-c", "lightning_configs/quickstart.yaml", *extra])
    assert reason in (supports_packing(config) or "")


def test_supports_packing_refuses_cnns_and_augmentations():
    config, _ = parse_fit_config(["-c", "lightning_configs/cifar10_partial_cnn.yaml"])
    assert "packing is for MLPs" in supports_packing(config)
    dict_config = config.clone().as_dict()
    dict_config["model"]["init_args"]["net"] = {"class_path": "mia_bench.nets.MLP", "init_args": {}}
    dict_config["data"]["init_args"]["augment"] = ["crop"]
    assert "augmentations" in supports_packing(dict_config)


def test_fit_packed_refuses_an_unpackable_recipe(in_tmp):
    with pytest.raises(ValueError, match="cannot train group 'g' packed: dropout"):
        fit_packed(["--model.net.init_args.dropout=0.5", *RECIPE], RUNS, "g")


# --- packed runs are the runs trained alone ----------------------------------------------
def _fit_alone(run_index: int, group: str) -> None:
    try:
        run_lightning_cli(["fit", *RECIPE, f"--group={group}", f"--data.run_index={run_index}"], "")
    finally:
        release_held()


def _members(group: str):
    client, exp = client_and_experiment(MlflowSettings())
    return client, scan_group(client, exp, group)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Group ``packed`` (runs 0-2 in one pack) and ``alone`` (each by mia-bench fit, whose
    tensor-indexed train loader draws epoch_order(members, seed, epoch) too), in one store."""
    folder = tmp_path_factory.mktemp("pack")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert fit_packed(RECIPE, RUNS, "packed") == {0: 0, 1: 0, 2: 0}
        for i in RUNS:
            _fit_alone(i, "alone")
        yield folder


def test_packed_signals_equal_the_runs_trained_alone(trained, monkeypatch):
    monkeypatch.chdir(trained)
    _, packed = _members("packed")
    _, alone = _members("alone")
    assert [r.run_index for r in packed.members] == RUNS == [r.run_index for r in alone.members]
    assert packed.fingerprint == alone.fingerprint  # one recipe: a fleet may mix them
    for p, a in zip(packed.members, alone.members, strict=True):
        assert p.epochs() == EPOCHS == a.epochs()
        assert p.tags["mia.recorded_epochs"] == a.tags["mia.recorded_epochs"]
        assert p.tags["mia.seed"] == a.tags["mia.seed"]
        for epoch in EPOCHS:
            ps, as_ = load_signals(p.artifact_dir, epoch), load_signals(a.artifact_dir, epoch)
            np.testing.assert_array_equal(ps.labels, as_.labels)
            np.testing.assert_allclose(ps.logits, as_.logits, rtol=1e-4, atol=1e-5)
        assert not np.allclose(
            load_signals(p.artifact_dir, 0).logits, load_signals(p.artifact_dir, 2).logits
        )  # it did train


def test_packed_runs_differ_from_each_other(trained, monkeypatch):
    monkeypatch.chdir(trained)
    _, packed = _members("packed")
    first, second = (load_signals(r.artifact_dir, 0).logits for r in packed.members[:2])
    assert not np.allclose(first, second)


def test_packed_metrics_equal_the_runs_trained_alone(trained, monkeypatch):
    monkeypatch.chdir(trained)
    client, packed = _members("packed")
    _, alone = _members("alone")
    for p, a in zip(packed.members, alone.members, strict=True):
        for key in ("train/acc", "train/loss", "test/acc", "test/loss", "gap/acc", "mia/auc/loss"):
            got = [(m.step, m.value) for m in client.get_metric_history(p.run_id, key)]
            want = [(m.step, m.value) for m in client.get_metric_history(a.run_id, key)]
            assert [s for s, _ in sorted(got)] == EPOCHS, key  # one value per epoch
            np.testing.assert_allclose(sorted(got), sorted(want), rtol=1e-4, atol=1e-5, err_msg=key)
        params_p = client.get_run(p.run_id).data.params
        params_a = client.get_run(a.run_id).data.params
        assert {k: v for k, v in params_p.items() if k != "cfg.group"} == {
            k: v for k, v in params_a.items() if k != "cfg.group"
        }


def test_packed_checkpoints_hold_what_fit_would_have_saved(trained, monkeypatch):
    monkeypatch.chdir(trained)
    _, packed = _members("packed")
    _, alone = _members("alone")
    for p, a in zip(packed.members, alone.members, strict=True):
        folder_p = trained / "mlruns" / "checkpoints" / p.run_id
        folder_a = trained / "mlruns" / "checkpoints" / a.run_id
        assert complete_epochs(folder_p) == EPOCHS and (folder_p / "last.ckpt").exists()
        got = torch.load(folder_p / "last.ckpt", weights_only=True)
        want = torch.load(folder_a / "last.ckpt", weights_only=True)
        assert (got["epoch"], got["global_step"]) == (want["epoch"], want["global_step"])
        assert got["callbacks"]["SignalRecorder"] == want["callbacks"]["SignalRecorder"]
        assert got["loops"] == want["loops"]  # mia-bench fit --ckpt_path last resumes it
        for key, value in want["state_dict"].items():
            torch.testing.assert_close(got["state_dict"][key], value, rtol=1e-4, atol=1e-5)
        state_p, state_a = got["optimizer_states"][0], want["optimizer_states"][0]
        assert state_p["param_groups"] == state_a["param_groups"]
        for i, entry in state_a["state"].items():
            torch.testing.assert_close(state_p["state"][i]["step"], entry["step"])
            torch.testing.assert_close(
                state_p["state"][i]["exp_avg"], entry["exp_avg"], rtol=1e-3, atol=1e-6
            )
        from mia_bench.lightning_cli import instantiate_from_config

        model, _ = instantiate_from_config(p.artifact_dir / "config.yaml")
        assert load_weights(model, folder_p / "epoch_001.ckpt") == 1  # record/audit read it


def test_audit_of_a_packed_group(trained, monkeypatch):
    """``mia-bench audit --group packed`` works as for the group trained alone, and
    finds the same leakage."""
    from mia_bench.cli import main

    monkeypatch.chdir(trained)
    docs = {}
    for group in ("packed", "alone"):
        args = ["audit", "--group", group, "--targets", "2", "--attacks", "[loss, lira_offline]"]
        assert main([*args, "--allow-partial", "--output", f"{group}.json"]) == 0
        docs[group] = json.loads((trained / f"{group}.json").read_text())
    assert docs["packed"]["markdown"].replace("packed", "alone") == docs["alone"]["markdown"]


def test_finished_runs_are_skipped(trained, monkeypatch):
    monkeypatch.chdir(trained)
    assert fit_packed(RECIPE, [0, 2], "packed") == {0: 76, 2: 76}


# --- interrupted packs resume -------------------------------------------------------------
class Killed(BaseException):
    """Stands in for a kill: not an Exception, so nothing in the pack catches it."""


def test_a_pack_interrupted_mid_epoch_end_resumes_each_run(trained, monkeypatch):
    """Killed after run 0 completed epoch 1 but before runs 1 and 2 did: on resume run 0
    starts at epoch 2, runs 1 and 2 at epoch 1, and every run ends where the
    uninterrupted pack ended."""
    monkeypatch.chdir(trained)
    real_end = pack_module.Pack._epoch_end

    def end_then_die(self, k, sums):
        if self.runs[k].trainer.current_epoch == 1 and k == 1:
            raise Killed
        real_end(self, k, sums)

    monkeypatch.setattr(pack_module.Pack, "_epoch_end", end_then_die)
    with pytest.raises(Killed):
        fit_packed(RECIPE, RUNS, "resumed")
    release_held()  # the kill's process exit would have released them
    monkeypatch.setattr(pack_module.Pack, "_epoch_end", real_end)
    client, half = _members("resumed")
    assert half.members == []
    folders = {i: trained / "mlruns" / "checkpoints" / r[0].run_id for i, r in half.slots.items()}
    assert {i: complete_epochs(f) for i, f in folders.items()} == {0: [0, 1], 1: [0], 2: [0]}
    status = fit_packed(RECIPE, RUNS, "resumed", resume={0: True, 1: True, 2: True})
    assert status == {0: 0, 1: 0, 2: 0}
    _, resumed = _members("resumed")
    _, packed = _members("packed")
    for r, p in zip(resumed.members, packed.members, strict=True):
        assert r.run_id == half.slots[r.run_index][0].run_id  # the same MLflow run, continued
        for epoch in EPOCHS:
            np.testing.assert_allclose(
                load_signals(r.artifact_dir, epoch).logits,
                load_signals(p.artifact_dir, epoch).logits,
                rtol=1e-5,
                atol=1e-6,
            )
        steps = [m.step for m in client.get_metric_history(r.run_id, "test/acc")]
        assert sorted(steps) == EPOCHS  # each epoch logged once
