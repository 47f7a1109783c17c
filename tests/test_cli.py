"""Bad command lines get one line that names the option, the value and the accepted forms, exit 2."""

from __future__ import annotations

import pytest

from bench.cli import main


@pytest.mark.parametrize("argv, expected", [
    (["plan", "--budget", "-1GB"], "--budget: bad memory size '-1GB': a size cannot be negative"),
    (["plan", "--budget", "8", "GB"], "--budget: got '8' followed by 'GB'; write the value as one word (--budget 8GB)"),
    (["plan", "--budget", "1e300TiB"], "--budget: bad memory size '1e300TiB': larger than any machine"),
    (["plan", "--gpu", "rtx4060ti"], "say which: rtx4060ti-8gb, rtx4060ti-16gb"),
    (["run", "--min-time", "nan", "--list"], "--min-time: bad minimum time nan"),
    (["run", "--min-time", "abc"], "argument --min-time: invalid float value: 'abc'"),
    (["run", "--launcher", "thread"], "argument --launcher: invalid choice: 'thread'"),
    (["report", "results", "--budget", "-2GB"], "--budget: bad memory budget '-2GB'"),
])
def test_a_bad_value_is_one_line_naming_the_option_and_exit_2(argv, expected, capsys):
    assert exit_status(argv) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err


def exit_status(argv: list[str]) -> int:
    """What ``python -m bench ARGV`` exits with: argparse's own errors leave through SystemExit."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_argparse_errors_exit_2_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["compare"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ae-bench: error: compare: the following arguments are required: baseline, candidate "
                   "(see `python -m bench compare --help`)"]


def test_a_negative_value_of_an_option_reaches_its_check():
    """Without the joining, argparse would call ``--budget -1GB`` an option without its argument."""
    from bench.cli import build_parser, prepare_argv

    assert prepare_argv(["plan", "--budget", "-1GB"], build_parser()) == ["plan", "--budget=-1GB"]
    assert prepare_argv(["plan", "--budget", "8GiB", "--predict"], build_parser()) == ["plan", "--budget", "8GiB", "--predict"]
