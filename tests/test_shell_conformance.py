"""Upstream's shell-word tables (buildkit frontend/dockerfile/shell/envVarTest, wordsTest) against our Lex.

The tables live in MINIBUILD_CONFORMANCE_DIR (default: ../shared/conformance beside the repo) and
are read exactly as upstream's lex_test.go reads them; their format is in that folder's README, §5.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from minibuild.dockerfile.gotext import trim_space
from minibuild.dockerfile.shell import Lex, ShellError

ROOT = Path(__file__).resolve().parent.parent
ENV_VAR_TEST_ENV = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]


class MalformedTable(Exception):
    """A table line that does not follow the README's format."""


def conformance_dir() -> Path | None:
    """The conformance folder; None if the default one is absent. A configured but missing one is an error."""
    configured = os.environ.get("MINIBUILD_CONFORMANCE_DIR")
    if configured:
        path = Path(configured)
        if not path.is_dir():
            raise FileNotFoundError(f"MINIBUILD_CONFORMANCE_DIR={configured} is not a directory")
        return path
    path = ROOT.parent / "shared" / "conformance"
    return path if path.is_dir() else None


def table_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) as Go's bufio.Scanner yields them: split at LF, one trailing CR dropped."""
    text = path.read_bytes().decode("utf-8")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [(n, line.removesuffix("\r")) for n, line in enumerate(lines, 1)]


@dataclass
class EnvVarRow:
    line: int
    platform: str  # A (all), U (not Windows), W (Windows only)
    source: str
    expected: str  # "error" means ProcessWord must fail


def load_env_var_test(path: Path) -> list[EnvVarRow]:
    rows = []
    for n, line in table_lines(path):
        if line.startswith("#"):
            continue
        line = trim_space(line)
        if not line:
            continue
        fields = line.split("|")
        if len(fields) != 3:
            raise MalformedTable(f"{path.name} line {n}: expected 3 fields separated by |, got {len(fields)}")
        platform, source, expected = (trim_space(f) for f in fields)
        if platform not in ("A", "U", "W"):
            raise MalformedTable(f"{path.name} line {n}: platform must be W, A or U, got {platform!r}")
        rows.append(EnvVarRow(n, platform, source, expected))
    return rows


@dataclass
class WordsRow:
    line: int
    source: str
    expected: list[str]  # ["error"] means ProcessWords must fail
    env: list[str]  # the ENV lines above this row


def load_words_test(path: Path) -> list[WordsRow]:
    rows = []
    env: list[str] = []
    for n, line in table_lines(path):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            env.append(line[3:].lstrip(" "))
            continue
        fields = line.split("|")
        if len(fields) != 2:
            raise MalformedTable(f"{path.name} line {n}: expected exactly one |, in {line!r}")
        rows.append(WordsRow(n, trim_space(fields[0]), fields[1].lstrip(" ").split(","), list(env)))
    return rows


def _params(loader, filename):
    """pytest params for every row, or one skipped param if the data is absent."""
    folder = conformance_dir()
    if folder is None:
        reason = "conformance data not found at ../shared/conformance; set MINIBUILD_CONFORMANCE_DIR"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-data")]
    return loader(folder / "shell" / filename)


def _env_var_params():
    params = []
    for row in _params(load_env_var_test, "envVarTest"):
        if not isinstance(row, EnvVarRow):  # the skipped no-data param, with this test's two values
            return [pytest.param(None, None, marks=row.marks, id=row.id)]
        # Unix runs A and U rows; Windows (case-insensitive names) runs A and W rows.
        if row.platform in ("A", "U"):
            params.append(pytest.param(row, False, id=f"L{row.line}-unix"))
        if row.platform in ("A", "W"):
            params.append(pytest.param(row, True, id=f"L{row.line}-windows"))
    return params


def _words_params():
    rows = _params(load_words_test, "wordsTest")
    return [r if not isinstance(r, WordsRow) else pytest.param(r, id=f"L{r.line}") for r in rows]


