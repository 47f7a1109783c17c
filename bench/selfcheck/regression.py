"""Can a busy or bimodal machine fool the regression check? ``python -m bench.selfcheck.regression OUT.md``.

Three checks, all with one of the machine's cores kept busy by another process for the whole time
(``python -c "while True: pass"``), on the ``quick`` matrix narrowed to 8 cases (tiny, fp32, flash
attention (the CNN has none), no checkpointing, infer and train, 201x201 and 640x152, batch 4):

1. **False positives**: ``python -m bench ab A A`` (the same commit on both sides), ``--reps`` times:
   how many cases come out ``slower`` (none should), and the exit status.
2. **Detection**: ``python -m bench ab A B`` where B is A plus a model that does 25% more work per
   step (each forward runs the model again on a quarter of the batch, under the same case key),
   ``--reps`` times: how many times the check exits 1, and which cases it calls ``slower``.
3. **Build-to-build speed**: two stored runs of the same commit made with ``--processes 3``, then
   ``python -m bench compare``: no case may fail (``bimodal`` or ``same`` is the honest answer).

The code under test is this checkout's working tree, committed into a scratch clone (tag ``A``) with
the slowed variant on top (tag ``B``); nothing of this repository is changed. Writes ``OUT.md`` with
every figure, the commands and the wall times (each comparison's JSON and the commands' output stay in
the scratch folder, whose path it prints).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SELECTION = ["--matrix", "quick", "--presets", "tiny", "--precisions", "fp32", "--attention", "flash",
             "--checkpointing", "off", "--modes", "infer,train", "--sizes", "201x201,640x152", "--batch", "4",
             "--compile", "off"]

# One torch thread per process: on 2 cores with one kept busy, two threads spin at each barrier against
# the busy process (measured: the tiny CNN's inference step 760 ms instead of 16 ms), which makes the
# check slow, not more telling. Both sides run alike either way.
THREADS = "1"

# Appended to ae_models/registry.py on the B side: 25% more work per step, same case keys.
SLOWDOWN = '''

_build_model_as_is = build_model


def build_model(family, preset="medium", input_size=(201, 201), **overrides):
    """B side of the regression check: each forward also runs the model on a quarter of the batch (25% more work)."""
    model = _build_model_as_is(family, preset, input_size, **overrides)
    forward = model.forward

    def more_work(x, *args, **kwargs):
        out = forward(x, *args, **kwargs)
        extra = forward(x[: max(1, x.shape[0] // 4)])
        first, more = (out[0] if isinstance(out, tuple) else out), (extra[0] if isinstance(extra, tuple) else extra)
        first = first + 0.0 * more.float().mean().to(first.dtype)
        return (first, *out[1:]) if isinstance(out, tuple) else first

    model.forward = more_work
    return model
'''


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=check@ae-bench", "-c", "user.name=ae-bench check", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def clone_working_tree(source: Path, work: Path, message: str) -> Path:
    """``work/repo``: a clone of ``source`` whose last commit (``message``) is its working tree as it is
    (uncommitted and untracked, not ignored, files included)."""
    repo = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(source), str(repo)], check=True)
    listed = subprocess.run(["git", "-C", str(source), "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = source / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "--allow-empty", "-m", message)
    return repo


def scratch_repo(source: Path, work: Path) -> Path:
    """A clone of ``source`` whose tag A is its working tree as it is, and tag B is A slowed by 25%."""
    repo = clone_working_tree(source, work, "regression check: A (the working tree)")
    _git(repo, "tag", "A")
    with open(repo / "ae_models" / "registry.py", "a") as f:
        f.write(SLOWDOWN)
    _git(repo, "commit", "--quiet", "-am", "regression check: B = A with 25% more work per step")
    _git(repo, "tag", "B")
    _git(repo, "checkout", "--quiet", "A")
    return repo


def bench(repo: Path, args: list[str], log: Path) -> tuple[int, float]:
    """``python -m bench ARGS`` with the scratch repository's code; (exit status, wall seconds)."""
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": THREADS}
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"$ python -m bench {shlex.join(args)}\n")
        out.flush()
        rc = subprocess.run([sys.executable, "-m", "bench", *args], cwd=repo, env=env, stdout=out, stderr=out).returncode
    return rc, time.perf_counter() - started


