"""``python -m bench history``: every case's speed over commits, the commits where it stepped, and a page
that opens from disk.

- :mod:`bench.history.sources` reads saved runs (results folders, pytest-benchmark JSON, a baseline store)
  into one point per run and case, grouped by machine key;
- :mod:`bench.history.order` puts a machine's runs in commit order (git's where the repository is at hand,
  else the runs' times);
- :mod:`bench.history.steps` finds the change points and judges each step against the noise;
- :mod:`bench.history.page` writes the static pages; :mod:`bench.history.backfill` measures a range of
  commits, one run each, in temporary worktrees.
"""
