#!/usr/bin/env bash
# Every CUDA path of the suite in one prepared run, for a lent GPU machine with no network:
#
#   bash bench/gpu_check.sh OUT          (or OUT=DIR bash bench/gpu_check.sh), from the repository root
#
# Needs torch, pytest, pytest-benchmark, pandas, matplotlib, jinja2 (nvidia-ml-py and scikit-image
# where present); nothing is installed (PYTHONPATH=.). Refuses in one line, in seconds, when torch
# sees no CUDA GPU. GPU_CHECK_ALLOW_CPU=1 allows the CPU for a rehearsal only (every step then runs
# on the CPU, at batch 2, and summary.log says so); on a busy 2-core machine narrow the speed step
# with FAMILIES (and PRECISIONS) so that it ends inside its limit:
#
#   GPU_CHECK_ALLOW_CPU=1 PRESETS=tiny SIZES=201x201 FAMILIES=transformer PRECISIONS=fp32 bash bench/gpu_check.sh /tmp/rehearsal
#
# Steps, each under its own time limit (together 470 s: under the 8 minutes the check is sized for
# and the 600 s a borrowed GPU machine gives one command; TOTAL_S, default 540, caps them all; a
# step at its limit gets SIGINT, so pytest and `bench` keep what they wrote, then SIGKILL 15 s on):
#   speed     the default matrix narrowed to PRESETS x SIZES at batch 32 (BATCH) (every attention
#             kernel, every precision, checkpointing, the flat layout, the CNN), pytest face, CUDA
#             events, NVML memory/energy/clocks, the report; pytest-benchmark's JSON (with its
#             samples) kept in the step's folder
#   plan-1/2  the 8 GiB plan emulated on this GPU (an RTX 4060), one configuration each (a
#             transformer with flash attention; the CNN, whose cuDNN loads late): rows on disk per step
#   profile   one case under torch.profiler, with the CUDA memory snapshot
#   launcher  `bench run` with a child process per case
#   compare   a second run of the launcher's cases, compared against it; and the speed run's
#             pytest-benchmark JSON against its own folder
# Each step's folder (its log included) is packed into OUT/<step>.tar.gz the moment the step ends,
# so a check stopped at any point still returns every step finished before. OUT holds at most 8
# files: summary.log and one archive per step.
set -uo pipefail

OUT=${1:-${OUT:-}}
if [ -z "$OUT" ]; then
    echo "gpu_check: usage: bash bench/gpu_check.sh OUT (a folder for the results); nothing run" >&2
    exit 2
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}

# One line, and no folder made, when this machine cannot run the check.
why=$("$PYTHON" - 2>/dev/null <<'PY'
import importlib.util, os
missing = [m for m in ("torch", "pytest", "pytest_benchmark", "pandas", "matplotlib", "jinja2") if importlib.util.find_spec(m) is None]
if missing:
    print(f"missing Python package(s): {', '.join(missing)}")
else:
    import torch
    if not torch.cuda.is_available():
        if os.environ.get("GPU_CHECK_ALLOW_CPU") == "1":
            print("cpu")
        else:
            print(f"CUDA is not available to torch {torch.__version__} (no GPU, no driver, or a CPU build)")
    else:
        print("cuda")
PY
)
case "$why" in
    cuda) DEVICE=${DEVICE:-cuda} ;;
    cpu) DEVICE=cpu ;;
    "") echo "gpu_check: refused: $PYTHON could not import torch from $(pwd); nothing run" >&2; exit 2 ;;
    *) echo "gpu_check: refused: $why; nothing run (GPU_CHECK_ALLOW_CPU=1 rehearses it on a CPU)" >&2; exit 2 ;;
esac

