#!/usr/bin/env bash
# Screenshots of the MLflow UI after the quickstart and after a small compare, taken with
# headless Chromium (Debian's `chromium`, driven by playwright, which downloads nothing):
#   python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
#   PW=/tmp/pw/bin/python bash docs/screenshots/take.sh [WORKDIR]
# Writes docs/screenshots/*.png; every server it starts listens on 127.0.0.1 and is stopped.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="$repo/docs/screenshots"
work="${1:-$(mktemp -d)}"
bin="$repo/.venv/bin"
port=5077
mkdir -p "$work" && cd "$work"
export OMP_NUM_THREADS=1

# the quickstart, then a small compare: two recipes of 2 runs each, audited
[ -s quickstart.txt ] || "$bin/mia-bench" fit -c quickstart > quickstart.txt
for recipe in none dropout; do
  extra=(); [ "$recipe" = dropout ] && extra=(-c defense/dropout)
  "$bin/mia-bench" fleet --runs 0:2 --workers 1 -c quickstart "${extra[@]}" \
    --group "digits_$recipe" --trainer.max_epochs 10 > "fleet_$recipe.txt"
  [ -s "audit_$recipe.txt" ] || "$bin/mia-bench" audit --group "digits_$recipe" --targets 2 \
    --attacks loss,confidence > "audit_$recipe.txt"
done
"$bin/mia-bench" compare > compare.txt || true

"$bin/mlflow" ui --backend-store-uri "sqlite:///$work/mlruns/mlflow.db" --host 127.0.0.1 \
  --port $port > mlflow_ui.log 2>&1 &
ui=$!
trap 'kill $ui 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$port/health" > /dev/null; do sleep 1; done

run=$("$bin/python" - "$work" <<'EOF'
import sys
from mlflow.tracking import MlflowClient
client = MlflowClient(f"sqlite:///{sys.argv[1]}/mlruns/mlflow.db")
exp = client.get_experiment_by_name("mia-bench")
(run,) = client.search_runs([exp.experiment_id], "tags.`mia.group` = 'quickstart'")
print(exp.experiment_id, run.info.run_id)
EOF
)
read -r exp run_id <<< "$run"
base="http://127.0.0.1:$port"
ml="workflowType=machine_learning"
"${PW:-python3}" "$repo/docs/screenshots/shoot.py" "$out" \
  "first_page=$base/" \
  "run_charts=$base/#/experiments/$exp/runs/$run_id/model-metrics?$ml" \
  "run_figure=$base/#/experiments/$exp/runs/$run_id/artifacts/mia_vs_epoch.png?$ml" \
  "training_runs=$base/#/experiments/$exp/runs?compareRunsMode=CHART&$ml"
echo "screenshots in $out; outputs in $work"
