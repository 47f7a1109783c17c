"""Mutation testing of the modules that decide what a user sees: ``python -m bench.selfcheck.mutation [MODULE ...]``.

A planted bug (a flipped comparison, an off-by-one, a dropped ``+ 1``) that no test notices is a decision the tests
do not hold. mutmut (2.x: ``pip install -e '.[mutation]'``) plants them one at a time in each module below and runs
only the tests that cover that module (:data:`TARGETS`), so a module takes minutes, not the whole suite's quarter
hour per mutant. Each module gets its own mutmut cache (``.mutmut-cache`` is mutmut's fixed name, moved aside to
``.mutation/<module>.sqlite`` afterwards), and the summary, per module killed / survived / equivalent with every
surviving mutant's diff, is written to ``results/mutation.md`` (``--out``). A survivor is either killed by a new test
or listed in :data:`EQUIVALENT` with the reason no test can tell it apart.

mutmut edits the source file in place while a mutant is tested and puts it back afterwards: run it on a clean
working tree, and never commit while it runs (``git diff`` shows a mutant left behind by a killed run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTEST = f"{sys.executable} -m pytest -x -q -p no:cacheprovider -p no:randomly"

# module -> (the decision functions mutated, the tests that judge each mutant: files, then a -k expression); most
# important first. Only the named functions are mutated (a patch file of their lines, mutmut's --use-patch-file): the
# code around them (argument parsing, messages) is not a decision, and each mutant costs a pytest start with torch.
TARGETS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "bench/compare/ab.py": (("median_ranks", "min_rounds", "check_rounds", "paired_change"),
                            "tests/test_ab.py", "paired or rounds or median or cnns"),
    "bench/core/shard.py": (("assign",), "tests/test_scale.py", "most_expensive or twice"),
    "bench/runs/writer.py": (("_drop_partial_last_line",), "tests/test_writer_repair.py", ""),
    "bench/core/processes.py": (("is_bimodal",), "tests/test_ab.py", "bimodal"),
    "bench/compare/verdicts.py": (("Comparison.judged", "Comparison.inconclusive", "Comparison.exit_status"),
                                  "tests/test_compare.py", "inconclusive or judged or noisy_case"),
    "bench/compare/stats.py": (("time_verdict", "compare_times"), "tests/test_compare.py tests/test_ab.py",
                               "(noisy or slower or same or verdict or spread or bimodal or samples) and not real"),
}

# (module, text of the mutated line as mutmut writes it) -> why no test can tell the mutant from the original
EQUIVALENT: dict[tuple[str, str], str] = {
    ("bench/compare/ab.py", "for rank in range(1, n // 2 + 2):"):
        "one more rank is never reached: at rank n // 2 + 1 the tail P(Bin(n, 1/2) <= n // 2) is at least 1/2, so the "
        "coverage 1 - 2 tail is at most 0 and the loop has broken (confidence is above 0)",
    ("bench/core/processes.py", "return bool(between >= BIMODAL_MIN and"):
        "max / min - 1 is never exactly 0.1 in floating point (1.1 is not representable: the nearest quotients give "
        "0.09999999999999987 and 0.10000000000000009), so > and >= agree on every input",
    ("bench/core/shard.py", "heap = [(1.0, i) for i in range(n)]"):
        "every part starts with the same load, 1.0 instead of 0.0: each comparison of two loads is unchanged, so is "
        "every assignment",
}

STATUS = {"ok_killed": "killed", "bad_survived": "survived", "bad_timeout": "timeout", "ok_suspicious": "suspicious",
          "untested": "untested", "skipped": "skipped"}


@dataclass
class ModuleResult:
    module: str
    tests: str
    counts: dict[str, int] = field(default_factory=dict)
    survivors: list[tuple[int, str, str]] = field(default_factory=list)  # (mutant id, diff, equivalence reason or "")

    @property
    def equivalent(self) -> int:
        return sum(1 for _, _, why in self.survivors if why)

    @property
    def survived(self) -> int:
        return len(self.survivors) - self.equivalent

    @property
    def killed_share(self) -> float:
        killed = self.counts.get("killed", 0) + self.counts.get("timeout", 0)
        judged = killed + self.survived
        return killed / judged if judged else float("nan")


def runner(module: str) -> str:
    """The test command mutmut runs for each mutant of ``module``: this module's ``--tests-of``, because mutmut 2 counts
    only exit status 1 as a failure, and a mutant that breaks an import makes pytest exit 2 (a collection error)."""
    return f"{sys.executable} -m bench.selfcheck.mutation --tests-of {module}"


def pytest_command(module: str) -> list[str]:
    """The narrowed tests of ``module`` (:data:`TARGETS`) as a pytest command line."""
    _, files, keyword = TARGETS[module]
    return PYTEST.split() + files.split() + (["-k", keyword] if keyword else [])


def run_tests_of(module: str) -> int:
    """Run the module's narrowed tests; 1 on any failure, errors included (what mutmut reads as killed)."""
    return 0 if subprocess.run(pytest_command(module), cwd=REPO).returncode == 0 else 1


def function_lines(module: str, names: tuple[str, ...]) -> list[tuple[int, int]]:
    """(first, last) source line (1-based) of each named function or ``Class.method`` of ``module``."""
    import ast

    tree = ast.parse((REPO / module).read_text())
    found: dict[str, tuple[int, int]] = {}
    for node in tree.body:
        members = node.body if isinstance(node, ast.ClassDef) else [node]
        prefix = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
        for member in members:
            if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[prefix + member.name] = (member.lineno, member.end_lineno or member.lineno)
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"mutation: {module} has no function {', '.join(missing)} (TARGETS is out of date)")
    return [found[n] for n in names]