def _verdicts(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {c["case_id"]: (c["verdict"], (c.get("time") or {}).get("change")) for c in data["cases"]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selfcheck.regression", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the markdown to write (results/regression-check.md)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each A/B check [default: 3]")
    parser.add_argument("--rounds", type=int, default=6, help="ab --rounds (at least 6) [default: 6]")
    parser.add_argument("--min-time", default="0.3", help="seconds of timed steps per measurement [default: 0.3]")
    args = parser.parse_args(argv)
    source = Path(__file__).resolve().parents[2]
    work = Path(tempfile.mkdtemp(prefix="ae-bench-regression-"))
    log = work / "regression-check.log"  # every command's output, kept with the JSONs in the scratch folder
    repo = scratch_repo(source, work)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    results: dict[str, list] = {"same": [], "slow": []}
    started = time.perf_counter()
    try:
        for kind, refs in (("same", ["A", "A"]), ("slow", ["A", "B"])):
            for rep in range(1, args.reps + 1):
                out = work / f"{kind}-{rep}.json"
                cmd = ["ab", *refs, *SELECTION, "--rounds", str(args.rounds), "--min-time", args.min_time, "--json", str(out), "-q"]
                rc, wall = bench(repo, cmd, log)
                results[kind].append({"rep": rep, "rc": rc, "wall_s": wall, "cases": _verdicts(out), "command": cmd})
                print(f"{kind} {rep}: exit {rc}, {wall:.0f} s", file=sys.stderr, flush=True)
        runs = []
        for name in ("p1", "p2"):
            cmd = ["run", *SELECTION, "--processes", "3", "--min-time", args.min_time, "--results", str(work / name),
                   "--plan-for", "none"]
            rc, wall = bench(repo, cmd, log)
            runs.append((cmd, rc, wall))
        (p1,), (p2,) = (list((work / n).iterdir()) for n in ("p1", "p2"))
        out = work / "processes.json"
        compare = ["compare", str(p1), str(p2), "--json", str(out), "-q"]
        rc, wall = bench(repo, compare, log)
        processes = {"runs": runs, "compare": (compare, rc, wall), "cases": _verdicts(out),
                     "medians": _process_medians(p1) | {f"{k} (2nd run)": v for k, v in _process_medians(p2).items()}}
    finally:
        busy.kill()
    total = time.perf_counter() - started
    args.out.write_text(_markdown(results, processes, args, total, _git(repo, "rev-parse", "--short", "A")))
    print(f"{args.out} (every comparison's JSON and the commands' output: {work})")
    return 0


def _process_medians(run: Path) -> dict[str, str]:
    import csv

    with open(run / "results.csv") as f:
        return {r["case_id"]: f"{r['process_medians_ms']} ms{' (bimodal)' if r['bimodal'] == 'True' else ''}"
                for r in csv.DictReader(f)}


def verdict_table(reps: list[dict]) -> list[str]:
    """One row per repetition, one column per case: each cell looked up by its case (a comparison lists
    its cases worst first, so the order differs from one repetition to the next)."""
    cases = sorted({case for r in reps for case in r["cases"]})
    lines = ["| repetition | exit | wall | " + " | ".join(f"`{c}`" for c in cases) + " |", "|---|---|---|" + "---|" * len(cases)]
    for r in reps:
        cells = []
        for case in cases:
            verdict, change = r["cases"].get(case, ("missing", None))
            cells.append(f"{verdict} ({change * 100:+.0f}%)" if change is not None else verdict)
        lines.append(f"| {r['rep']} | {r['rc']} | {r['wall_s'] / 60:.1f} min | " + " | ".join(cells) + " |")
    return lines


def _markdown(results: dict, processes: dict, args, total_s: float, commit: str) -> str:
    same, slow = results["same"], results["slow"]
    n_cases = sum(len(r["cases"]) for r in same)
    false_pos = sum(v == "slower" for r in same for v, _ in r["cases"].values())
    caught = sum(r["rc"] == 1 for r in slow)
    lines = ["# Regression check: can a busy or bimodal machine fool it?", "",
             f"Made by `python -m bench.selfcheck.regression {args.out} --reps {args.reps} --rounds {args.rounds} "
             f"--min-time {args.min_time}` ({total_s / 60:.0f} min in all), on this machine with one of its cores kept busy "
             f"by `python -c \"while True: pass\"` for the whole time, every command with OMP_NUM_THREADS={THREADS}. Code: the working tree at "
             f"{commit} (tag A of a scratch clone; B = A with a model that does 25% more work per step, same case keys). "
             "Cases: `" + " ".join(SELECTION) + "` (8 cases, both families).", "",
             "## Summary", "",
             "| check | result |", "|---|---|",
             f"| same commit, `ab A A`, {args.reps} repetitions | {false_pos} of {n_cases} case verdicts `slower` "
             f"(false positives); exit {', '.join(str(r['rc']) for r in same)} |",
             f"| 25% slower B, `ab A B`, {args.reps} repetitions | exit 1 in {caught} of {len(slow)}; "
             f"{sum(v == 'slower' for r in slow for v, _ in r['cases'].values())} of "
             f"{sum(len(r['cases']) for r in slow)} case verdicts `slower` |",
             f"| two `run --processes 3` of one commit, `compare` | exit {processes['compare'][1]}; verdicts: "
             + ", ".join(f"{v} {sum(x == v for x, _ in processes['cases'].values())}" for v in
                         sorted({x for x, _ in processes["cases"].values()})) + " |", ""]
    for kind, title in (("same", "Same commit on both sides (`ab A A`)"), ("slow", "B does 25% more work (`ab A B`)")):
        lines += [f"## {title}", "", *verdict_table(results[kind])]
        lines += ["", f"Command: `python -m bench {shlex.join(results[kind][0]['command'])}` (its JSON kept in the "
                      "scratch folder only).", ""]
    lines += ["## Two runs of one commit with `--processes 3`, compared", "",
              "| case | verdict | change | process medians (ms/batch) |", "|---|---|---|---|"]
    for case, (verdict, change) in processes["cases"].items():
        lines.append(f"| `{case}` | {verdict} | {'' if change is None else f'{change * 100:+.1f}%'} | "
                     f"{processes['medians'].get(case, '')} / {processes['medians'].get(case + ' (2nd run)', '')} |")
    lines += ["", "Commands: " + "; ".join(f"`python -m bench {shlex.join(c)}` ({w / 60:.1f} min, exit {rc})"
                                          for c, rc, w in processes["runs"])
              + f"; `python -m bench {shlex.join(processes['compare'][0])}`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
