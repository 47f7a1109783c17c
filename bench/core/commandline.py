"""What every command shares, without importing torch: exit codes, the command record, the
matrix-selection options and their help texts.

Command modules (``bench/<package>/command.py``) import this and are imported by ``bench/cli.py``;
none of them imports the CLI back.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bench.core.cases import available_matrices  # torch-free: the matrix files' names

# 0 done; 1 a case failed (run) or a regression (compare); 2 bad input (one line naming it); 3 an I/O
# error (a full disk, a read-only folder) or an internal error; 130 interrupted (Ctrl-C, SIGTERM, SIGHUP)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_IO, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# compare/ab: too few cases could be judged to call it a pass (never 0: a CI gate that could not judge fails)
EXIT_INCONCLUSIVE = 4

# axis -> help text; the option is --ae-<axis> under pytest and --<axis> on the command line
AXIS_HELP = {
    "families": "model families, comma-separated: transformer, transformer-flat, cnn, or package.module:factory",
    "presets": "presets: tiny, small, medium, large, xlarge",
    "sizes": "input sizes as WxH (1280x152 is 1280 wide, 152 high), comma-separated",
    "latents": "latent dimensions 128..8192 (0 = the preset's default)",
    "tokenizers": "transformer tokenizers: patch, flat",
    "precisions": "precisions: fp32, tf32, amp-fp16, amp-bf16, fp16, bf16",
    "attention": "attention kernels: flash, mem-efficient, cudnn, math, eager, auto",
    "checkpointing": "gradient checkpointing: on, off (or both: on,off)",
    "compile": "torch.compile modes: off, default, reduce-overhead, max-autotune",
    "modes": "what is timed: infer (forward), train (forward+backward+AdamW), embed (Embedding), sequence-infer and "
             "sequence-train (frames -> Embedding -> LSTM; 'sequence' for both)",
    "batch": "batch sizes in images (in sequences for the sequence modes), comma-separated",
    "seqlens": "sequence modes: frames per sequence, comma-separated, e.g. 8,32",
    "encoders": "sequence-train: frozen (the encoder takes no gradient), finetune (it trains with the LSTM)",
}

# every matrix file of bench/matrices, so a new matrix is listed without editing this line
MATRIX_HELP = (f"named matrix (auto, {', '.join(available_matrices())}) or a .toml path; auto = default on a GPU, "
               "quick on a CPU")
RESULTS_HELP = "folder that receives one sub-folder per run (results.csv, samples.jsonl, meta.json) [default: results]"
DEVICE_HELP = "device to measure on: auto, cpu, cuda, cuda:N [default: auto]"
MIN_TIME_HELP = "override the matrix's minimum timed seconds per case"
KEYWORD_HELP = "only cases whose id contains this text"

LAUNCHER_CHOICES = ("auto", "in-process", "subprocess")
DEFAULT_CASE_TIMEOUT_S = 900.0
MAX_CASE_TIMEOUT_S = 7 * 24 * 3600.0  # a week: a longer limit is no limit (1e300 would read as one and mean none)


def add_launcher_args(add_option, prefix: str = "--") -> None:
    """The launcher options, shared by ``run`` (``--launcher``) and pytest (``--ae-launcher``)."""
    add_option(f"{prefix}launcher", default="auto", choices=LAUNCHER_CHOICES,
               help="where each case runs: in-process (fast), subprocess (a fresh child per case: a crash, kill or hang "
                    "costs one row), auto (subprocess on CUDA, in-process on CPU) [default: auto]")
    add_option(f"{prefix}case-timeout", type=float, default=None,
               help=f"seconds before a case's child process is killed and recorded as timeout; giving it runs each case "
                    f"in a child (auto), which in-process refuses [default: {DEFAULT_CASE_TIMEOUT_S:g} with the subprocess "
                    f"launcher, none in-process]")


def check_case_timeout(seconds: float) -> float:
    """``--case-timeout``: a number of seconds above 0 and at most a week, or ValueError naming the option."""
    if not 0 < seconds <= MAX_CASE_TIMEOUT_S:  # also refuses nan and inf
        raise ValueError(f"--case-timeout: bad timeout {seconds}: expected seconds > 0 and at most {MAX_CASE_TIMEOUT_S:g} "
                         "(a week), e.g. 600")
    return seconds


@dataclass(frozen=True)
class Command:
    """One ``python -m bench NAME``: its help line, its options and what it does (returns an exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_matrix_args(parser: argparse.ArgumentParser) -> None:
    """``--matrix``, one ``--<axis>`` per axis and ``--device``: the case selection every command shares."""
    parser.add_argument("--matrix", default="auto", help=MATRIX_HELP)
    for axis, text in AXIS_HELP.items():
        parser.add_argument(f"--{axis}", default=None, help=f"narrow the matrix: {text}")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` less ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def rerun_command(argv: list[str]) -> str:
    """The shell line that runs ``python -m bench ARGV`` again with this interpreter, quoted."""
    return shlex.join([sys.executable, "-m", "bench", *argv])


def child_env(extra: Optional[dict] = None, root: Optional[Path] = None) -> dict:
    """The environment of a ``python -m bench...`` child: this one, with the folder this ``bench`` was
    imported from first on ``PYTHONPATH``, so the child runs the same code even where the package is
    not installed (a fresh clone run with ``pytest``, whose ``pythonpath`` setting reaches only itself).
    ``root``: another checkout's code instead (``python -m bench ab``'s worktrees)."""
    root = str(Path(root).resolve() if root else Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root])
    env.update(extra or {})
    return env


PROCESSES_HELP = ("measure each case in N fresh processes, one after another (each builds the model anew): the row keeps "
                  "every process's median, samples.jsonl every sample with its process, and compare resamples processes "
                  "first; a case whose process medians split is flagged bimodal [default: the matrix's [timing] processes, "
                  "1; the ci matrix: 3]")
