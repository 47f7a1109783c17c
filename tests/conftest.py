"""Shared test setup: every test runs on CPU, seeded, with one torch thread (child processes too).

One thread because the CI machine has two cores and keeps one of them busy with another process for
the whole suite: two OpenMP threads would wait for each other at every parallel loop while the busy
process holds a core, which makes each model step 10-50x slower and changes no result a test checks.
Under pytest-xdist (`pytest -n auto`, the README's test command) each worker imports this file, so each
keeps one thread too.

Under pytest-xdist the tests that share a module- or session-scoped fixture (a real run, a sweep, a
trained model) run on one worker (`--dist loadgroup`, the groups made below), so the fixture is made once
for the whole suite instead of once per worker; every other test goes to whichever worker is free.
"""

from __future__ import annotations

import gc
import os

# before torch is imported here, and inherited by every command line a test runs in a child process
os.environ["OMP_NUM_THREADS"] = "1"
# A pytest-xdist worker names itself in the environment; a `pytest bench` session that a test starts would
# inherit that, and pytest-benchmark then turns itself off ("xdist is active") and saves no JSON. Those
# sessions are pytest runs of their own, one case at a time: they must not read as workers.
for _name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
    os.environ.pop(_name, None)

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")
torch.set_num_threads(1)  # for module- and session-scoped fixtures too (torch may have been imported before this file)


def pytest_configure(config):
    # `-n N` alone means `--dist load`, which spreads a shared fixture's tests over every worker (each
    # then makes it again); loadgroup keeps them together (the groups are made below) and balances the rest.
    # The controller schedules by group; each worker must also name its tests by group (xdist reads that from
    # the worker's own command line, which has no --dist here): told through the worker's input, below.
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
    if getattr(config, "workerinput", {}).get("ae_dist") == "loadgroup":
        config.option.loadgroup = True


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook, on the controller; absent without xdist
def pytest_configure_node(node):
    node.workerinput["ae_dist"] = node.config.option.dist


def shared_fixture_groups(items) -> dict[str, str]:
    """nodeid -> the xdist group of the tests that share one of its module- or session-scoped fixtures
    (this suite's own, not pytest's), connected: a test that uses two of them joins their groups."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    shared = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        keys = []
        for name, defs in (info.name2fixturedefs.items() if info else ()):
            fixture = defs[-1]
            if fixture.scope in ("module", "session") and fixture.baseid:  # baseid "": pytest's or a plug-in's
                keys.append(f"{fixture.baseid}::{name}" if fixture.scope == "module" else name)
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
        if keys:
            shared[item.nodeid] = keys[0]
    return {nodeid: root(key) for nodeid, key in shared.items()}


def pytest_collection_finish(session):
    """Every object alive once the tests are collected (torch, pandas, the modules under test: about 450,000) is
    put out of the garbage collector's reach. The harness calls gc.collect() around every step it measures in
    this process (bench/core/steps.py:release_memory, the memory model's traces, the memory pass), and each
    full collection walked them all again: tests/test_measure.py and tests/test_memory.py, with the whole suite
    collected, spent 31.6 CPU-s in their 72 calls, 1.8 with the freeze. What a test makes later is collected
    as before, and nothing in bench/ or tests/ reads the collector's lists."""
    gc.collect()
    gc.freeze()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the markers
def pytest_collection_modifyitems(config, items):
    groups = shared_fixture_groups(items)
    for item in items:
        if item.nodeid in groups:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))


@pytest.fixture(autouse=True)
def deterministic_cpu():
    """Seed torch and pin the thread count, so figures do not depend on the test order or the machine's load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def speed_face_session(tmp_path_factory):
    """One real ``pytest bench/test_speed.py`` session (the speed face) of the smoke matrix's CNN inference case
    at 201x201, with ``--ae-plan-budget 8GiB``: tests/test_faces.py compares it with the command line's run of
    the same case, tests/test_commands.py reads the plan it wrote. Made once for both (an interpreter start, a
    run start and end, and a plan). Returns the folder it ran in (its run folder under ``p/``) and the process."""
    from tests.test_faces import pytest_face

    folder = tmp_path_factory.mktemp("speed-face")
    # a hang guard only: the session plans too (the plan-budget test gave it 600 s), on a machine that may be busy
    return folder, pytest_face(folder, "--ae-plan-budget", "8GiB", timeout=900)

