"""The contract between the packages that write run files and those that read them (bench/runs/contract.py):
file names declared once, one join key, the default card and its memory agreeing, one provenance record."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
from pathlib import Path

from bench.runs import contract, provenance

REPO = Path(__file__).resolve().parents[1]
FILE_NAMES = {v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str) and "." in v}


def copies_of_contract_names(root: Path = REPO) -> list[str]:
    """String constants in bench/ equal to a contract file name, outside the contract itself and selfcheck/
    (the fault harness reads run folders by their documented names, as a user would: an independent check)."""
    found = []
    for path in sorted((root / "bench").rglob("*.py")):
        rel = path.relative_to(root / "bench").as_posix()
        if rel == "runs/contract.py" or rel.startswith("selfcheck/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in FILE_NAMES:
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    return found


def test_no_package_declares_a_contract_file_name_again():
    assert not copies_of_contract_names()


def test_a_planted_copy_of_a_file_name_is_caught(tmp_path):
    root = tmp_path / "repo"
    (root / "bench" / "report").mkdir(parents=True)
    (root / "bench" / "runs").mkdir()
    (root / "bench" / "runs" / "contract.py").write_text('PLAN_CSV = "plan.csv"\n')
    (root / "bench" / "report" / "first_screen.py").write_text('PLAN_CSV = "plan.csv"  # a copy\n')
    assert copies_of_contract_names(root) == ["report/first_screen.py:1 'plan.csv'"]


def test_the_join_key_drops_the_batch_and_nothing_else():
    from bench.core.cases import Case

    base = dict(family="transformer", preset="tiny", size="201x201", latent=128, precision="fp32", attention="flash",
                mode="train")
    same = [Case(**base, batch=b) for b in (1, 16, 256)]
    assert len({contract.config_key(c.key) for c in same}) == 1
    others = [Case(**{**base, "mode": "infer"}, batch=4), Case(**{**base, "latent": 256}, batch=4),
              Case(**base, checkpointing=True, batch=4), Case(**{**base, "size": "1280x152"}, batch=4)]
    assert len({contract.config_key(c.key) for c in [same[0], *others]}) == 5
    assert all(contract.config_key(c.key) + f"-b{c.batch}" == c.key for c in [*same, *others])


def test_planner_and_report_join_with_the_one_function():
    """No second definition of the join key: the planner writes it and the report reads it with contract.config_key."""
    defs = [f"{p.relative_to(REPO).as_posix()}" for p in (REPO / "bench").rglob("*.py")
            for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.FunctionDef) and n.name == "config_key"]
    assert defs == ["bench/runs/contract.py"]
    from bench.plan import planner
    from bench.report import first_screen

    assert planner.config_key is contract.config_key and first_screen.config_key is contract.config_key


def test_the_default_card_and_its_memory_agree():
    from bench.cli import build_parser
    from bench.plan.budget import find_gpu
    from bench.report.defaults import DEFAULT_BUDGET
    from bench.units import GIB, parse_bytes

    assert find_gpu(contract.DEFAULT_CARD)["memory_gib"] * GIB == parse_bytes(contract.DEFAULT_CARD_MEMORY)
    assert DEFAULT_BUDGET == contract.DEFAULT_CARD_MEMORY
    assert build_parser().parse_args(["run"]).plan_for == contract.DEFAULT_CARD
    assert build_parser().parse_args(["report", "x"]).budget == contract.DEFAULT_CARD_MEMORY


def test_provenance_quotes_the_command_and_records_commit_dirty_and_time(monkeypatch):
    def fake_run(cmd, **kwargs):
        out = {"rev-parse": "abc1234\n", "status": " M bench/cli.py\n"}.get(cmd[1], "diff --git a b\n")
        return subprocess.CompletedProcess(cmd, 0, out if "--binary" not in cmd else out.encode(), "")

    monkeypatch.setattr(provenance.subprocess, "run", fake_run)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    record = provenance.provenance(provenance.bench_command(["run", "-k", "tiny train"], env=("OMP_NUM_THREADS",)))
    assert record["command"] == "OMP_NUM_THREADS=2 python -m bench run -k 'tiny train'"
    assert record["commit"] == "abc1234" and record["dirty"] is True and record["tree"].startswith("dirty:")
    assert dt.datetime.fromisoformat(record["created"]).tzinfo is not None
    assert set(record) == {"created", "commit", "dirty", "tree", "command"}


def test_every_command_that_writes_a_folder_records_the_one_provenance():
    """run (through run_meta), quality, downstream, plan and profile call runs/provenance.py's record."""
    users = {"bench/runs/provenance.py": "provenance", "bench/quality/command.py": "provenance",
             "bench/downstream/command.py": "provenance", "bench/plan/command.py": "write_provenance",
             "bench/profile/command.py": "write_provenance", "bench/core/session.py": "run_meta"}
    for rel, name in users.items():
        calls = {n.func.id for n in ast.walk(ast.parse((REPO / rel).read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert name in calls, f"{rel} does not call {name}"
    body = ast.unparse(next(n for n in ast.walk(ast.parse((REPO / "bench/runs/provenance.py").read_text()))
                            if isinstance(n, ast.FunctionDef) and n.name == "run_meta"))
    assert "provenance(" in body