def write_patch(module: str, path: Path) -> Path:
    """A unified diff that 'adds' the lines of the module's decision functions: what mutmut may mutate."""
    lines = (REPO / module).read_text().splitlines()
    out = [f"--- a/{module}", f"+++ b/{module}"]
    for first, last in function_lines(module, TARGETS[module][0]):
        out.append(f"@@ -0,0 +{first},{last - first + 1} @@")
        out += ["+" + line for line in lines[first - 1:last]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    return path


def run_module(module: str, cache_dir: Path) -> ModuleResult:
    """mutmut on ``module`` with its narrowed tests; the results read back from its cache."""
    cache = REPO / ".mutmut-cache"
    saved = cache_dir / (module.replace("/", ".") + ".sqlite")
    if saved.exists():  # resume an interrupted module where it stopped
        shutil.copy2(saved, cache)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    patch = write_patch(module, cache_dir / (module.replace("/", ".") + ".patch"))
    cmd = ["mutmut", "run", "--paths-to-mutate", module, "--use-patch-file", str(patch), "--runner", runner(module),
           "--tests-dir", "tests",
           "--simple-output", "--no-progress", "-m", "4", "-b", "60"]
    print(f"mutation: {module}: {runner(module)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=REPO, env=env)
    cache_dir.mkdir(parents=True, exist_ok=True)
    shutil.move(str(cache), saved)
    return read_results(module, saved)


def read_results(module: str, cache: Path) -> ModuleResult:
    """Counts per status and every survivor's diff (``mutmut show``-like: the line before and after)."""
    result = ModuleResult(module, " ".join(pytest_command(module)) + f" (mutating {', '.join(TARGETS[module][0])})")
    shutil.copy2(cache, REPO / ".mutmut-cache")  # where `mutmut show` reads it
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT Mutant.id, Mutant.status, Line.line, Line.line_number, Mutant.`index` FROM Mutant "
                          "JOIN Line ON Mutant.line = Line.id JOIN SourceFile ON Line.sourcefile = SourceFile.id "
                          "WHERE SourceFile.filename = ?", (module,)).fetchall()
    for mutant_id, status, line, number, _ in rows:
        name = STATUS.get(status, status)
        result.counts[name] = result.counts.get(name, 0) + 1
        if name == "survived":
            shown = subprocess.run(["mutmut", "show", str(mutant_id)], cwd=REPO, capture_output=True, text=True).stdout
            mutated = next((l[1:].strip() for l in shown.splitlines() if l.startswith("+") and not l.startswith("+++")), "")
            why = next((reason for (where, text), reason in EQUIVALENT.items() if where == module and text in mutated), "")
            result.survivors.append((mutant_id, f"line {number + 1}: {shown.strip()}", why))
    (REPO / ".mutmut-cache").unlink()
    return result


def summary(results: list[ModuleResult], command: str) -> str:
    lines = ["# Mutation testing of the decision modules", "",
             f"Made by `{command}` ({mutmut_version()}, each mutant judged by the module's narrowed tests, "
             "listed below; `OMP_NUM_THREADS=1`).", "",
             "| module | functions mutated; tests run per mutant | mutants | killed | timeout (killed) | survived | "
             "equivalent | not yet tested | killed share of the tested non-equivalent |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        total = sum(r.counts.values())
        lines.append(f"| `{r.module}` | `{r.tests.replace(sys.executable + ' -m pytest', 'pytest')}` | {total} | {r.counts.get('killed', 0)} | "
                     f"{r.counts.get('timeout', 0)} | {r.survived} | {r.equivalent} | {r.counts.get('untested', 0)} | "
                     f"{r.killed_share:.0%} |")
    for r in results:
        if r.survivors:
            lines += ["", f"## Surviving mutants of `{r.module}`", ""]
            for mutant_id, diff, why in r.survivors:
                lines += [f"Mutant {mutant_id}: " + (f"**equivalent**: {why}" if why else "**survived**"), "", "```diff",
                          diff, "```", ""]
    return "\n".join(lines) + "\n"


def mutmut_version() -> str:
    done = subprocess.run(["mutmut", "version"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selfcheck.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"modules to mutate [default: all of {', '.join(TARGETS)}]")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "mutation.md",
                        help="the summary (markdown) [default: results/mutation.md]")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".mutation",
                        help="one mutmut cache per module, kept to resume and to report [default: .mutation]")
    parser.add_argument("--report-only", action="store_true", help="write the summary from the kept caches, run nothing")
    parser.add_argument("--tests-of", metavar="MODULE", default=None,
                        help="run only MODULE's narrowed tests and exit 1 on any failure (what mutmut runs per mutant)")
    args = parser.parse_args(argv)
    if args.tests_of:
        if args.tests_of not in TARGETS:
            parser.error(f"no test selection for {args.tests_of}; add it to TARGETS in {Path(__file__).name}")
        return run_tests_of(args.tests_of)
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        parser.error(f"no test selection for {', '.join(unknown)}; add it to TARGETS in {Path(__file__).name}")
    if shutil.which("mutmut") is None:
        parser.error("mutmut is not installed: pip install -e '.[mutation]'")
    modules = args.modules or list(TARGETS)
    results = []
    for module in modules:
        saved = args.cache_dir / (module.replace("/", ".") + ".sqlite")
        if args.report_only:
            if saved.exists():
                results.append(read_results(module, saved))
        else:
            results.append(run_module(module, args.cache_dir))
    command = "python -m bench.selfcheck.mutation" + (" " + " ".join(args.modules) if args.modules else "")
    args.out.write_text(summary(results, command))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
