"""ae-bench installed as a package (a wheel, the normal way on a GPU runner), not from the checkout:
the wheel carries the report template and the data files, and a run from a folder outside the
repository writes a complete report.

The wheel is installed into a fresh virtual environment that sees this environment's packages
(torch, numpy, ...) through a path file, so nothing is downloaded and nothing of the checkout is on
its path: the run imports the installed copy (checked).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_IN_WHEEL = "bench/report/report_template.md"
BUILD_INPUT = ("pyproject.toml", "README.md", "report_template.md", "bench", "ae_models")


def run(argv: list, cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, argv))} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def outside_env() -> dict:
    """This environment without anything that would put the checkout on a child's path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def fresh_venv_seeing_this_one(folder: Path) -> Path:
    """A new venv whose site-packages lists this interpreter's site-packages in a path file: it finds torch
    and the other dependencies, but not an editable ae-bench (a listed folder's own path files are not read).
    Made without pip (ensurepip costs ~9 CPU-s): this interpreter's pip installs into it (``--python``).
    Returns its python."""
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], folder, outside_env()).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "parent-environment.pth").write_text("".join(f"{p}\n" for p in ours))
    return python


def build_input(folder: Path) -> Path:
    """What a build reads, copied from the checkout (links kept as links): a build in the checkout itself
    could pick up a stale ``build/lib`` from an earlier one and hide a file the package data leaves out."""
    folder.mkdir()
    for name in BUILD_INPUT:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, folder / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, folder / name, follow_symlinks=False)
    return folder


def test_the_top_level_template_is_a_link_to_the_packages_one():
    """One source of truth: the report reads the package's file, and the layout's top-level file is that file."""
    from bench.report.defaults import DEFAULT_TEMPLATE

    assert DEFAULT_TEMPLATE == REPO / TEMPLATE_IN_WHEEL
    assert (REPO / "report_template.md").is_symlink()
    assert (REPO / "report_template.md").resolve() == DEFAULT_TEMPLATE.resolve()


@pytest.mark.slow
def test_a_wheel_installed_outside_the_repository_writes_a_complete_report(tmp_path):
    env = outside_env()
    wheels = tmp_path / "wheels"
    source = build_input(tmp_path / "source")
    run([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "-q", "-w", wheels], source, env)
    (wheel,) = wheels.glob("ae_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert TEMPLATE_IN_WHEEL in names, "the wheel carries no report template"
    shipped = zipfile.ZipFile(wheel).read(TEMPLATE_IN_WHEEL)
    assert shipped == (REPO / "report_template.md").read_bytes(), "the top-level template and the shipped one differ"
    assert {"bench/matrices/smoke.toml", "bench/data/gpus.toml", "bench/data/seed_claims.toml"} <= set(names)

    python = fresh_venv_seeing_this_one(tmp_path / "venv")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel], tmp_path, env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([python, "-c", "import bench; print(bench.__file__)"], elsewhere, env).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), f"the run would import {where}, not the installed wheel"

    run([python, "-m", "bench", "run", "--matrix", "smoke", "--families", "cnn", "--sizes", "201x201"], elsewhere, env)
    (report,) = (elsewhere / "results").glob("*/report.md")
    text = report.read_text()
    for heading in ("## 1. What to run on NVIDIA GeForce RTX 4060", "## 2. How sure are we", "## 3. Trade-offs",
                    "## 7. Run facts"):
        assert heading in text, f"{heading!r} missing from {report}"
    assert (report.parent / "results.csv").is_file() and (report.parent / "plan.csv").is_file()
