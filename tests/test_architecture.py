"""The layout's rules (bench/ARCHITECTURE.md), checked on the source: who may import whom, no
import cycle, no oversized module, and a command line that answers without importing torch.

The package layers are written once, in ARCHITECTURE.md's table, and parsed here. Imports inside
function bodies count like module-level ones. ``python tests/test_architecture.py [ROOT]`` prints the
package-level edges of ROOT's ``bench/`` that this map forbids (upward or same-layer), with a count."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMAND_PACKAGES = ("bench.plan", "bench.compare", "bench.profile", "bench.quality", "bench.report", "bench.selfcheck",
                    "bench.scale", "bench.downstream")
MAX_LINES = 400


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
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


# -- the package layers (ARCHITECTURE.md's table) ---------------------------------------------------

MAP = REPO / "bench" / "ARCHITECTURE.md"


@dataclass
class Row:
    layer: int
    units: list[str]       # `core/` (a package) or `cli.py` (a module at the top of bench/)
    modules: set[str]      # the `x.py` a package's row names
    may_import: set[str]   # `pkg/` (any module of it) or `pkg/x.py` (that one)


def parse_map(text: str) -> list[Row]:
    """The rows of the layer table: ``| layer | package | holds | may import |``."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].isdigit():
            continue
        units = re.findall(r"`([^`]+)`", cells[1])
        modules = {t for t in re.findall(r"`([^`/ ]+\.py)`", cells[2])}
        rows.append(Row(int(cells[0]), units, modules, set(re.findall(r"`([^` ]+(?:/|\.py))`", cells[3]))))
    return rows


def unit_of(module: str, root: Path = REPO) -> str:
    """``bench.core.cases`` -> ``core/``; ``bench.cli`` -> ``cli.py``; ``bench`` -> ``__init__.py``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    return f"{parts[1]}/" if (root / "bench" / parts[1]).is_dir() else f"{parts[1]}.py"


def file_of(module: str) -> str:
    """``bench.core.cases`` -> ``core/cases.py`` (the name a "may import" cell can give)."""
    parts = module.split(".")
    return "/".join(parts[1:]) + ".py" if len(parts) > 2 else unit_of(module)


def bench_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Every module of ``root``'s bench/ (faces included) -> the bench modules it imports anywhere in it."""
    modules = {module_name(p, root): p for p in (root / "bench").rglob("*.py")}
    return {name: {m for m in imports_of(path, name, set(modules)) if m.startswith("bench")} for name, path in modules.items()}


def package_edges(graph: dict[str, set[str]], root: Path = REPO) -> dict[tuple[str, str], list[str]]:
    """(unit, unit) -> the module imports that make the edge, between different units only."""
    edges: dict[tuple[str, str], list[str]] = {}
    for source, targets in graph.items():
        for target in sorted(targets):
            a, b = unit_of(source, root), unit_of(target, root)
            if a != b:
                edges.setdefault((a, b), []).append(f"{source} -> {target}")
    return edges


def forbidden_edges(graph: dict[str, set[str]], rows: list[Row], root: Path = REPO) -> list[str]:
    """Module imports that go to a unit on the same or a higher layer, or to one not in the map."""
    layer = {u: r.layer for r in rows for u in r.units}
    bad = []
    for (a, b), imports in sorted(package_edges(graph, root).items()):
        if a not in layer or b not in layer or layer[b] >= layer[a]:
            bad += [f"{i} ({a} layer {layer.get(a, '?')} -> {b} layer {layer.get(b, '?')})" for i in imports]
    return bad


