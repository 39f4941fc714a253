#!/usr/bin/env bash
# One search with several latency targets against one search per target, on the embedded data
# (docs/benchmarks.md, "Several latency targets in one search", issue 19).
#
# Per seed: one multi-target search (--target_latency=$TARGETS) and one single-target search per
# target, all with the same flags and the same number of steps; then every found architecture is
# trained standalone with one recipe (tools/train.py --protocol=valid). Ends with a markdown table:
# each target's final cost vs its target and the standalone accuracy, multi vs single, and the
# wall / CPU time of the one multi-target search vs the single-target ones.
#
#     tools/compare_multi_target.sh [OUT]        # OUT defaults to runs/compare_multi_target
#
# Environment knobs: TARGETS (default 60,84,110), SEEDS (default "0 1 2"), SEARCH and TRAIN (the
# flags of every search / training), PY (the interpreter), NICE (e.g. "nice -n 10").
# The default scale is the setting with a real accuracy signal ("A search with a real accuracy
# signal": 64 px, zero-init residual, 1,000 search steps; K = 6, i.e. 2 per target in the
# multi-target search) and takes many hours on 2 CPU cores. The recorded run (a reduced scale; it
# ran on the search defaults before issue 18, which today need --nozero_init_residual
# --validation_batch_multiplier=4 added to SEARCH):
#     SEEDS=0 SEARCH="--image_size=32 --steps=48 --batch_size=24 --architectures_per_step=3" \
#         TRAIN="--image_size=32 --steps=60 --batch_size=32" NICE="nice -n 10" tools/compare_multi_target.sh
# Rerunning resumes: finished searches and trainings are skipped (their model dirs hold results).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/compare_multi_target}
PY=${PY:-.venv/bin/python}
TARGETS=${TARGETS:-60,84,110}
SEEDS=${SEEDS:-0 1 2}
SEARCH=${SEARCH:---image_size=64 --zero_init_residual --steps=1000 --batch_size=48 --architectures_per_step=6}
TRAIN=${TRAIN:---image_size=64 --zero_init_residual --optimizer=adam --learning_rate=0.016 --steps=400 --batch_size=32}
NICE=${NICE:-}
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$OUT"

# timed NAME DONE_FILE COMMAND...: runs COMMAND unless DONE_FILE exists; appends "NAME wall_s cpu_s" to times.txt.
timed() {
  local name=$1 done_file=$2
  shift 2
  if [ -e "$done_file" ]; then echo "=== $name: done before"; return; fi
  echo "=== $name $(date -u +%FT%TZ)"
  # shellcheck disable=SC2086
  $NICE "$PY" - "$OUT/times.txt" "$name" "$@" <<'PYTHON'
import resource, subprocess, sys, time
start = time.time()
code = subprocess.call(sys.argv[3:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
if code == 0:
    with open(sys.argv[1], "a") as handle:
        handle.write(f"{sys.argv[2]} {time.time() - start:.1f} {usage.ru_utime + usage.ru_stime:.1f}\n")
sys.exit(code)
PYTHON
}

for seed in $SEEDS; do
  dir="$OUT/seed$seed"
  # shellcheck disable=SC2086
  timed "seed$seed/multi" "$dir/multi/architectures.json" "$PY" tools/search.py "--target_latency=$TARGETS" $SEARCH \
    "--seed=$seed" "--model_dir=$dir/multi" --progress_bar=false
  for target in ${TARGETS//,/ }; do
    # shellcheck disable=SC2086
    timed "seed$seed/single_$target" "$dir/single_$target/architectures.json" "$PY" tools/search.py \
      "--target_latency=$target" $SEARCH "--seed=$seed" "--model_dir=$dir/single_$target" --progress_bar=false
  done
  for search in "$dir"/multi "$dir"/single_*; do
    for file in $("$PY" -c 'import json, sys; print(" ".join(e["file"] for e in json.load(open(sys.argv[1]))["architectures"]))' \
        "$search/architectures.json"); do
      name="$(basename "$search")_${file%.json}"
      # shellcheck disable=SC2086
      timed "seed$seed/train_$name" "$dir/train_$name/train_result.json" "$PY" tools/train.py \
        "--architecture=$search/$file" --protocol=valid $TRAIN "--seed=$seed" "--model_dir=$dir/train_$name" \
        --progress_bar=false
    done
  done
done

"$PY" - "$OUT" "$TARGETS" $SEEDS <<'PYTHON' | tee "$OUT/summary.md"
import collections, glob, json, os, sys
import numpy as np
out, targets, seeds = sys.argv[1], [float(t) for t in sys.argv[2].split(",")], sys.argv[3:]
times = {}
for line in open(os.path.join(out, "times.txt")):
    name, wall, cpu = line.split()
    times[name] = (float(wall), float(cpu))
rows = collections.defaultdict(list)  # (target, method) -> [(cost, accuracy)]
for seed in seeds:
    directory = os.path.join(out, f"seed{seed}")
    for search in sorted(glob.glob(os.path.join(directory, "multi")) + glob.glob(os.path.join(directory, "single_*"))):
        method = "multi-target" if search.endswith("multi") else "single-target"
        for entry in json.load(open(os.path.join(search, "architectures.json")))["architectures"]:
            name = f"{os.path.basename(search)}_{entry['file'][:-5]}"
            trained = json.load(open(os.path.join(directory, f"train_{name}", "train_result.json")))
            rows[entry["target_latency"], method].append((entry["cost"], trained["top1"]))
print(f"| target | search | seeds | final cost (mean; per seed) | vs target | standalone valid top-1 (mean; per seed) |")
print("|---|---|---|---|---|---|")
for target in targets:
    for method in ("multi-target", "single-target"):
        values = rows[target, method]
        costs, accuracies = [c for c, _ in values], [a for _, a in values]
        print(
            f"| {target:g} | {method} | {len(values)} | {np.mean(costs):.2f} ({', '.join(f'{c:.2f}' for c in costs)}) | "
            f"{100 * (np.mean(costs) / target - 1):+.1f} % | {np.mean(accuracies):.3f} ({', '.join(f'{a:.3f}' for a in accuracies)}) |"
        )
for seed in seeds:
    multi = times.get(f"seed{seed}/multi")
    singles = [times.get(f"seed{seed}/single_{t:g}") for t in targets]
    if multi and all(singles):
        wall, cpu = sum(s[0] for s in singles), sum(s[1] for s in singles)
        print(
            f"\nseed {seed}: the multi-target search {multi[0]:.0f} s wall / {multi[1]:.0f} s CPU; the {len(targets)} "
            f"single-target searches {wall:.0f} s wall / {cpu:.0f} s CPU together (ratio {multi[0] / wall:.2f} wall, "
            f"{multi[1] / cpu:.2f} CPU)"
        )
PYTHON
