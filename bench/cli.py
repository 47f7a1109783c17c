"""``python -m bench`` (also the ``ae-bench`` console script): a thin face over the command modules.

Each package that adds commands has a ``command.py`` with a ``COMMANDS`` list; this module imports
them (they never import it back) and dispatches. Those modules import torch only inside the
commands that need it, so ``--help`` answers at once.
Exit status: 0 done, 1 a case failed (run) or a regression (compare), 2 bad input (one line on
stderr naming the bad value), 3 an I/O error (a full disk, a read-only folder, an unwritable
output path) or an internal error (one line; ``AE_BENCH_TRACEBACK=1`` shows the traceback), 130
interrupted. No user-caused condition ends in a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Optional

from bench.core.commandline import EXIT_INTERRUPTED, EXIT_IO, EXIT_USAGE, Command

COMMAND_MODULES = (
    "bench.run_command", "bench.report.command", "bench.compare.command", "bench.plan.command",
    "bench.profile.command", "bench.quality.command", "bench.scale.command", "bench.downstream.command",
    "bench.history.command",
)


def commands() -> dict[str, Command]:
    found: dict[str, Command] = {}
    for module in COMMAND_MODULES:
        for cmd in importlib.import_module(module).COMMANDS:
            found[cmd.name] = cmd
    return found


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (naming the option) and exits 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"ae-bench: error: {self.prog.removeprefix('python -m bench').strip() or 'bench'}: {message} "
                              f"(see `{self.prog} --help`)\n")


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings of ``parser`` and its sub-commands that take one value."""
    found = set()
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.option_strings and action.nargs is None:
                found.update(action.option_strings)
    return found


def prepare_argv(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Make the two common slips of a command line clear instead of cryptic:

    - a value that starts with ``-`` (``--budget -1GB``) is joined to its option (``--budget=-1GB``), so
      the option's own check names the bad value instead of argparse saying "expected one argument";
    - a value split in two (``--budget 8 GB``) is refused in one line that names the option and both words.
    """
    takes_value = _value_options(parser)
    known = takes_value | {s for a in parser._actions for s in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in takes_value and i + 1 < len(argv):
            value = argv[i + 1]
            if value.startswith("-") and value not in known and not value.startswith("--"):
                out.append(f"{arg}={value}")
                i += 2
                continue
            if i + 2 < len(argv) and _looks_like_a_unit(value, argv[i + 2]):
                raise SystemExit(f"ae-bench: error: {arg}: got {value!r} followed by {argv[i + 2]!r}; write the value as one "
                                 f"word ({arg} {value}{argv[i + 2]}) or quote it ({arg} '{value} {argv[i + 2]}')")
        out.append(arg)
        i += 1
    return out


def _looks_like_a_unit(value: str, following: str) -> bool:
    """``8`` then ``GB``: a number and a unit that the shell split apart."""
    try:
        float(value)
    except ValueError:
        return False
    return following.lower() in {"b", "kb", "mb", "gb", "tb", "kib", "mib", "gib", "tib", "s", "ms", "%"}


def build_parser(table: Optional[dict[str, Command]] = None) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m bench", description="Benchmark PyTorch image autoencoders.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in (table or commands()).items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    table = commands()
    parser = build_parser(table)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(prepare_argv(argv, parser))
    except SystemExit as stop:
        if isinstance(stop.code, str):  # prepare_argv's one line
            print(stop.code, file=sys.stderr)
            return EXIT_USAGE
        raise
    args.argv = argv  # the command line as typed, for a printed resume command
    previous = stop_on_signals()
    try:
        return table[args.command].run(args)
    except ValueError as err:
        print(f"ae-bench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        kept = "ab keeps no rows: nothing was saved" if args.command == "ab" else "rows measured so far are in the results folder"
        print(f"ae-bench: interrupted; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `python -m bench matrices | head`: the reader left; nothing is lost
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as err:  # a full disk, a read-only folder, an unwritable --json path: not a regression, not bad input
        print(f"ae-bench: error: {os_error_text(err)}", file=sys.stderr)
        return EXIT_IO
    except Exception as err:  # noqa: BLE001 - a bug: one line and exit 3, never exit 1 (which compare means as a regression)
        frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        at = f" [{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}]" if frame else ""
        print(f"ae-bench: internal error: {type(err).__name__}: {' '.join(str(err).split())[:300]}{at} "
              "(a bug: set AE_BENCH_TRACEBACK=1 to see the traceback)", file=sys.stderr)
        if os.environ.get("AE_BENCH_TRACEBACK"):
            traceback.print_exc()
        return EXIT_IO
    finally:
        import signal

        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_on_signals() -> dict:
    """SIGTERM and SIGHUP (a batch job's kill, a closed terminal) stop a command as Ctrl-C does, in every phase (a
    run's start-up calibration and its end included, not only its sweep): a message and exit 130, never -15 or -1.
    Returns the handlers replaced (in the main thread only; elsewhere nothing changes)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            previous[sig] = signal.signal(sig, _interrupt)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # a shell script's background job starts with SIGINT ignored:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _interrupt)  # kill -INT must still stop it cleanly
    return previous


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signum)


def os_error_text(err: OSError) -> str:
    """``No space left on device: results/x/results.csv``: the system's words and the path."""
    text = err.strerror or str(err)
    named = err.filename2 if err.filename2 is not None else err.filename  # a rename's: where it was going
    return text + (f": {named}" if named is not None else "")