def package_loops(graph: dict[str, set[str]], root: Path = REPO) -> list[list[str]]:
    """The strongly connected sets of units with more than one member (Tarjan)."""
    succ: dict[str, set[str]] = {}
    for a, b in package_edges(graph, root):
        succ.setdefault(a, set()).add(b)
        succ.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(succ[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                top = stack.pop()
                members.append(top)
                if top == node:
                    break
            if len(members) > 1:
                loops.append(sorted(members))

    for node in sorted(succ):
        if node not in index:
            visit(node)
    return loops


def disallowed_imports(graph: dict[str, set[str]], rows: list[Row]) -> list[str]:
    """Module imports that the importer's row does not name in its "may import" cell."""
    allowed = {u: r.may_import for r in rows for u in r.units}
    bad = []
    for source, targets in sorted(graph.items()):
        unit = unit_of(source)
        for target in sorted(targets):
            if unit_of(target) == unit:
                continue
            names = allowed.get(unit, set())
            if unit_of(target) not in names and file_of(target) not in names:
                bad.append(f"{source} -> {target} ({unit}'s row allows {sorted(names)})")
    return bad


@pytest.fixture(scope="module")
def layers() -> list[Row]:
    return parse_map(MAP.read_text())


@pytest.fixture(scope="module")
def whole_graph() -> dict[str, set[str]]:
    return bench_graph()


def test_no_package_imports_one_on_its_own_or_a_higher_layer(whole_graph, layers):
    assert not forbidden_edges(whole_graph, layers)


def test_packages_form_no_loop(whole_graph):
    assert not package_loops(whole_graph)


def test_no_package_imports_what_its_row_does_not_allow(whole_graph, layers):
    assert not disallowed_imports(whole_graph, layers)


def test_the_map_allows_only_lower_layers(layers):
    layer = {u: r.layer for r in layers for u in r.units}
    bad = [(u, name) for r in layers for u in r.units for name in r.may_import
           if layer.get(name if name.endswith("/") or "/" not in name else name.split("/")[0] + "/", 99) >= r.layer]
    assert not bad


def test_every_module_is_in_the_map(whole_graph, layers):
    listed = {u: r.modules for r in layers for u in r.units}
    missing = sorted(m for m in whole_graph if unit_of(m) not in listed
                     or (unit_of(m).endswith("/") and m.rsplit(".", 1)[-1] != unit_of(m)[:-1]
                         and f"{m.rsplit('.', 1)[-1]}.py" not in listed[unit_of(m)]))
    assert not missing, f"modules bench/ARCHITECTURE.md does not name: {missing}"
    stale = sorted(f"{u}{name}" for u, names in listed.items() if u.endswith("/") for name in names
                   if not (REPO / "bench" / u / name).exists())
    assert not stale, f"modules bench/ARCHITECTURE.md names that do not exist: {stale}"


def _plant(tmp_path: Path, module: str, text: str) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "bench", root / "bench", ignore=shutil.ignore_patterns("__pycache__", "*.toml", "data", "matrices"))
    target = root / "bench" / module
    target.write_text(target.read_text() + text)
    return root


def test_a_planted_deferred_upward_import_is_caught(tmp_path, layers):
    """The engine importing a command inside a function: an upward edge and, with plan -> core, a loop."""
    root = _plant(tmp_path, "core/cost.py", "\n\ndef _planted():\n    from bench.plan.budget import parse_budget  # noqa\n")
    graph = bench_graph(root)
    assert any(e.startswith("bench.core.cost -> bench.plan.budget") for e in forbidden_edges(graph, layers, root))
    assert ["core/", "plan/"] in [[u for u in loop if u in ("core/", "plan/")] for loop in package_loops(graph, root)]
    assert not forbidden_edges(bench_graph(_plant(tmp_path / "clean", "core/cost.py", "\n")), layers, root)


def test_a_module_missing_from_the_map_is_caught(tmp_path):
    rows = parse_map(MAP.read_text().replace("`shard.py` (", "`shard_gone.py` ("))
    listed = {u: r.modules for r in rows for u in r.units}
    assert "shard.py" not in listed["core/"]
    with pytest.raises(AssertionError, match="bench.core.shard"):
        test_every_module_is_in_the_map(bench_graph(), rows)


if __name__ == "__main__":  # python tests/test_architecture.py [ROOT]: the forbidden package edges of ROOT's bench/
    there = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO
    found = forbidden_edges(bench_graph(there), parse_map(MAP.read_text()), there)
    print("\n".join(found))
    print(f"{len(found)} module imports on package edges the map forbids; package loops: {package_loops(bench_graph(there), there)}")


MAX_FUNCTION_LINES = 80


def long_functions(root: Path = REPO) -> list[str]:
    """Functions (methods and nested ones too) of bench/ longer than MAX_FUNCTION_LINES, from ``def`` to their last line."""
    found = []
    for path in sorted((root / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(root).as_posix()}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_over_80_lines():
    assert not long_functions()


def test_a_long_function_is_caught(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    root = _plant(tmp_path, "units.py", f"\n\ndef _planted():\n{body}\n")
    assert [f.split(" ", 1)[1] for f in long_functions(root)] == [f"_planted ({MAX_FUNCTION_LINES + 1} lines)"]


def test_the_call_trace_counts_a_call_up_the_layers_and_nothing_else():
    """``python -m bench.selfcheck.calltrace`` (issue 29's before/after figures): a call from the engine into a
    command package climbs; a call down, or within one package, does not; an older layout's package is judged by
    today's name."""
    from bench.selfcheck.calltrace import layers, summarize

    known = layers()
    assert known["core"] < known["scale"] < known["run_command.py"] < known["cli.py"]
    edges = [["bench.core.run_command", "bench.scale.options", 2],  # b167fdb: the run command inside the engine
             ["bench.run_command", "bench.scale.options", 5],  # today: the command above the packages it calls
             ["bench.report.sections", "bench.report.tables", 7],  # within a package
             ["bench.sequence.command", "bench.core.commandline", 1]]  # the old name of downstream/, calling down
    found = summarize(edges, known)
    assert found["climbs"] == 2 and list(found["climb_edges"]) == ["bench.core.run_command -> bench.scale.options"]
    assert found["tables_entries"] == 7 and found["modules"] == 7
