"""The layout's rules (bench/ARCHITECTURE.md), checked on the source: who may import whom, no
import cycle, no oversized module, and a command line that answers without importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMAND_PACKAGES = ("bench.plan", "bench.compare", "bench.profile", "bench.quality", "bench.report", "bench.selfcheck")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in ("bench", "ae_models") for p in (REPO / pkg).rglob("*.py")
            if not p.name.startswith("test_") and p.name != "conftest.py"}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports, at module level or inside functions alike."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, set(modules)) for name, path in modules.items()}


def test_no_import_cycle(graph):
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_models_import_nothing_from_bench(graph):
    assert not {m: sorted(i) for m, i in graph.items() if m.startswith("ae_models") and any(x.startswith("bench") for x in i)}


def test_trackers_import_no_output_or_command_module(graph):
    forbidden = ("bench.runs", "bench.cli", "bench.core.session", "bench.run_command") + COMMAND_PACKAGES
    bad = {m: sorted(x for x in i if x.startswith(forbidden)) for m, i in graph.items() if m.startswith("bench.trackers")}
    assert not {m: x for m, x in bad.items() if x}


def test_the_report_reads_files_and_builds_no_model(graph):
    allowed = {"bench.core.commandline"}  # exit codes and the Command record, for report/command.py
    bad = {m: sorted(x for x in i - allowed if x.startswith(("bench.core", "bench.plan", "bench.quality", "bench.profile", "ae_models")))
           for m, i in graph.items() if m.startswith("bench.report")}
    assert not {m: x for m, x in bad.items() if x}


def test_nothing_imports_the_command_line_back(graph):
    assert not [m for m, i in graph.items() if "bench.cli" in i and m != "bench.__main__"]


def test_no_module_is_over_the_size_limit():
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in project_modules().values()}
    assert not {m: n for m, n in sizes.items() if n > MAX_LINES}


def test_the_command_line_is_built_without_importing_torch():
    code = "import sys, bench.cli; bench.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux") or Path("/proc/driver/nvidia").exists(),
                    reason="the torch-free listing is taken only on a Linux machine without an NVIDIA driver")
def test_listing_a_cpu_matrix_imports_no_torch():
    code = ("import sys, bench.cli; rc = bench.cli.main(['run', '--list', '--matrix', 'quick']); "
            "print('torch' in sys.modules, rc, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stderr.strip().splitlines()[-1] == "False 0", out.stderr
    from bench.core.selection import case_listing, make_selection

    full = make_selection("quick", lambda axis: None, "cpu")  # the full device probe, torch imported
    assert out.stdout.strip() == case_listing(full.cases)
