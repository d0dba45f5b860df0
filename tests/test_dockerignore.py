"""Tests for minibuild.dockerfile.dockerignore: reading .dockerignore, matching, walking a context."""

import os
import re
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibuild.dockerfile.dockerignore import (
    ContextError,
    DockerignoreError,
    MatchType,
    PatternMatcher,
    clean,
    excluded,
    read_ignore_file,
    walk_context,
)
from minibuild.dockerfile.gotext import trim_space

# --- reading the file ------------------------------------------------------------------------------

# no per-example deadline: the machine may be loaded; generation may be slow there too
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_read_ignore_file():
    content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! "
    assert read_ignore_file(content) == [
        "test1",
        "test2",
        "a/file/here",
        "lastfile",
        "!inverted/abs/path",
        "!",
        "!",
    ]


@pytest.mark.parametrize(
    "content,patterns",
    [
        ("\ufeff# comment\nx", ["x"]),  # byte-order mark on the first line only
        (b"\xef\xbb\xbfa\r\nb\r\n", ["a", "b"]),
        ("a\n\ufeffb", ["a", "\ufeffb"]),
        (" # not a comment\n", ["# not a comment"]),
        ("\t a/./b/../c/ \t\n", ["a/c"]),
        ("/\n//x\n/../y\n../z\n./\n", ["/", "x", "y", "../z", "."]),
        ("!/a/\n!  b\n", ["!a", "!b"]),
        ("a\u3000\n", ["a"]),  # trimmed like Go's TrimSpace
        ("a\x1c\n", ["a\x1c"]),  # ... which does not trim U+001C
        ("", []),
        (b"caf\xe9\n", ["caf\udce9"]),  # invalid UTF-8 kept as os.fsdecode would keep it
    ],
)
def test_read_ignore_file_rules(content, patterns):
    assert read_ignore_file(content) == patterns


def test_overlong_line_is_an_error():
    assert read_ignore_file("a" * 65535 + "\n") == ["a" * 65535]
    with pytest.raises(DockerignoreError, match="token too long"):
        read_ignore_file("a" * 65536 + "\n")


@pytest.mark.parametrize(
    "path,cleaned",
    [
        ("", "."),
        (".", "."),
        ("/", "/"),
        ("//", "/"),
        ("//a//b//", "/a/b"),
        ("a/./b", "a/b"),
        ("a/../..", ".."),
        ("/../a", "/a"),
        ("./a/", "a"),
        ("a/b/../../c", "c"),
        ("../../a", "../../a"),
    ],
)
def test_clean_is_go_filepath_clean(path, cleaned):
    assert clean(path) == cleaned


# --- one pattern -----------------------------------------------------------------------------------

EXACT, PARENT, FAIL = "exact", "parent", "fail"  # matches itself / only through a parent / not at all


@pytest.mark.parametrize(
    "pattern,path,how",
    [
        ("**", "file", EXACT),
        ("**", "dir/file/", EXACT),
        ("**/", "/", EXACT),
        ("**/**", "dir/file", EXACT),
        ("dir/**", "dir/dir2/file", EXACT),
        ("dir/**", "dir", FAIL),
        ("**/dir", "dir", EXACT),
        ("**/dir", "dir/file", PARENT),
        ("**/dir2/*", "dir/dir2/file", EXACT),
        ("**/dir2/*", "dir/dir2/file/", PARENT),
        ("**/dir2/**", "dir/dir2/dir3/file", EXACT),
        ("**file", "dir/dir/file", EXACT),
        ("**/file*.txt", "dir/dir/file.txt", EXACT),
        ("**/**/*.txt2", "dir/dir/file.txt", FAIL),
        ("**/*.txt", "file.txt", EXACT),
        ("a**/*.txt", "a/dir/dir/file.txt", EXACT),
        ("a/*.txt", "a/dir/file.txt", FAIL),
        ("a/*.txt**", "a/file.txt", EXACT),
        ("a[b-d]e", "ace", EXACT),
        ("a[b-d]e", "ae", FAIL),
        ("a[^b-d]e", "aze", EXACT),
        ("a[^b]e", "a/e", EXACT),  # a negated class may match /, as in filepath.Match
        (".*", ".foo", EXACT),
        (".*", "foo", FAIL),
        ("abc.def", "abcZdef", FAIL),
        ("abc?def", "abcZdef", EXACT),
        ("abc?def", "abc/def", FAIL),
        ("**/.foo", "bar.foo", FAIL),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", EXACT),
        ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", EXACT),
        ("a\\\\", "a\\", EXACT),
        ("a\\*b", "a*b", EXACT),
        ("a\\*b", "axb", FAIL),
        ("a\\d", "ad", EXACT),  # an escaped letter is that letter
        ("a?b", "a☺b", EXACT),
        ("[a-ζ]*", "α", EXACT),
        ("[\\]a]", "]", EXACT),
        ("[x\\-]", "-", EXACT),
        ("[[]", "[", EXACT),
        ("a]", "a]", EXACT),
        ("a^b", "a^b", EXACT),  # no wildcard: compared as text
        ("a^b*", "a^b", FAIL),  # upstream's regexp reads ^ as an anchor
        ("docs", "docs/sub/README.md", PARENT),
        ("*/sub", "docs/sub/README.md", PARENT),
        ("*/*.md", "docs/sub/README.md", FAIL),
        ("a*", "ab/c", PARENT),
        ("a*\n", "a\nb", EXACT),  # * runs over newlines; the pattern is trimmed first
        ("a?b", "a\nb", EXACT),
        ("dir/**", "dir/a\nb", EXACT),
    ],
)
def test_single_pattern(pattern, path, how):
    pm = PatternMatcher([pattern])
    assert pm.matches_exact(path) == (how == EXACT)
    assert pm.matches(path) == (how != FAIL)
    assert pm.matches_using_parent_results(path)[0] == (how != FAIL)


