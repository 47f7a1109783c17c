"""``python -m bench profile``: torch.profiler over cases, apart from any timed run."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.core.commandline import EXIT_FAILED, EXIT_OK, KEYWORD_HELP, Command, add_matrix_args
from bench.profile.defaults import DEFAULT_STEPS
from bench.runs.contract import PROFILE_MD


def _profile_args(parser) -> None:
    add_matrix_args(parser)
    parser.add_argument("-k", dest="keyword", default=None, help=KEYWORD_HELP)
    parser.add_argument("--out", default=None, help="folder for the profiles [default: results/<run id>-profile]")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"profiled steps per case, after warm-up and the profiler's own wait/warmup steps [default: {DEFAULT_STEPS}]")
    parser.add_argument("--list", action="store_true", help="list the cases that would be profiled, and stop")


def _profile(args) -> int:
    from bench.core.selection import check_args

    check_args(args)  # a mistyped selection is refused before the imports below load torch
    from bench.core.loop import Progress
    from bench.core.selection import case_listing, selection_from_args
    from bench.profile.profiler import profile_case, warmup_steps
    from bench.profile.report import share_of, write_overview
    from bench.runs.provenance import bench_command, new_run_id, write_provenance

    if args.steps < 1:
        raise ValueError(f"bad --steps {args.steps}: expected at least 1")
    plan = selection_from_args(args)
    cases = plan.cases
    if args.list:
        print(case_listing(cases))
        return EXIT_OK
    out = Path(args.out) if args.out else Path("results") / f"{new_run_id(plan.facts.slug)}-profile"
    print(f"ae-bench: profiling {len(cases)} cases on {plan.facts.name} ({plan.facts.type}), {args.steps} steps each -> {out}",
          file=sys.stderr)
    write_provenance(out, bench_command(getattr(args, "argv", None) or sys.argv[1:]))
    failed = False
    meter = Progress(len(cases))
    for case in cases:
        result = profile_case(case, plan.device, plan.facts, out, args.steps, warmup_steps(plan.settings))
        s = result.summary
        if result.status == "ok":
            detail = (f"{case.id}: {s['profiled_wall_ms']:.4g} ms/step profiled ({s['plain_step_ms']:.4g} unprofiled), "
                      f"sum/wall {s['coverage']:.3f}, attention {100 * share_of(s, 'attention'):.1f}% ({s['attention_kernel'] or 'none'}), "
                      f"top: {s['top_category']}, {s.get('bound', '—')}")
        else:
            failed = failed or result.status == "error"
            detail = f"{case.id}: {result.status}: {s.get('reason', '')}"
        print(meter.step(detail), file=sys.stderr)
        write_overview(out)  # after every case, so an interrupted run keeps a complete overview
    print((out / PROFILE_MD).read_text())
    print(f"ae-bench: profiles in {out} (profile.md, roofline.png, <case>/trace.json.gz)", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


COMMANDS = [Command("profile", "profile cases with torch.profiler (apart from any timed run): time by category, top ops, "
                               "traces, memory, roofline", _profile_args, _profile)]
