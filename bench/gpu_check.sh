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
# Steps, each under its own time limit and, past it, a grace for its shutdown (the table below: the script
# prints the sum at start and refuses a table over 480 s, so that a 15-minute device lease has room for
# the machine's start and a second run). A step at its limit gets SIGINT, so pytest and `bench` keep
# what they wrote (a stopped pytest session writes its pytest-benchmark JSON and its report before the
# slow parts, which it skips: a plan, the end-of-run peaks), then SIGKILL when its grace is over.
# What only a GPU can show comes first, the launcher and the comparison last:
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
# so a check stopped at any point, even by SIGKILL, still returns every step finished before. OUT
# holds at most 8 files: summary.log (a few lines of facts, then one line per step: status, rows,
# seconds, files) and one archive per step. Knobs: <STEP>_S (SPEED_S, PLAN_1_S, ..., PROBE_S) sets a
# step's limit, STEPS=speed,profile runs only those steps, TOTAL_S caps the whole check.
set -uo pipefail

OUT=${1:-${OUT:-}}
if [ -z "$OUT" ]; then
    echo "gpu_check: usage: bash bench/gpu_check.sh OUT (a folder for the results); nothing run" >&2
    exit 2
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}

# The time table: name, limit (s), grace (s) after the limit's SIGINT before SIGKILL. The speed step's
# grace is its stopped session's shutdown, the JSON and the report (8.5 s on 2 busy CPU cores: README, "First
# run on a GPU"), three times over. PACK_S: packing a step's folder. MAX_S: the most the check may take.
PROBE_S=${PROBE_S:-30} PROBE_GRACE_S=5 PACK_S=2 MAX_S=480  # PROBE_S: the device probe (torch import, CUDA init)
TABLE=(
    "speed    ${SPEED_S:-140}    25"
    "plan-1   ${PLAN_1_S:-40}    10"
    "plan-2   ${PLAN_2_S:-40}    10"
    "profile  ${PROFILE_S:-30}   10"
    "launcher ${LAUNCHER_S:-50}  15"
    "compare  ${COMPARE_S:-45}   15"
)
limits=0 graces=0
for entry in "${TABLE[@]}"; do
    read -r _ l g <<<"$entry"
    limits=$((limits + l)) graces=$((graces + g))