@pytest.mark.parametrize(
    "pattern,match_type",
    [
        ("**", MatchType.SUFFIX),
        ("**/dir", MatchType.SUFFIX),
        ("**/foo.bar", MatchType.SUFFIX),
        ("dir/**", MatchType.PREFIX),
        ("a(b)c/def", MatchType.EXACT),
        ("**/**", MatchType.REGEXP),
        ("**/dir2/*", MatchType.REGEXP),
        ("a\\*", MatchType.REGEXP),
        ("a[b]", MatchType.REGEXP),
    ],
)
def test_match_types(pattern, match_type):
    assert PatternMatcher([pattern]).patterns[0].match_type is match_type


@pytest.mark.parametrize(
    "pattern",
    [
        "[]a]",
        "[-]",
        "[x-]",
        "[-x]",
        "\\",
        "a\\",
        "[a-b-c]",
        "[",
        "[^",
        "[^bc",
        "a[",
        "[^]",
        "[\\]",
        "[z-a]",
        "[Local-Only]/",
    ],
)
def test_bad_patterns(pattern):
    with pytest.raises(DockerignoreError, match="syntax error in pattern"):
        PatternMatcher([pattern])
    with pytest.raises(DockerignoreError):
        excluded("x", ["ok", pattern])


def test_lone_exclamation_mark():
    with pytest.raises(DockerignoreError, match='illegal exclusion pattern: "!"'):
        PatternMatcher(["a", "!"])
    with pytest.raises(DockerignoreError):
        PatternMatcher(read_ignore_file("!/\n"))


def test_patterns_are_trimmed_and_cleaned():
    pm = PatternMatcher(["docs", "", "  !docs/README.md  ", "a//b/"])
    assert [(p.cleaned_pattern, p.exclusion) for p in pm.patterns] == [
        ("docs", False),
        ("docs/README.md", True),
        ("a/b", False),
    ]
    assert pm.exclusions and not PatternMatcher(["a"]).exclusions


