"""Upstream BuildKit's parser test data, run against our parser (its README is the spec of every file).

Cases are discovered from MINIBUILD_CONFORMANCE_DIR (default: ../shared/conformance beside the repo),
so any directory with the same layout works. Files are only ever read as bytes.
"""

import os
import re
from pathlib import Path

import pytest

from minibuild.dockerfile import DockerfileError, parse

REPO = Path(__file__).resolve().parent.parent
_ENV_DIR = os.environ.get("MINIBUILD_CONFORMANCE_DIR")
CONFORMANCE = Path(_ENV_DIR) if _ENV_DIR else REPO.parent / "shared" / "conformance"


def _cases(sub: str) -> list[Path]:
    folder = CONFORMANCE / sub
    return sorted(p for p in folder.iterdir() if (p / "Dockerfile").is_file()) if folder.is_dir() else []


def _require_data() -> None:
    if CONFORMANCE.is_dir():
        return
    if _ENV_DIR:
        pytest.fail(f"MINIBUILD_CONFORMANCE_DIR={_ENV_DIR} is not a directory")
    pytest.skip(f"no conformance data at {CONFORMANCE} (set MINIBUILD_CONFORMANCE_DIR)")


def test_conformance_data_present():
    _require_data()
    assert _cases("dockerfile-parser"), "no dockerfile-parser cases found"
    assert _cases("dockerfile-parser-negative"), "no dockerfile-parser-negative cases found"


@pytest.mark.parametrize("case", _cases("dockerfile-parser"), ids=lambda p: p.name)
def test_positive_case_dumps_exactly_its_result(case: Path):
    result = parse((case / "Dockerfile").read_bytes())
    expected = (case / "result").read_bytes().decode("utf-8")
    assert result.ast.dump() + "\n" == expected


@pytest.mark.parametrize("case", _cases("dockerfile-parser-negative"), ids=lambda p: p.name)
def test_negative_case_is_refused(case: Path):
    with pytest.raises(DockerfileError):
        parse((case / "Dockerfile").read_bytes())


def _expected_lines() -> dict:
    """The expected ranges for dockerfile-parser-lines, as the README's section 4 lists them."""
    text = (CONFORMANCE / "README.md").read_bytes().decode("utf-8")
    section = text[text.index("## 4.") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    count = re.search(r"Exactly (\d+) instructions", section)
    file_range = re.search(r"File range: start (\d+), end (\d+)", section)
    instructions = re.findall(r"Instruction (\d+) \(`(\w+)`[^)]*\): (\d+)\D(\d+)", section)
    assert count and file_range and instructions, "README section 4 not in the expected form"
    return {
        "count": int(count.group(1)),
        "file": (int(file_range.group(1)), int(file_range.group(2))),
        "instructions": [(int(n), kw.lower(), int(s), int(e)) for n, kw, s, e in instructions],
    }


def test_line_numbers_match_the_readme():
    _require_data()
    lines_file = CONFORMANCE / "dockerfile-parser-lines" / "Dockerfile"
    if not lines_file.is_file() or not (CONFORMANCE / "README.md").is_file():
        pytest.skip("no dockerfile-parser-lines/Dockerfile or README.md in the conformance data")
    expected = _expected_lines()
    ast = parse(lines_file.read_bytes()).ast
    assert len(ast.children) == expected["count"]
    assert (ast.start_line, ast.end_line) == expected["file"]
    for number, keyword, start, end in expected["instructions"]:
        node = ast.children[number - 1]
        assert (node.value, node.start_line, node.end_line) == (keyword, start, end)