@pytest.mark.parametrize("row,case_insensitive", _env_var_params())
def test_env_var_table(row: EnvVarRow, case_insensitive: bool):
    lex = Lex("\\", case_insensitive=case_insensitive)
    if row.expected == "error":
        with pytest.raises(ShellError):
            result = lex.process_word(row.source, ENV_VAR_TEST_ENV)
            pytest.fail(f"{row.source!r} should fail, gave {result!r}")
        # upstream's second entry point (ProcessWordWithMap) takes the environment as a map
        with pytest.raises(ShellError):
            lex.process_word(row.source, dict(e.split("=", 1) for e in ENV_VAR_TEST_ENV))
    else:
        assert lex.process_word(row.source, ENV_VAR_TEST_ENV) == row.expected
        assert lex.process_word(row.source, dict(e.split("=", 1) for e in ENV_VAR_TEST_ENV)) == row.expected


@pytest.mark.parametrize("row", _words_params())
def test_words_table(row: WordsRow):
    try:
        result = Lex("\\").process_words(row.source, row.env)
    except ShellError:
        result = ["error"]
    assert result == row.expected


# --- the harness itself: it must fail loudly on data that breaks the format ---


def test_tables_are_not_empty():
    folder = conformance_dir()
    if folder is None:
        pytest.skip("conformance data not found")
    assert len(load_env_var_test(folder / "shell" / "envVarTest")) > 100
    words = load_words_test(folder / "shell" / "wordsTest")
    assert len(words) > 10
    # the ENV row with three trailing spaces survives reading
    assert any(e == "trailing=ab c   " for e in words[-1].env)


@pytest.mark.parametrize(
    "content",
    ["A|a|b|c\n", "A|only two\n", "X|a|b\n"],
    ids=["four-fields", "two-fields", "bad-platform"],
)
def test_malformed_env_var_table_fails(tmp_path, content):
    path = tmp_path / "envVarTest"
    path.write_bytes(content.encode())
    with pytest.raises(MalformedTable):
        load_env_var_test(path)


@pytest.mark.parametrize(
    "content", ["a | b\n\n", "a | b | c\n", "no bar\n"], ids=["blank", "two-bars", "no-bar"]
)
def test_malformed_words_table_fails(tmp_path, content):
    path = tmp_path / "wordsTest"
    path.write_bytes(content.encode())
    with pytest.raises(MalformedTable):
        load_words_test(path)


def test_table_reading_rules(tmp_path):
    path = tmp_path / "envVarTest"
    # comment only when # is the first character; CRLF tolerated; empty EXPECTED allowed; no final LF
    path.write_bytes(b"# c|o|mment\r\n\nU| $1 |\r\nA|'\xed\x95\x9c'|\xed\x95\x9c")
    rows = load_env_var_test(path)
    assert [(r.line, r.platform, r.source, r.expected) for r in rows] == [
        (3, "U", "$1", ""),
        (4, "A", "'한'", "한"),
    ]
    path.write_bytes(b" # not a comment|x|y\n")
    with pytest.raises(MalformedTable):
        load_env_var_test(path)


def test_words_table_env_accumulates(tmp_path):
    path = tmp_path / "wordsTest"
    path.write_bytes(b"ENV   a=1  \nx|y\nENV a=2\nENV b\n# c\n$a$b | 2\n")
    first, second = load_words_test(path)
    assert first.env == ["a=1  "]
    assert second.env == ["a=1  ", "a=2", "b"]
    assert Lex().process_words(second.source, second.env) == second.expected


def test_configured_dir_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIBUILD_CONFORMANCE_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        conformance_dir()
    monkeypatch.setenv("MINIBUILD_CONFORMANCE_DIR", str(tmp_path))
    assert conformance_dir() == tmp_path


def test_missing_default_data_skips(monkeypatch):
    monkeypatch.delenv("MINIBUILD_CONFORMANCE_DIR", raising=False)
    monkeypatch.setattr(Path, "is_dir", lambda self: False)
    (param,) = _params(load_words_test, "wordsTest")
    assert param.id == "no-data"
    assert [m.name for m in param.marks] == ["skip"]
    (param,) = _env_var_params()  # as many values as the test takes (row, case_insensitive)
    assert (param.values, param.id, [m.name for m in param.marks]) == ((None, None), "no-data", ["skip"])
