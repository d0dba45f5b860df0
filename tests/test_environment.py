"""environment.yml (conda, Binder) must list the same Python packages as pyproject.toml."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs.update(r for r in extra if not r.startswith("minibuild"))
    return reqs


def environment_pip_requirements() -> set[str]:
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    entries = re.findall(r"^\s+- (\S+)\s*$", pip_block, flags=re.M)
    return {e for e in entries if e not in ("-e", ".")}


def test_environment_yml_matches_pyproject():
    assert environment_pip_requirements() == pyproject_requirements()


def test_environment_yml_has_conda_graphviz():
    text = (ROOT / "environment.yml").read_text()
    for pkg in ("python=3.11", "graphviz", "python-graphviz", "pip"):
        assert re.search(rf"^  - {re.escape(pkg)}$", text, flags=re.M), pkg