done
WORST=$((PROBE_S + PROBE_GRACE_S + limits + graces + ${#TABLE[@]} * PACK_S))
TOTAL_S=${TOTAL_S:-$MAX_S}  # the cap: a step's limit shrinks so that the check ends by it, grace and packing included
if [ "$WORST" -gt "$TOTAL_S" ]; then
    echo "gpu_check: refused: the steps' limits and graces add up to ${WORST} s, over TOTAL_S=${TOTAL_S} s; nothing run" >&2
    exit 2
fi

# One line, and no folder made, when this machine cannot run the check; else the device's facts.
probe=$(timeout -k "$PROBE_GRACE_S" "$PROBE_S" "$PYTHON" - 2>/dev/null <<'PY'
import importlib.util, os
missing = [m for m in ("torch", "pytest", "pytest_benchmark", "pandas", "matplotlib", "jinja2") if importlib.util.find_spec(m) is None]
if missing:
    print(f"missing Python package(s): {', '.join(missing)}")
    raise SystemExit
import torch
if not torch.cuda.is_available():
    if os.environ.get("GPU_CHECK_ALLOW_CPU") == "1":
        print("cpu")
    else:
        print(f"CUDA is not available to torch {torch.__version__} (no GPU, no driver, or a CPU build)")
        raise SystemExit
else:
    print("cuda")
from bench.trackers.device import device_facts, lookup_gpu, resolve_device
facts = device_facts(resolve_device(os.environ.get("DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")))
print({k: v for k, v in facts.as_dict().items() if k != "extra"})
if facts.type == "cuda":
    entry = lookup_gpu(facts.name)
    print(f"GPU table: {entry['name'] if entry else 'no entry: peaks will be measured'}; "
          f"flash/mem-efficient/cudnn SDPA enabled: {torch.backends.cuda.flash_sdp_enabled()}/"
          f"{torch.backends.cuda.mem_efficient_sdp_enabled()}/{torch.backends.cuda.cudnn_sdp_enabled()}")
PY
)
why=${probe%%$'\n'*} facts=""
[ "$probe" != "$why" ] && facts=${probe#*$'\n'}
case "$why" in
    cuda) DEVICE=${DEVICE:-cuda} ;;
    cpu) DEVICE=cpu ;;
    "") echo "gpu_check: refused: $PYTHON could not import torch from $(pwd) within ${PROBE_S} s; nothing run" >&2; exit 2 ;;
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
STEPS=${STEPS:-all}
mkdir -p "$OUT" || exit 2
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") || exit 2
summary="$OUT/summary.log"
: >"$summary"

say() { echo "$*" | tee -a "$summary"; }
note() { echo "# $*" | tee -a "$summary"; }  # a fact, not a step: summary.log's step lines are the ones without '#'

pack() {  # name: the step's folder -> OUT/name.tar.gz, whole or not at all (written aside, then renamed)
    local name=$1 part="$OUT/.$1.tar.gz.part"
    tar -czf "$part" -C "$work" "$name" 2>/dev/null
    if [ "$(stat -c %s "$part" 2>/dev/null || echo 0)" -gt 15000000 ]; then  # 16 MiB a file comes back
        echo "$name: archive over 15 MB: traces and memory snapshots left out" >>"$work/$name/$name.log"
        find "$work/$name" \( -name 'trace.json' -o -name '*.pt.trace.json' -o -name '*.json.gz' -o -name 'memory_snapshot.pickle' \) -delete
        tar -czf "$part" -C "$work" "$name" 2>/dev/null
    fi
    mv -f "$part" "$OUT/$name.tar.gz"
}

contents() {  # folder: "rows=N files=N (what matters in it)" for summary.log
    "$PYTHON" - "$1" <<'PY' 2>/dev/null || echo "rows=? files=?"
import csv, sys
from pathlib import Path
folder = Path(sys.argv[1])
def rows(name):
    n = 0
    for path in folder.rglob(name):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                n += max(0, sum(1 for _ in csv.reader(f)) - 1)
        except (OSError, csv.Error, UnicodeError):
            pass
    return n
files = [p for p in folder.rglob("*") if p.is_file()]
kinds = {"results.csv": "results.csv", "report.md": "report.md", "plan.csv": "plan.csv", "profile.md": "profile.md"}
found = sorted({kinds[p.name] for p in files if p.name in kinds})
found += ["pytest-benchmark JSON"] * any(p.suffix == ".json" and "benchmarks" in p.parts for p in files)
found += sorted(p.name for p in files if p.parent.name == "compare" and p.suffix in (".md", ".json"))
found += ["profiler trace"] * any(p.name.endswith(("trace.json", "trace.json.gz")) for p in files)
print(f"rows={rows('results.csv') or rows('plan.csv')} files={len(files)} ({', '.join(found) or 'none of its outputs'})")
PY
}

wanted() { [ "$STEPS" = all ] || [[ ",$STEPS," == *",$1,"* ]]; }

step() {  # name, command...: runs it in work/name under its limit and grace (TABLE), logs it there, packs it into OUT
    local name=$1 limit grace entry n l g; shift
    for entry in "${TABLE[@]}"; do read -r n l g <<<"$entry"; [ "$n" = "$name" ] && limit=$l grace=$g; done
    if ! wanted "$name"; then
        say "$name: status=not-asked (STEPS=$STEPS)"
        return
    fi
    local left=$((TOTAL_S - SECONDS - grace - PACK_S))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        say "$name: status=skipped ($((TOTAL_S - SECONDS)) s left of TOTAL_S=${TOTAL_S} s)"
        return
    fi
    mkdir -p "$work/$name"
    echo "== $name (limit ${limit} s + ${grace} s grace): $*" | tee "$work/$name/$name.log"
    local start=$SECONDS
    # SIGINT first: pytest and `bench` stop as on Ctrl-C and keep what they wrote; SIGKILL after the grace.
    # In the background, so that a signal to this script reaches the step at once (see stop).
    timeout -s INT -k "$grace" "$limit" "$@" >>"$work/$name/$name.log" 2>&1 &
    running=$! running_name=$name running_start=$start
    wait "$running"
    local rc=$?
    running="" running_name=""
    local status=ok
    case $rc in
        0) ;;
        124) status=stopped-at-limit ;;
        137) status=killed-after-grace ;;
        *) status=failed ;;
    esac
    tail -n 8 "$work/$name/$name.log" | sed 's/^/   | /'
    pack "$name"
    say "$name: status=$status exit=$rc seconds=$((SECONDS - start)) limit=${limit}+${grace} $(contents "$work/$name") archive=$name.tar.gz"
}

