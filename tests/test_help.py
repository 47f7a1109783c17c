"""A user's first contact: ``--help`` of the top-level command and of every subcommand, and a mistyped
selection, each answered in a fresh process at once (torch never imported) and without a traceback.

The subcommands are enumerated from the CLI's own registry (``bench.cli.commands()``), so a new
command is covered without editing this file.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import commands
from bench.core.commandline import child_env

REPO = Path(__file__).resolve().parents[1]

# Runs bench.cli.main in a fresh interpreter and reports, as the last line of stdout, its exit status and
# whether torch was imported by then (argparse's --help and its errors leave through SystemExit).
PROBE = """
import json, sys
from bench.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as stop:
    rc = stop.code if isinstance(stop.code, int) else 2
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules}))
"""


def probe(argv: list[str]) -> tuple[int, bool, str, str]:
    """``python -m bench ARGV`` in a child: (exit status, torch imported, stdout without the probe's line, stderr).
    One child per command line in this process: a test that reads the same one again (`run --help`) gets its answer."""
    return _probe(tuple(argv))


@functools.lru_cache(maxsize=None)
def _probe(argv: tuple[str, ...]) -> tuple[int, bool, str, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=child_env({"OMP_NUM_THREADS": "1"}))
    lines = out.stdout.rstrip("\n").splitlines()
    assert out.returncode == 0 and lines, f"the probe itself failed (exit {out.returncode}): {out.stderr[-2000:]}"
    facts = json.loads(lines[-1])
    return facts["rc"], facts["torch"], "\n".join(lines[:-1]), out.stderr


@pytest.mark.parametrize("command", [None, *commands()], ids=lambda c: c or "top-level")
def test_help_renders_at_once_without_a_traceback(command):
    argv = ([command] if command else []) + ["--help"]
    rc, torch_loaded, out, err = probe(argv)
    assert rc == 0, err
    assert "Traceback" not in out + err and "Error" not in err, err
    assert out.startswith("usage: python -m bench" + (f" {command}" if command else "")), out[:200]
    assert not torch_loaded, f"`python -m bench {' '.join(argv)}` imported torch"


@pytest.mark.parametrize("argv, needle", [
    (["run", "--matrix", "nosuch"], "unknown matrix 'nosuch'"),
    (["run", "--sizes", "201x"], "bad image size '201x'"),
    (["run", "--matrix", "smoke", "--precisions", "fp33"], "fp33"),
    (["plan", "--matrix", "nosuch"], "unknown matrix 'nosuch'"),
    (["profile", "--sizes", "201x"], "bad image size '201x'"),
])
def test_a_mistyped_selection_is_refused_before_torch_loads(argv, needle):
    rc, torch_loaded, _, err = probe(argv)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not torch_loaded, f"`python -m bench {' '.join(argv)}` imported torch before refusing"


def test_the_matrix_help_names_every_matrix_file():
    """Read from the folder here, not from the code under test: a matrix file added later is listed too."""
    rc, _, out, _ = probe(["run", "--help"])
    text = " ".join(out.split())
    files = sorted(p.stem for p in (REPO / "bench" / "matrices").glob("*.toml"))
    assert rc == 0 and len(files) >= 7
    assert [name for name in files if f" {name}," not in text and f" {name})" not in text] == []
