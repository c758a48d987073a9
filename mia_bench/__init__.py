"""mia-bench: membership-inference attacks inside the PyTorch Lightning + MLflow workflow.

Importing the package sets quiet, offline defaults for the libraries it drives (each only
when the user has not set it): no MLflow telemetry, no albumentations version check, no
MLflow artifact progress bars. (An unreachable tracking server is reported in seconds by
:func:`mia_bench.store.database.open_store`, not by MLflow's minutes of retries.)
"""

import os as _os

_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow 3 reports usage to its telemetry host
    "DO_NOT_TRACK": "true",  # the cross-tool opt-out MLflow also honours
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations checks PyPI at import
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
for _key, _value in _DEFAULTS.items():
    _os.environ.setdefault(_key, _value)
