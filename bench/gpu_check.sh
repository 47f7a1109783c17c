#!/usr/bin/env bash
# Every CUDA path of the suite in one prepared run, for a lent GPU machine (each step has a time
# limit: 12.5 minutes at most in all; not yet run on a GPU). Writes under $OUT: the logs, and
# gpu-check.tar.gz with every folder it made (the speed run with its report, the emulated 8 GiB
# plan, the profiles with their memory snapshot, the regression-check plumbing). Needs no install: run from the repository root.
#
#   OUT=/tmp/gpu-check bash bench/gpu_check.sh
#   PRESETS=tiny SIZES=201x201 OUT=/tmp/rehearsal bash bench/gpu_check.sh     # rehearsal on a CPU
set -uo pipefail
OUT=${OUT:-gpu-check}
PRESETS=${PRESETS:-small,medium}
SIZES=${SIZES:-201x201,1280x152}
work=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step() {  # name, time limit in seconds, command...
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.log"
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "   exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/summary.log"
    tail -n 25 "$OUT/$name.log"
}

python - <<'PY' | tee "$OUT/summary.log"
import torch
from bench.trackers.device import device_facts, resolve_device
facts = device_facts(resolve_device("auto"))
print({k: v for k, v in facts.as_dict().items() if k != "extra"})
PY

# 1. The default matrix, narrowed: CUDA-synchronised timing, NVML memory/energy/clocks, every
#    attention kernel (flash, mem-efficient, cudnn, math, eager), tf32/amp-fp16/amp-bf16, the report.
step speed 330 python -m pytest bench/test_speed.py --benchmark-autosave --ae-matrix default \
    --ae-presets "$PRESETS" --ae-sizes "$SIZES" --ae-min-time 0.3 --ae-results "$work/speed" -q -p no:cacheprovider

# 2. The 8 GiB plan: measured search under an emulated RTX 4060, with the prediction's error per row.
step plan 180 python -m bench plan --budget 8GiB --gpu rtx4060 --presets "$PRESETS" --sizes "$SIZES" \
    --precisions amp-bf16 --attention flash,eager --modes train --results "$work/plan"

# 3. Profiles: device self time, the idle row, the CUDA memory snapshot and the roofline.
step profile 90 python -m bench profile --matrix default --presets tiny --sizes 1280x152 --precisions amp-bf16 \
    --attention flash,eager --checkpointing off --modes train --steps 2 --out "$work/profile"

# 4. The child launcher on CUDA and the regression check against the speed run's own JSON.
step launcher 90 python -m bench run --matrix smoke --launcher subprocess --min-time 0.2 \
    --results "$work/launcher"
step compare 60 bash -c "python -m bench compare $work/speed \$(ls -t .benchmarks/*/*/*.json | head -1) --markdown $work/compare.md"

# Drop the memory snapshots' bulk if the archive would not come back (16 MiB a file).
tar -czf "$OUT/gpu-check.tar.gz" -C "$work" .
if [ "$(stat -c %s "$OUT/gpu-check.tar.gz")" -gt 15000000 ]; then
    find "$work" -name 'memory_snapshot.pickle' -delete
    find "$work" -name 'trace.json' -delete
    tar -czf "$OUT/gpu-check.tar.gz" -C "$work" .
fi
ls -la "$OUT" | tee -a "$OUT/summary.log"
