"""The GitHub Actions workflows pass actionlint (built with Go into the project cache on first
use; a build failure fails this test, it never skips), and say what the project promises: the
README's test command, the containers suite, images + compose + smoke test, pinned actions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import pytest
import yaml  # type: ignore[import-untyped]  # in the dev lock (schemathesis, kubernetes-validate); no stubs

from devtools.actionlint import ACTIONLINT_VERSION, WORKFLOWS, install_actionlint, lint_workflows
from devtools.stack.config import default_cache_dir
from devtools.stack.errors import StackError

# The first build downloads actionlint's module and dependencies through the Go proxy.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(20 * 60)]

PINNED: Final = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def _workflows() -> dict[str, Any]:
    jobs: dict[str, Any] = {}
    for path in sorted(WORKFLOWS.glob("*.y*ml")):
        jobs.update(yaml.safe_load(path.read_text())["jobs"])
    return jobs


def test_workflows_pass_actionlint() -> None:
    try:
        binary = install_actionlint(default_cache_dir())
    except StackError as exc:
        pytest.fail(f"could not build actionlint {ACTIONLINT_VERSION}:\n{exc}", pytrace=False)
    done = lint_workflows(binary)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_fails_a_broken_workflow(tmp_path: Path) -> None:
    """The check above can fail: an unknown runner label and a bad expression are reported."""
    binary = install_actionlint(default_cache_dir())
    (tmp_path / "bad.yml").write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latst\n"
        "    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    done = lint_workflows(binary, tmp_path)
    assert done.returncode != 0
    assert "bad.yml" in done.stdout


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def test_the_jobs_the_project_promises() -> None:
    jobs = _workflows()
    readme = (WORKFLOWS.parents[1] / "README.md").read_text()
    assert "make test" in readme
    by_command = {name: _runs(job) for name, job in jobs.items()}
    local = [n for n, r in by_command.items() if re.search(r"\bmake test(\s|$)", r, re.M)]
    assert any(jobs[n].get("env", {}).get("TEST_SERVERS") == "local" for n in local)
    assert any(jobs[n].get("env", {}).get("TEST_SERVERS") == "containers" for n in local)
    compose = [n for n, r in by_command.items() if "scripts/smoke-test.sh" in r]
    assert len(compose) == 1
    job = jobs[compose[0]]
    runs = by_command[compose[0]]
    for needle in ("processor/Dockerfile", "producers/Dockerfile", "cp compose/.env.example",
                   " up -d", " down"):  # fmt: skip
        assert needle in runs, needle
    assert job["env"]["COMPOSE_FILE"] == "compose/single-host.yml"
    down = next(s for s in job["steps"] if " down" in str(s.get("run", "")))
    assert down.get("if") == "always()"
    upload = [s for s in job["steps"] if "upload-artifact" in str(s.get("uses", ""))]
    assert upload
    assert upload[0].get("if") == "failure()"


def test_every_action_is_pinned_by_commit() -> None:
    for name, job in _workflows().items():
        for step in job["steps"]:
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"{name}: {step['uses']} is not pinned"