PRESETS=${PRESETS:-small}
SIZES=${SIZES:-201x201}
NARROW=()  # FAMILIES / PRECISIONS narrow the speed step further, PRECISIONS the launcher's too (a slow CPU rehearsal)
[ -n "${FAMILIES:-}" ] && NARROW+=(--ae-families "$FAMILIES")
[ -n "${PRECISIONS:-}" ] && NARROW+=(--ae-precisions "$PRECISIONS")
PLAN_PRESET=${PLAN_PRESET:-${PRESETS%%,*}}
SIZE1=${SIZES%%,*}
MIN_TIME=${MIN_TIME:-0.3}
BATCH=${BATCH:-$([ "$DEVICE" = cpu ] && echo 2 || echo 32)}  # a CPU rehearsal times small batches
TOTAL_S=${TOTAL_S:-540}
deadline=$((SECONDS + TOTAL_S))
mkdir -p "$OUT" || exit 2
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") || exit 2
summary="$OUT/summary.log"
: >"$summary"

say() { echo "$*" | tee -a "$summary"; }

pack() {  # name: the step's folder -> OUT/name.tar.gz, whole or not at all (written aside, then renamed)
    local name=$1 part="$OUT/.$1.tar.gz.part"
    tar -czf "$part" -C "$work" "$name" 2>>"$summary"
    if [ "$(stat -c %s "$part" 2>/dev/null || echo 0)" -gt 15000000 ]; then  # 16 MiB a file comes back
        say "   $name: archive over 15 MB: traces and memory snapshots left out"
        find "$work/$name" \( -name 'trace.json' -o -name '*.pt.trace.json' -o -name 'memory_snapshot.pickle' \) -delete
        tar -czf "$part" -C "$work" "$name" 2>>"$summary"
    fi
    mv -f "$part" "$OUT/$name.tar.gz"
}

step() {  # name, time limit (s), command...: runs it in work/name, logs it there, packs it into OUT
    local name=$1 limit=$2; shift 2
    local left=$((deadline - SECONDS - 5))
    if [ "$left" -lt 20 ]; then
        say "== $name: skipped, ${left}s left of TOTAL_S=${TOTAL_S}s"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    mkdir -p "$work/$name"
    say "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    # SIGINT first: pytest and `bench` stop as on Ctrl-C and keep what they wrote; SIGKILL 15 s later.
    # In the background, so that a signal to this script reaches the step at once (see stop).
    timeout -s INT -k 15 "$limit" "$@" >"$work/$name/$name.log" 2>&1 &
    running=$! running_name=$name
    wait "$running"
    local rc=$?
    running="" running_name=""
    local note=""
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note=" (stopped at its time limit)"
    say "   exit $rc after $((SECONDS - start)) s$note"
    tail -n 12 "$work/$name/$name.log" | sed 's/^/   | /' | tee -a "$summary"
    pack "$name"
}

# Stopped from outside (Ctrl-C, SIGTERM): the running step is stopped as at its limit, what it wrote
# is packed, and the check ends; steps finished before are in OUT already. (SIGKILL cannot be caught:
# then the finished steps alone come back.)
running="" running_name=""
stop() {
    trap - INT TERM
    if [ -n "$running" ]; then
        kill -INT "$running" 2>/dev/null
        wait "$running"
        say "== $running_name: stopped by a signal after $SECONDS s of the check; packing what it wrote"
        pack "$running_name"
    fi
    say "gpu_check stopped after $SECONDS s; finished steps are in $OUT"
    rm -rf "$work"
    exit 130
}
trap stop INT TERM

say "gpu_check on $DEVICE: $(date -u +%Y-%m-%dT%H:%M:%SZ), PRESETS=$PRESETS SIZES=$SIZES BATCH=$BATCH ${NARROW[*]:-}, TOTAL_S=$TOTAL_S"
[ "$DEVICE" = cpu ] && say "REHEARSAL: GPU_CHECK_ALLOW_CPU=1 and no CUDA GPU: every step runs on the CPU (no CUDA path is exercised)"
"$PYTHON" - "$DEVICE" 2>&1 <<'PY' | tee -a "$summary"
import sys
import torch
from bench.trackers.device import device_facts, lookup_gpu, resolve_device
facts = device_facts(resolve_device(sys.argv[1]))
print({k: v for k, v in facts.as_dict().items() if k != "extra"})
if facts.type == "cuda":
    entry = lookup_gpu(facts.name)
    print(f"GPU table: {entry['name'] if entry else 'no entry: peaks will be measured'}; "
          f"flash/mem-efficient/cudnn SDPA enabled: {torch.backends.cuda.flash_sdp_enabled()}/"
          f"{torch.backends.cuda.mem_efficient_sdp_enabled()}/{torch.backends.cuda.cudnn_sdp_enabled()}")
