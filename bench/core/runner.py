"""One case, run the same way by every command: skip, prepare, the command's body, a status and a reason.

    outcome = run_case(case, device, body)    # body(run) builds through ``run`` and measures
    row.update(status=outcome.status, reason=outcome.reason)

A case with a skip reason never runs (``unsupported``). Otherwise the body runs under the case's
global switches (:func:`~bench.core.steps.case_context`), and whatever it raises becomes the
outcome: :class:`~ae_models.UnsupportedAttentionError` is ``unsupported`` with its message, an
out-of-memory (:func:`is_oom`) is ``oom``, anything else ``error`` with the exception's type, its
message on one line and the file:line where it was raised. A case that tries to end the process
(``sys.exit``, or ``os._exit``, which is made to raise while the body runs) is an ``error`` too:
the sweep goes on instead of stopping with exit status 0 after one case. Whatever the body built through its
:class:`CaseRun` (a scenario, a bare model) is released afterwards, whether the body finished or
not, so the next case starts from an empty allocator.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from ae_models import UnsupportedAttentionError

from bench.core.cases import Case
from bench.core.steps import Scenario, build_for, case_context, prepare, release_memory

OK, UNSUPPORTED, OOM, ERROR = "ok", "unsupported", "oom", "error"
REASON_LIMIT = 300      # characters of an exception's message kept in a reason
TRACEBACK_FRAMES = 6    # frames of a failure's traceback kept for the files that show it


@dataclass(frozen=True)
class Outcome:
    """How a case ended: ``ok``, ``unsupported``, ``oom`` or ``error``, and why (empty when ok)."""

    status: str = OK
    reason: str = ""
    traceback: str = ""     # the last frames of an oom or an error

    @property
    def ok(self) -> bool:
        return self.status == OK


class CaseRun:
    """What a body builds through, so that the runner can release it however the body ends."""

    def __init__(self, case: Case, device: torch.device) -> None:
        self.case, self.device = case, device
        self.scenario: Optional[Scenario] = None
        self.model: Optional[nn.Module] = None

    def prepare(self, case: Optional[Case] = None, seed: int = 0) -> Scenario:
        """The case's step (model, inputs, optimizer; ``case`` for a variant such as another batch)."""
        self.scenario = prepare(case or self.case, self.device, seed)
        return self.scenario

    def build(self, seed: int = 0) -> nn.Module:
        """The case's model alone, its weights drawn from ``seed``."""
        torch.manual_seed(seed)
        self.model = build_for(self.case, self.device)
        return self.model

    def release(self) -> None:
        self.model = None
        scenario, self.scenario = self.scenario, None
        if scenario is not None:
            scenario.close()
        else:
            release_memory(self.device, compiled=self.case.compile != "off")


def run_case(case: Case, device: torch.device, body: Callable[[CaseRun], None], skip: Optional[str] = None) -> Outcome:
    """Run ``body`` for ``case`` on ``device``; never raises for a failing case (the outcome says what happened).

    ``skip`` overrides the case's own skip reason (a command with rules of its own, e.g. the plan's target GPU).
    """
    why = case.skip if skip is None else skip
    if why:
        return Outcome(UNSUPPORTED, why)
    run = CaseRun(case, device)
    cwd = os.getcwd()
    try:
        with case_context(case), no_process_exit():
            body(run)
        return Outcome(OK)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - every failure becomes an outcome; the loop goes on
        return failure(err)
    finally:
        run.release()
        if os.getcwd() != cwd:  # a case's os.chdir must not move the run's relative --results folder under it
            os.chdir(cwd)


class ProcessExitAttempt(SystemExit):
    """``os._exit(status)`` called by a case: raised instead, so that the process lives on."""


@contextlib.contextmanager
def no_process_exit():
    """While a case runs, ``os._exit`` raises :class:`ProcessExitAttempt` instead of ending the process
    (only in this process: a process the case forks keeps the real ``os._exit``)."""
    real, pid = os._exit, os.getpid()

    def refuse(status: int) -> None:
        if os.getpid() != pid:
            real(status)
        raise ProcessExitAttempt(status)

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real


def failure(err: BaseException) -> Outcome:
    """The outcome an exception stands for."""
    if isinstance(err, UnsupportedAttentionError):
        return Outcome(UNSUPPORTED, str(err))
    if isinstance(err, SystemExit):
        call = f"os._exit({err.code!r})" if isinstance(err, ProcessExitAttempt) else f"sys.exit({err.code!r})"
        return Outcome(ERROR, f"{type(err).__name__}: the case called {call}, which would end the whole sweep; "
                              f"a model must return or raise [{where(err, skip=isinstance(err, ProcessExitAttempt))}]")
    frames = "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=-TRACEBACK_FRAMES))
    if is_oom(err):
        return Outcome(OOM, one_line(err), frames)
    return Outcome(ERROR, f"{type(err).__name__}: {one_line(err)} [{where(err)}]", frames)


# What a failed allocation says when it is not the caching allocator's own torch.OutOfMemoryError:
# the CUDA runtime ("CUDA error: out of memory"), a CPU allocator, and the libraries that allocate
# their own workspaces outside the allocator (cuBLAS handles and workspaces, cuDNN, cuFFT, cuSOLVER,
# cuSPARSE). On a full card one of these can come before the allocator's own OOM: it means "does not
# fit", the same as an OOM, and must not stop the planner's search as an error.
OOM_MESSAGES = (
    "out of memory", "can't allocate memory",
    "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "CUFFT_ALLOC_FAILED", "CUSOLVER_STATUS_ALLOC_FAILED",
    "CUSPARSE_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
    # the cuBLAS handle is made lazily, at a step's first GEMM: on a full card its creation fails so
    "CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`",
)


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` says memory ran out: by type (``torch.OutOfMemoryError``, ``MemoryError``) or, for
    the RuntimeErrors that CUDA libraries raise (``torch.AcceleratorError`` is one), by message."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in OOM_MESSAGES)


def one_line(err: BaseException, limit: int = REASON_LIMIT) -> str:
    """The exception's message with its whitespace collapsed, cut at ``limit`` characters."""
    text = " ".join(str(err).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def where(err: BaseException, skip: int = 0) -> str:
    """``file.py:123``: where the exception was raised (the innermost frame, less ``skip`` frames)."""
    frames = traceback.extract_tb(err.__traceback__)[: -skip or None]
    if not frames:
        return ""
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"
