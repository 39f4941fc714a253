#!/usr/bin/env bash
# The host cost-model calibration study of docs/benchmarks.md ("Calibrated host cost models").
#
# Run it on an IDLE host (nothing else computing: the report warns otherwise, and idle numbers are
# the point). For each of the three spaces at 224 px: micro-benchmarks of every layer variant
# (proxyless, proxyless_enlarged) or op (mobilenet_v3_like), 58 + 2 training and 50 held-out
# networks, 3 interleaved rounds; then the proxyless calibration again beside a CPU-heavy job
# (one busy loop per core), reusing the idle run's exported models, which must raise the noise
# warnings. Ends with the markdown table for docs/benchmarks.md and the plots under $OUT/figures.
#
#     tools/run_calibration_study.sh [OUT]        # OUT defaults to runs/calibration_study
#
# Measured on the 2-core host (2026-12-01): proxyless 4.5 min, proxyless_enlarged 10.5 min,
# mobilenet_v3_like 7 min, loaded proxyless 2.5 min: 24 min. Rerunning after a kill resumes
# from the caches. Disk: the exported networks take a few GB (deleted at the end unless
# KEEP_MODELS=1). CPU=<n> pins the timing to core n (default 1); PY is the interpreter; EXTRA adds
# (overriding) flags, e.g. EXTRA="--image_size=32 --num_train=3 --max_models=30" for a dry run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/calibration_study}
PY=${PY:-.venv/bin/python}
CPU=${CPU:-1}
export TF_CPP_MIN_LOG_LEVEL=2
COMMON=(--image_size=224 --num_classes=1001 --num_threads=1 "--cpus=$CPU" --seed=0 --num_train=58
        --num_heldout=50 --rounds=5 --micro_rounds=5 ${EXTRA:-})
mkdir -p "$OUT/figures"
start=$(date +%s)
for space in proxyless proxyless_enlarged mobilenet_v3_like; do
  echo "=== $space (idle) $(date -u +%FT%TZ)"
  "$PY" tools/calibrate_cost_model.py "--space=$space" "--output_dir=$OUT/$space" "${COMMON[@]}" 2>&1 \
    | grep -v -e '^W0000' -e '^I0000' -e 'trackable_obj' -e '^WARNING: All log' | tee "$OUT/$space.log"
done

echo "=== proxyless beside a CPU-heavy job $(date -u +%FT%TZ)"
busy=()
for _ in $(seq "$(nproc)"); do (while :; do :; done) & busy+=($!); done
trap 'kill "${busy[@]}" 2>/dev/null || true' EXIT
"$PY" tools/calibrate_cost_model.py --space=proxyless "--output_dir=$OUT/proxyless_loaded" \
  "--model_dir=$OUT/proxyless/models" "${COMMON[@]}" 2>&1 \
  | grep -v -e '^W0000' -e '^I0000' -e 'trackable_obj' -e '^WARNING: All log' | tee "$OUT/proxyless_loaded.log"
kill "${busy[@]}" 2>/dev/null || true
trap - EXIT

echo "=== summary (study wall time $(( ($(date +%s) - start) / 60 )) min)"
for run in proxyless proxyless_enlarged mobilenet_v3_like proxyless_loaded; do
  cp "$OUT/$run/calibration.png" "$OUT/figures/calibration_host_$run.png"
done
"$PY" - "$OUT" <<'PYTHON' | tee "$OUT/summary.md"
import json, sys
from tunas_keras.cost_models.calibration_report import study_markdown
out = sys.argv[1]
runs = {"proxyless": "proxyless, idle", "proxyless_enlarged": "proxyless_enlarged, idle",
        "mobilenet_v3_like": "mobilenet_v3_like, idle", "proxyless_loaded": "proxyless, beside a busy loop per core"}
reports = {label: json.load(open(f"{out}/{run}/calibration_report.json")) for run, label in runs.items()}
print(study_markdown(reports))
for label, report in reports.items():
    print(f"\n{label}: " + ("; ".join(report["warnings"]) or "no noise warnings"))
PYTHON
if [ "${KEEP_MODELS:-0}" != 1 ]; then rm -rf "$OUT"/*/models/network; fi