# --- several patterns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patterns,path,expected",
    [
        (["*.go"], "fileutils.go", True),
        (["!fileutils.go", "*.go"], "fileutils.go", True),  # the last match wins
        (["*.go", "!fileutils.go"], "fileutils.go", False),
        (["docs", "!docs/README.md"], "docs/README.md", False),
        (["docs/", "!docs/README.md"], "docs/README.md", False),
        (["docs/*", "!docs/README.md"], "docs/README.md", False),
        (["docs", "!docs/README.md"], "docs/other.md", True),
        (["**", "!util/docker/web"], "util/docker/web/foo", False),
        (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
        (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
        (["*.go"], ".", False),  # the context itself is never excluded
        (["*"], "./a/../b", True),
        ([], "any/path", False),
    ],
)
def test_excluded(patterns, path, expected):
    assert excluded(path, patterns) is expected


def test_walk_results_can_differ_from_matches():
    # MatchesUsingParentResults (what the CLI packs with) does not re-check the parents of a path
    # for a pattern it skipped at the parent, so it keeps x/y excluded where MatchesOrParentMatches
    # lets the later "!x" include it again.
    pm = PatternMatcher(["x/y", "!x"])
    parent, parent_results = pm.matches_using_parent_results("x")
    assert parent is False
    assert pm.matches_using_parent_results("x/y", parent_results)[0] is True
    assert pm.matches("x/y") is False
    with pytest.raises(ValueError):
        pm.matches_using_parent_results("x/y", [True])


# --- walking a context -----------------------------------------------------------------------------


def make_tree(root, paths):
    for path in paths:
        full = root / path
        if path.endswith("/"):
            full.mkdir(parents=True, exist_ok=True)
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text(path)


TREE = [
    "Dockerfile",
    ".dockerignore",
    "app.py",
    "README.md",
    "build/",
    "build/out.bin",
    "docs/",
    "docs/a.md",
    "docs/keep.md",
    "docs/sub/b.md",
    "node_modules/x/index.js",
    "src/main.py",
    "src/main.pyc",
    "src/pkg/mod.pyc",
    "empty/",
]


def test_walk_context_order_and_exclusions(tmp_path):
    make_tree(tmp_path, TREE)
    patterns = ["**/*.pyc", "node_modules", "build/", "*.md", "!README.md"]
    assert list(walk_context(tmp_path, patterns)) == [
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "app.py",
        "docs",
        "docs/a.md",
        "docs/keep.md",
        "docs/sub",
        "docs/sub/b.md",
        "empty",
        "src",
        "src/main.py",
        "src/pkg",
    ]


def test_walk_context_enters_excluded_dir_for_an_exception(tmp_path):
    make_tree(tmp_path, TREE)
    # docs itself stays out of the tar, but the walk goes in for docs/keep.md
    assert list(walk_context(tmp_path, ["docs", "!docs/keep.md"], always=())) == [
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "app.py",
        "build",
        "build/out.bin",
        "docs/keep.md",
        "empty",
        "node_modules",
        "node_modules/x",
        "node_modules/x/index.js",
        "src",
        "src/main.py",
        "src/main.pyc",
        "src/pkg",
        "src/pkg/mod.pyc",
    ]


def test_walk_context_does_not_enter_for_wildcard_exception(tmp_path):
    # like the docker CLI: only an exception that starts with "docs/" reopens docs
    make_tree(tmp_path, TREE)
    got = list(walk_context(tmp_path, ["docs", "!*/keep.md"]))
    assert not [p for p in got if p.startswith("docs")]
    assert excluded("docs/keep.md", ["docs", "!*/keep.md"]) is False  # though the matcher disagrees


def test_dockerfile_and_dockerignore_are_always_sent(tmp_path):
    make_tree(tmp_path, ["Dockerfile", ".dockerignore", "sub/My.Dockerfile", "sub/other", "x"])
    assert list(walk_context(tmp_path, ["*", "!x"])) == [".dockerignore", "Dockerfile", "x"]
    assert list(walk_context(tmp_path, ["*"], always=("sub/My.Dockerfile", ".dockerignore"))) == [
        ".dockerignore",
        "sub/My.Dockerfile",
    ]
    assert list(walk_context(tmp_path, ["*"], always=())) == []


def test_walk_context_does_not_follow_symlinks(tmp_path):
    make_tree(tmp_path, ["real/file"])
    (tmp_path / "link").symlink_to("real")
    (tmp_path / "dangling").symlink_to("nowhere")
    assert list(walk_context(tmp_path, [])) == ["dangling", "link", "real", "real/file"]
    assert list(walk_context(tmp_path, ["real"])) == ["dangling", "link"]


def test_walk_context_sorts_by_name_bytes(tmp_path):
    names = ["b", "B", "a", "é", "z", "_"]
    make_tree(tmp_path, names)
    assert list(walk_context(tmp_path, [])) == sorted(names, key=os.fsencode)


def test_walk_context_errors(tmp_path):
    with pytest.raises(ContextError, match="can't stat"):
        list(walk_context(tmp_path / "missing", []))
    with pytest.raises(DockerignoreError):
        list(walk_context(tmp_path, ["["]))


# --- properties ------------------------------------------------------------------------------------


@cache
def glob_match(pattern: str, name: str) -> bool:
    """Reference for patterns of literals, `*` and `?`: `*` and `?` never match `/`."""
    if not pattern:
        return not name
    if pattern[0] == "*":
        return any(glob_match(pattern[1:], name[i:]) for i in range(len(name) + 1) if "/" not in name[:i])
    if not name:
        return False
    if pattern[0] == "?":
        return name[0] != "/" and glob_match(pattern[1:], name[1:])
    return pattern[0] == name[0] and glob_match(pattern[1:], name[1:])


segments = st.lists(
    st.text("ab.", min_size=1, max_size=3).filter(lambda s: s not in (".", "..")), min_size=1, max_size=4
)
simple_patterns = st.text("ab/*?.", min_size=1, max_size=8).filter(
    lambda p: "**" not in p and clean(p) != "."
)


@PROPERTY
@given(simple_patterns, segments)
def test_matcher_agrees_with_reference_glob(pattern, segs):
    path = "/".join(segs)
    cleaned = clean(pattern)
    pm = PatternMatcher([pattern])
    assert pm.matches_exact(path) == glob_match(cleaned, path)
    prefixes = ["/".join(segs[:k]) for k in range(1, len(segs) + 1)]
    assert pm.matches(path) == any(glob_match(cleaned, p) for p in prefixes)


@PROPERTY
@given(segments, segments)
def test_everything_below_an_excluded_directory_is_excluded(directory, rest):
    d = "/".join(directory)
    assert excluded(d + "/" + "/".join(rest), [d])
    assert not excluded(d + "/" + "/".join(rest), [d, "!" + d])


def reference_regex(pattern: str) -> str | None:
    """Upstream's Pattern.compile, building a regular expression as it does (None: not a regexp type)."""
    regex, kind, i, first = "", "exact", 0, True
    while i < len(pattern):
        ch, i = pattern[i], i + 1
        if ch == "*" and pattern[i : i + 1] == "*":
            i += 1 + (pattern[i + 1 : i + 2] == "/")
            if i == len(pattern):
                regex, kind = (regex, "prefix") if kind == "exact" else (regex + ".*", "regexp")
            else:
                regex, kind = regex + "(.*/)?", "regexp"
            kind = "suffix" if first else kind
        elif ch in "*?":
            regex, kind = regex + ("[^/]*" if ch == "*" else "[^/]"), "regexp"
        elif ch == "\\":
            regex, kind, i = regex + re.escape(pattern[i]), "regexp", i + 1
        elif ch == "[":
            end = pattern.index("]", i + 1)
            regex, kind, i = regex + pattern[i - 1 : end + 1], "regexp", end + 1
        else:
            regex += ch if ch == "^" else re.escape(ch)
        first = False
    return regex if kind == "regexp" else None


tokens = st.sampled_from(["a", "b", "/", ".", "*", "**", "?", "[ab]", "[^a]", "\\*", "^", "\n"])


@PROPERTY
@given(st.lists(tokens, min_size=1, max_size=7).map("".join), st.text("ab/.*\n", max_size=10))
def test_automaton_agrees_with_a_regexp(pattern, path):
    pattern = trim_space(pattern)
    if "\n" in pattern or not pattern:
        pattern = pattern.replace("\n", "x") or "x"
    p = PatternMatcher([pattern]).patterns[0]
    regex = reference_regex(p.cleaned_pattern)
    if regex is not None:
        assert p.match_type is MatchType.REGEXP
        assert p.match(path) == (re.fullmatch(regex, path) is not None)


def test_no_backtracking_blowup():
    # Each would take exponential time in a backtracking regex engine; this one is linear.
    deep = "a/" + "/".join(["d"] * 60)
    assert not PatternMatcher(["a/" + "**/" * 12 + "x"]).matches(deep + "/y")
    assert PatternMatcher(["a/" + "**/" * 12 + "y"]).matches(deep + "/y")
    assert not PatternMatcher(["*a" * 15 + "*b"]).matches("a" * 80)
    assert PatternMatcher(["*a" * 15 + "*b"]).matches("a" * 80 + "b")


def test_invalid_utf8_in_patterns_and_paths():
    # exact patterns compare bytes; wildcard patterns read every invalid byte as U+FFFD, like Go's regexp
    assert excluded("caf\udce9", ["caf\udce9"])
    assert not excluded("caf\udcff", ["caf\udce9"])
    assert excluded("caf\udcff", ["caf\udce9*"])
    assert excluded("caf\ufffd", ["caf?"]) and excluded("caf\udce9", ["caf?"])


def test_dockerfile_is_sent_even_when_only_the_walk_would_drop_it(tmp_path):
    # "!sub" re-includes sub/Dockerfile for the parent-aware matcher, but not for the walk's
    # parent results (see test_walk_results_can_differ_from_matches); it is sent all the same.
    make_tree(tmp_path, ["sub/Dockerfile", "sub/other"])
    patterns = ["sub/Dockerfile", "!sub"]
    assert not excluded("sub/Dockerfile", patterns)
    assert list(walk_context(tmp_path, patterns, always=())) == ["sub", "sub/other"]
    assert list(walk_context(tmp_path, patterns, always=("sub/Dockerfile",))) == [
        "sub",
        "sub/Dockerfile",
        "sub/other",
    ]
