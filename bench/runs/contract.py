"""The contract between the packages that write run files and those that read them: every file name
one package writes and another reads, the key that joins a plan to a speed run, the plan's modes
and the card a run's plan answers for. Written once, here; the writers and the readers import it.

- a speed run's folder (``core/session.py`` writes it through ``runs/writer.py``; ``report/``,
  ``compare/``, ``scale/`` read it): :data:`RESULTS_CSV`, :data:`SAMPLES_JSONL`, :data:`META_JSON`;
- a plan (``plan/output.py`` writes it; ``report/first_screen.py``, ``report/companions.py`` and
  ``scale/plans.py`` read it): :data:`PLAN_CSV`, :data:`PLAN_MD`, joined to a run's rows by
  :func:`config_key`;
- a quality run (``quality/report.py`` writes it; ``report/companions.py`` reads it):
  :data:`QUALITY_META`, :data:`QUALITY_MD`, :data:`QUALITY_VERDICTS`;
- a profile (``profile/report.py`` writes it; ``report/companions.py`` reads it): :data:`PROFILE_MD`.
"""

from __future__ import annotations

RESULTS_CSV = "results.csv"
SAMPLES_JSONL = "samples.jsonl"
META_JSON = "meta.json"

PLAN_CSV = "plan.csv"
PLAN_MD = "plan.md"
PLAN_MODES = ("train", "infer")  # the modes a plan holds a row for (and the report's first screen answers)
DEFAULT_CARD = "rtx4060"  # the card a run's report answers for, unless --plan-for / --ae-plan-for say otherwise
DEFAULT_CARD_MEMORY = "8GiB"  # its memory (tests/test_architecture.py checks it against the GPU table): the report's --budget

QUALITY_META = "quality_meta.json"
QUALITY_MD = "quality.md"
QUALITY_VERDICTS = "quality_verdicts.csv"
PROFILE_MD = "profile.md"
PROVENANCE_JSON = "provenance.json"  # a plan's or a profile's folder: runs/provenance.py:write_provenance


def config_key(case_key: str) -> str:
    """A run row's ``case_key`` without its batch (``...-b8`` -> ``...``): one configuration and mode,
    the key a plan's row and a speed run's rows are joined on."""
    return str(case_key).rsplit("-b", 1)[0]