PY

# 1. The default matrix narrowed to one batch (the batch-scaling group collapses into the others).
step speed 160 "$PYTHON" -m pytest bench/test_speed.py -q -p no:cacheprovider \
    --benchmark-autosave --benchmark-save-data --benchmark-storage "file://$work/speed/benchmarks" \
    --ae-matrix default --ae-device "$DEVICE" --ae-presets "$PRESETS" --ae-sizes "$SIZES" --ae-batch "$BATCH" \
    --ae-min-time "$MIN_TIME" --ae-launcher in-process --ae-results "$work/speed" ${NARROW[@]+"${NARROW[@]}"}

# 2. The 8 GiB plan, one configuration a step (plan.csv on disk, packed, before the next starts).
step plan-1 60 "$PYTHON" -m bench plan --budget 8GiB --gpu rtx4060 --device "$DEVICE" --families transformer \
    --presets "$PLAN_PRESET" --sizes "$SIZE1" --precisions amp-bf16 --attention flash --checkpointing off --modes train \
    --results "$work/plan-1"
step plan-2 55 "$PYTHON" -m bench plan --budget 8GiB --gpu rtx4060 --device "$DEVICE" --families cnn \
    --presets "$PLAN_PRESET" --sizes "$SIZE1" --precisions amp-bf16 --modes train --results "$work/plan-2"

# 3. One profile: device self time, the CUDA memory snapshot, the roofline.
step profile 40 "$PYTHON" -m bench profile --matrix default --device "$DEVICE" --families transformer \
    --presets "$PLAN_PRESET" --sizes "$SIZE1" --precisions amp-bf16 --attention flash --checkpointing off \
    --modes train --batch "$BATCH" --steps 2 --out "$work/profile"

# 4. The child launcher: one process per case.
CASES=(--matrix smoke --device "$DEVICE" --families transformer --sizes "$SIZE1" --precisions "${PRECISIONS:-amp-bf16}"
       --attention flash,eager --modes train --min-time 0.2)
step launcher 80 "$PYTHON" -m bench run "${CASES[@]}" --launcher subprocess --results "$work/launcher"

# 5. The regression check: the launcher's cases again (in-process) against the launcher run; the
#    speed run's pytest-benchmark JSON against its own folder (the JSON reader; one timer on both).
speed_run=$(dirname "$(find "$work/speed" -name results.csv 2>/dev/null | head -n 1)" 2>/dev/null)
speed_json=$(find "$work/speed/benchmarks" -name '*.json' 2>/dev/null | head -n 1)
step compare 75 bash -c '
    set -u; py=$1; shift; work=$1; speed_run=$2; speed_json=$3; shift 3
    "$py" -m bench run "$@" --launcher in-process --results "$work/compare/again" || echo "second run: exit $?"
    "$py" -m bench compare "$work/launcher" "$work/compare/again" --markdown "$work/compare/launcher-vs-again.md" \
        --json "$work/compare/launcher-vs-again.json" -q
    echo "compare launcher-vs-again: exit $? (0 pass, 1 regression, 2 unusable)"
    if [ -n "$speed_json" ] && [ -d "$speed_run" ]; then
        "$py" -m bench compare "$speed_json" "$speed_run" --markdown "$work/compare/speed-json-vs-folder.md" -q
        echo "compare speed-json-vs-folder: exit $?"
    else
        echo "no speed run or pytest-benchmark JSON to compare"
    fi' compare "$PYTHON" "$work" "$speed_run" "$speed_json" "${CASES[@]}"

say "gpu_check done in $SECONDS s; OUT:"
ls -la "$OUT" | tee -a "$summary"
rm -rf "$work"