# Stopped from outside (Ctrl-C, SIGTERM): the running step is stopped as at its limit, what it wrote
# is packed, and the check ends; steps finished before are in OUT already. (SIGKILL cannot be caught:
# then the finished steps alone come back.)
running="" running_name="" running_start=0
stop() {
    trap - INT TERM
    if [ -n "$running" ]; then
        kill -INT "$running" 2>/dev/null
        wait "$running"
        pack "$running_name"
        say "$running_name: status=stopped-by-signal seconds=$((SECONDS - running_start)) $(contents "$work/$running_name") archive=$running_name.tar.gz"
    fi
    note "gpu_check stopped after $SECONDS s; finished steps are in $OUT"
    rm -rf "$work"
    exit 130
}
trap stop INT TERM

note "gpu_check on $DEVICE: $(date -u +%Y-%m-%dT%H:%M:%SZ), PRESETS=$PRESETS SIZES=$SIZES BATCH=$BATCH ${NARROW[*]:-}, STEPS=$STEPS"
relation="<="  # a table of one's own (SPEED_S=..., TOTAL_S over 480) may be over what a lent machine's rerun needs: said
[ "$WORST" -gt "$MAX_S" ] && relation="> (over the ${MAX_S} s a lent machine's rerun needs)"
note "worst case: probe ${PROBE_S}+${PROBE_GRACE_S} s + step limits ${limits} s + graces ${graces} s + packing ${#TABLE[@]} x ${PACK_S} s = ${WORST} s ${relation} ${MAX_S} s; steps shrink to end by TOTAL_S=${TOTAL_S} s"
[ "$DEVICE" = cpu ] && note "REHEARSAL: GPU_CHECK_ALLOW_CPU=1 and no CUDA GPU: every step runs on the CPU (no CUDA path is exercised)"
while IFS= read -r line; do [ -n "$line" ] && note "$line"; done <<<"$facts"

# 1. The default matrix narrowed to one batch (the batch-scaling group collapses into the others).
step speed "$PYTHON" -m pytest bench/test_speed.py -q -p no:cacheprovider \
    --benchmark-autosave --benchmark-save-data --benchmark-storage "file://$work/speed/benchmarks" \
    --ae-matrix default --ae-device "$DEVICE" --ae-presets "$PRESETS" --ae-sizes "$SIZES" --ae-batch "$BATCH" \
    --ae-min-time "$MIN_TIME" --ae-launcher in-process --ae-results "$work/speed" ${NARROW[@]+"${NARROW[@]}"}

# 2. The 8 GiB plan, one configuration a step (plan.csv on disk, packed, before the next starts).
step plan-1 "$PYTHON" -m bench plan --budget 8GiB --gpu rtx4060 --device "$DEVICE" --families transformer \
    --presets "$PLAN_PRESET" --sizes "$SIZE1" --precisions amp-bf16 --attention flash --checkpointing off --modes train \
    --results "$work/plan-1"
step plan-2 "$PYTHON" -m bench plan --budget 8GiB --gpu rtx4060 --device "$DEVICE" --families cnn \
    --presets "$PLAN_PRESET" --sizes "$SIZE1" --precisions amp-bf16 --modes train --results "$work/plan-2"

# 3. One profile: device self time, the CUDA memory snapshot, the roofline.
step profile "$PYTHON" -m bench profile --matrix default --device "$DEVICE" --families transformer \
    --presets "$PLAN_PRESET" --sizes "$SIZE1" --precisions amp-bf16 --attention flash --checkpointing off \
    --modes train --batch "$BATCH" --steps 2 --out "$work/profile"

# 4. The child launcher: one process per case.
CASES=(--matrix smoke --device "$DEVICE" --families transformer --sizes "$SIZE1" --precisions "${PRECISIONS:-amp-bf16}"
       --attention flash,eager --modes train --min-time 0.2)
step launcher "$PYTHON" -m bench run "${CASES[@]}" --launcher subprocess --results "$work/launcher"

# 5. The regression check: the launcher's cases again (in-process) against the launcher run; the
#    speed run's pytest-benchmark JSON against its own folder (the JSON reader; one timer on both).
speed_run=$(dirname "$(find "$work/speed" -name results.csv 2>/dev/null | head -n 1)" 2>/dev/null)
speed_json=$(find "$work/speed/benchmarks" -name '*.json' 2>/dev/null | head -n 1)
step compare bash -c '
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

note "gpu_check done in $SECONDS s (worst case ${WORST} s); OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
rm -rf "$work"
