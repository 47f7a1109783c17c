"""Soak: many small cases in one process, memory sampled as they go, then the child launcher's cost.

``python -m bench.selfcheck.soak [--cases 500] [--child-cases 20] [--out results/soak.md]``

It answers two questions. Does a long in-process sweep leak (resident memory sampled every 50
cases should stay flat within noise, and the same case measured first and after all the others
should peak at the same memory)? And what does isolation cost (seconds per case added by a
child process per case)? The first answer is a verdict, :func:`leak_verdict`, from those figures
(exit status 1 on a leak).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

from bench.core.cases import Case
from bench.trackers.device import device_facts, resolve_device
from bench.core.launchers import InProcess, Subprocess
from bench.plan.reference import measure_live_peak
from bench.core.measure import Settings
from bench.trackers.nvml import rss_mib
from bench.runs.provenance import utc_now
from bench.runs.files import atomic_write_text

SETTINGS = Settings(warmup=1, min_iters=2, max_iters=2, min_time_s=0.0, memory_iters=1)

# small but varied: both families, every mode, eager and fused attention, checkpointing
SMALL_CASES = [
    Case(family="transformer", preset="tiny", size="64x64", attention="flash", mode="infer", batch=2),
    Case(family="transformer", preset="tiny", size="64x64", attention="eager", mode="train", batch=2),
    Case(family="transformer", preset="tiny", size="96x32", attention="math", checkpointing=True, mode="train", batch=2),
    Case(family="transformer", preset="tiny", size="64x64", attention="flash", mode="embed", batch=2),
    Case(family="cnn", preset="tiny", size="64x64", attention="none", mode="train", batch=2),
    Case(family="cnn", preset="tiny", size="64x64", attention="none", mode="infer", batch=2),
]
PROBE = SMALL_CASES[1]  # measured first and again at the end: its peak must not move


def soak(n_cases: int, every: int = 50) -> dict:
    device = resolve_device("cpu")
    facts = device_facts(device)
    launcher = InProcess()
    first = launcher.run(PROBE, device, facts, SETTINGS, "soak").row
    first_live = measure_live_peak(PROBE, PROBE.batch).peak_bytes / 2**20
    samples = [(0, rss_mib())]
    start = time.monotonic()
    for i, case in enumerate(itertools.islice(itertools.cycle(SMALL_CASES), n_cases), 1):
        row = launcher.run(case, device, facts, SETTINGS, "soak").row
        if row["status"] != "ok":
            raise RuntimeError(f"soak case {case.id} did not run: {row['reason']}")
        if i % every == 0:
            samples.append((i, rss_mib()))
    in_process_s = (time.monotonic() - start) / n_cases
    last = launcher.run(PROBE, device, facts, SETTINGS, "soak").row
    last_live = measure_live_peak(PROBE, PROBE.batch).peak_bytes / 2**20
    return {"samples": samples, "per_case_s": in_process_s, "probe_first_mib": first["rss_peak_mib"],
            "probe_last_mib": last["rss_peak_mib"], "probe_first_live_mib": first_live, "probe_last_live_mib": last_live,
            "facts": facts}


LEAK_RSS_MIB = 16.0     # resident memory that grows more than this after the first sample past the warm-up: a leak
LEAK_LIVE_REL = 0.01    # the probe's live-tensor peak (exact: the allocator's events) moving more than 1%: a leak


def leak_verdict(result: dict, rss_limit_mib: float = LEAK_RSS_MIB, live_rel: float = LEAK_LIVE_REL) -> tuple[str, str]:
    """``("no leak" | "leak" | "inconclusive", why)`` from :func:`soak`'s own figures.

    Resident memory is compared from the first sample after the warm-up (``samples[1]``: allocator
    pools and lazily loaded kernels are warm by then) to the last; the probe's live-tensor peak, first
    and last, must not move.
    """
    rss = [mib for _, mib in result["samples"]]
    if len(rss) < 3 or None in rss:
        return "inconclusive", (f"{len(rss)} resident-memory samples ({rss}): the start, one after the warm-up and "
                                "a later one are needed (more cases, or a smaller sampling interval)")
    growth = rss[-1] - rss[1]
    first, last = result["probe_first_live_mib"], result["probe_last_live_mib"]
    moved = abs(last - first) / first if first else 0.0
    figures = (f"resident memory {growth:+.1f} MiB from case {result['samples'][1][0]} to case {result['samples'][-1][0]} "
               f"(limit {rss_limit_mib:g} MiB); the probe's live-tensor peak {first:.3f} MiB then {last:.3f} MiB "
               f"(limit {live_rel:.0%})")
    leaked = growth > rss_limit_mib or moved > live_rel
    return ("leak" if leaked else "no leak"), figures


def child_overhead(n_cases: int) -> dict:
    device = resolve_device("cpu")
    facts = device_facts(device)
    cases = list(itertools.islice(itertools.cycle(SMALL_CASES), n_cases))
    timings = {}
    for launcher in (InProcess(), Subprocess("cpu")):
        start = time.monotonic()
        for case in cases:
            status = launcher.run(case, device, facts, SETTINGS, "soak").row["status"]
            if status != "ok":
                raise RuntimeError(f"{launcher.name}: {case.id} gave {status}")
        timings[launcher.name] = (time.monotonic() - start) / n_cases
    return timings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selfcheck.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=500, help="small cases in the in-process sweep [default: 500]")
    parser.add_argument("--child-cases", type=int, default=20, help="cases timed with each launcher [default: 20]")
    parser.add_argument("--out", default="results/soak.md", help="markdown file to write [default: results/soak.md]")
    args = parser.parse_args(argv)
    if args.cases < 50 or args.child_cases < 1:
        parser.error("--cases must be at least 50 and --child-cases at least 1")
    result = soak(args.cases)
    overhead = child_overhead(args.child_cases)
    rss = result["samples"]
    baseline = rss[1][1]  # after the first 50: allocator pools and lazily loaded kernels are warm by then
    growth = rss[-1][1] - baseline
    verdict, why = leak_verdict(result)
    lines = [
        "# Soak", "",
        f"`python -m bench.selfcheck.soak --cases {args.cases} --child-cases {args.child_cases}` on {result['facts'].name} "
        f"({torch.get_num_threads()} threads, torch {torch.__version__}), {utc_now()}.", "",
        f"In-process sweep of {args.cases} small cases ({len(SMALL_CASES)} kinds in turn, {result['per_case_s'] * 1e3:.0f} ms per case):", "",
        "| cases done | resident memory (MiB) |", "| --- | --- |",
        *[f"| {i} | {mib:.1f} |" for i, mib in rss], "",
        f"Growth from case 50 to case {rss[-1][0]}: **{growth:+.1f} MiB** ({growth / baseline * 100:+.1f}%).", "",
        f"The same case (`{PROBE.id}`) measured first and after {args.cases} others: peak of live tensor memory "
        f"(the CPU allocator's own events, `bench/plan/reference.py`) {result['probe_first_live_mib']:.3f} MiB then "
        f"{result['probe_last_live_mib']:.3f} MiB; peak resident memory {result['probe_first_mib']:.1f} MiB then "
        f"{result['probe_last_mib']:.1f} MiB (the process's high-water mark: it includes pages the allocator keeps "
        "after the first cases, so it rises once and then stays, as the table above shows).", "",
        f"Leak verdict (`leak_verdict`): **{verdict}**: {why}.", "",
        f"Launcher cost over {args.child_cases} cases: in-process {overhead['in-process'] * 1e3:.0f} ms per case, "
        f"subprocess {overhead['subprocess'] * 1e3:.0f} ms per case, so isolation adds "
        f"**{(overhead['subprocess'] - overhead['in-process']):.2f} s per case** (a fresh interpreter importing torch).", "",
    ]
    text = "\n".join(lines)
    atomic_write_text(Path(args.out), text)
    print(text)
    return 1 if verdict == "leak" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
