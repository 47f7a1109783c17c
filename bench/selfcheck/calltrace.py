"""How the `run` command's arguments and the report's inputs travel through the packages, traced.

``python -m bench.selfcheck.calltrace [--root CHECKOUT]`` runs, in a child whose ``bench`` is CHECKOUT's, two
commands under ``sys.setprofile``: ``run --matrix smoke --list`` (the arguments, parsed and turned into cases,
nothing measured) and ``report`` of the committed reference run (its rows and files into report.md). Every call
from one ``bench`` module into another is an edge; each module's package has a layer in ``bench/ARCHITECTURE.md``
(this checkout's map, applied to CHECKOUT by package name, so an older layout is judged by today's layers).
It prints, per command: the modules visited, the calls that climb (from a package on a lower layer into one on a
higher layer: the engine calling up into a command, a command's helper reaching back into the face), and the
times the report re-enters ``report/tables.py`` from another module. Pass ``--root`` a worktree of an older
commit to compare (issue 29 quotes b167fdb against main)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE_RUN = "results/20261130-000938-cpu-2c-intel-r-xeon-r-processor"

# The child: trace the two commands, write the edges (caller module, callee module, count) as JSON.
CHILD = r"""
import json, sys, collections
import bench.cli
edges = collections.Counter()

def hook(frame, event, arg):
    if event != "call":
        return
    callee = frame.f_globals.get("__name__", "")
    if not callee.startswith("bench"):
        return
    back = frame.f_back
    caller = back.f_globals.get("__name__", "") if back is not None else ""
    if caller.startswith("bench") and caller != callee:
        edges[(caller, callee)] += 1

out = {}
for name, argv in json.loads(sys.argv[1]).items():
    edges.clear()
    sys.setprofile(hook)
    try:
        code = bench.cli.main(argv)
    finally:
        sys.setprofile(None)
    out[name] = {"exit": code, "edges": [[a, b, n] for (a, b), n in edges.items()]}
print("CALLTRACE " + json.dumps(out))
"""


def layers(map_path: Path = REPO / "bench" / "ARCHITECTURE.md") -> dict[str, int]:
    """Package or top-level module (``core``, ``run_command.py``) -> its layer, from the map's table."""
    found: dict[str, int] = {}
    for line in map_path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            for unit in re.findall(r"`([^`]+)`", cells[1]):
                found[unit.rstrip("/")] = int(cells[0])
    return found


RENAMED = {"sequence": "downstream"}  # packages of an older layout, by today's name


def unit_of(module: str, known: dict[str, int]) -> str:
    """``bench.core.loop`` -> ``core``; ``bench.run_command`` -> ``run_command.py``; an old module by its package."""
    parts = module.split(".")[1:] or ["__init__"]
    parts[0] = RENAMED.get(parts[0], parts[0])
    if parts[0] in known:
        return parts[0]
    return f"{parts[0]}.py" if f"{parts[0]}.py" in known else parts[0]


def summarize(edges: list[list], known: dict[str, int]) -> dict:
    modules = {m for a, b, _ in edges for m in (a, b)}
    climbs: dict[str, int] = {}
    for caller, callee, count in edges:
        up, down = unit_of(caller, known), unit_of(callee, known)
        if up != down and up in known and down in known and known[up] < known[down]:
            key = f"{caller} -> {callee}"
            climbs[key] = climbs.get(key, 0) + count
    tables = sum(n for a, b, n in edges if b == "bench.report.tables" and a != b)
    return {"modules": len(modules), "climbs": sum(climbs.values()), "climb_edges": climbs, "tables_entries": tables}


def trace(root: Path) -> dict:
    """The two commands traced in a child whose ``bench`` is ``root``'s."""
    with tempfile.TemporaryDirectory(prefix="ae-bench-calltrace-") as out:
        commands = {"run arguments": ["run", "--matrix", "smoke", "--list"],
                    "report": ["report", str(REPO / REFERENCE_RUN), "--out", out]}
        env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(commands)], cwd=root, env=env,
                              capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("CALLTRACE ")), None)
    if line is None:
        raise SystemExit(f"calltrace: the child failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return json.loads(line[len("CALLTRACE "):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selfcheck.calltrace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO,
                        help="the checkout whose bench is traced (a worktree of an older commit) [default: this one]")
    parser.add_argument("--edges", action="store_true", help="also list every climbing edge with its call count")
    args = parser.parse_args(argv)
    known = layers()
    for name, found in trace(args.root.resolve()).items():
        s = summarize(found["edges"], known)
        print(f"{name} (exit {found['exit']}): {s['modules']} modules visited, {s['climbs']} calls climbing to a "
              f"higher layer over {len(s['climb_edges'])} edges, report/tables.py entered {s['tables_entries']} times "
              f"from other modules")
        if args.edges:
            for edge, count in sorted(s["climb_edges"].items(), key=lambda kv: -kv[1]):
                print(f"    {count:6d}  {edge}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
