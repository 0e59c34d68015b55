"""environment.yml and pyproject.toml describe the same environment."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[ ;]", requirement.strip().strip('"'), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_every_pyproject_dependency_with_the_same_bounds():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    text = (ROOT / "environment.yml").read_text()
    pip = [line.split("- ", 1)[1].strip().strip('"') for line in text.splitlines() if line.startswith("      - ")]
    assert {_name(d): d for d in deps} == {_name(p): p for p in pip if p != "-e ."}
    assert "-e ." in pip


def test_ci_runs_make_test_only():
    lines = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l and not l.startswith("#")]
    assert lines[-1] == "make test"
