"""Units of the classic builder: Go's formats and matchers it reproduces, build-arg resolution and the
copy primitives (moby builder/dockerfile: buildargs.go, copy.go, internals.go, dispatchers.go helpers)."""

import fnmatch
import io
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.builder.dockerfile.buildargs import BuildArgs
from minibuild.builder.dockerfile.copy import (
    Identity,
    contains_wildcards,
    copy_directory,
    copy_file,
    get_source_hash_from_infos,
    hash_string_slice,
    parse_chmod,
    path_match,
    root_pair,
    walk,
)
from minibuild.builder.dockerfile.dispatchers import (
    go_duration,
    go_quote_list,
    go_quote_rune,
    parse_port_specs,
    parse_signal,
    prepend_env_on_cmd,
)
from minibuild.builder.dockerfile.internals import normalize_dest, normalize_workdir
from minibuild.dockerfile.gotext import parse_duration

# --- Go formats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "0s"), (30 * 10**9, "30s"), (3 * 10**9, "3s"), (90 * 10**9, "1m30s"), (1_500_000_000, "1.5s"),
     (100_000_000, "100ms"), (1_500, "1.5µs"), (7, "7ns"), (3600 * 10**9, "1h0m0s"), (-2 * 10**9, "-2s")],
)  # fmt: skip
def test_go_duration(ns, text):
    assert go_duration(ns) == text


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=10**15))
def test_go_duration_parses_back(ns):
    assert parse_duration(go_duration(ns)) == ns


def test_go_quotes():
    assert go_quote_list(["/bin/sh", "-c", 'say "hi"']) == '["/bin/sh" "-c" "say \\"hi\\""]'
    assert [go_quote_rune(n) for n in (0, 3, 9, 39, 65, 127, 300)] == [
        "'\\x00'", "'\\x03'", "'\\t'", "'\\''", "'A'", "'\\x7f'", "'\\u012c'"
    ]  # fmt: skip


def test_parse_port_specs():
    assert parse_port_specs(["80", "53/udp", "8000-8002/TCP", "127.0.0.1:80:81"]) == [
        "80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp", "81/tcp"
    ]  # fmt: skip
    errors = [("abc", "Invalid containerPort: abc"), ("9-1", "Invalid containerPort: 9-1"),
              ("1/xyz", "Invalid proto: xyz"), ("bad:1:2", "Invalid ip address: bad")]  # fmt: skip
    for bad, message in errors:
        with pytest.raises(Exception, match=message):
            parse_port_specs([bad])


def test_parse_signal():
    assert parse_signal("SIGTERM") == 15 == parse_signal("term") == parse_signal("15")
    assert parse_signal("SIGRTMIN+1") > parse_signal("SIGRTMIN")
    for bad in ("SIGNOPE", "0", "RTMIN+x"):
        with pytest.raises(Exception, match=re.escape(f"Invalid signal: {bad}")):
            parse_signal(bad)


# --- paths --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [("*.txt", "a.txt", True), ("*.txt", "dir/a.txt", False), ("dir/*", "dir/a", True), ("a?c", "abc", True),
     ("[a-c]x", "bx", True), ("[^a-c]x", "dx", True), ("[^a-c]x", "ax", False), ("\\*", "*", True),
     ("\\*", "a", False), ("[", "[", False), ("a[", "a[", False), ("*", ".hidden", True)],
)  # fmt: skip
def test_path_match_is_go_filepath_match(pattern, name, matches):
    assert path_match(pattern, name) is matches


@settings(deadline=None)
@given(st.text("ab*?", max_size=6), st.text("ab", max_size=6))
def test_path_match_agrees_with_fnmatch_without_slashes(pattern, name):
    assert path_match(pattern, name) == fnmatch.fnmatchcase(name, pattern)


@settings(deadline=None)
@given(st.text("ab/", max_size=8))
def test_a_star_never_crosses_a_slash(name):
    assert path_match("*", name) == ("/" not in name)


def test_contains_wildcards():
    assert contains_wildcards("*.txt") and contains_wildcards("a[b]") and contains_wildcards("a?")
    assert not contains_wildcards("plain") and not contains_wildcards("esc\\*aped")


@pytest.mark.parametrize(
    ("workdir", "dest", "expected"),
    [("", ".", "/"), ("/app", ".", "/app"), ("/app", "./", "/app/"), ("/app", "sub/", "/app/sub/"),
     ("/app", "/abs", "/abs"), ("app", "x", "/app/x"), ("/a", "../b", "/b"), ("/", "./", "/")],
)  # fmt: skip
def test_normalize_dest(workdir, dest, expected):
    assert normalize_dest(workdir, dest) == expected


@settings(deadline=None)
@given(st.text("ab/.", max_size=10), st.text("ab/.", min_size=1, max_size=10))
def test_normalize_workdir_is_clean_and_absolute(current, requested):
    result = normalize_workdir(current, requested)
    assert result.startswith("/") and "//" not in result
    assert ".." not in result.split("/") and "." not in result.split("/")[1:]
    assert normalize_workdir("/", result) == result


def test_cache_hashes():
    assert hash_string_slice("dir", ["a", "b"]) == hash_string_slice("dir", ["a", "b"])
    assert hash_string_slice("dir", ["a", "b"]) != hash_string_slice("dir", ["b", "a"])

    class Info:
        def __init__(self, h):
            self.hash = h

    assert get_source_hash_from_infos([Info("file:x")]) == "file:x"
    assert get_source_hash_from_infos([Info("file:x"), Info("file:y")]).startswith("multi:")


def test_parse_chmod():
    assert parse_chmod("755") == 0o755 and parse_chmod("0644") == 0o644
    for bad in ("u+x", "8", "17777"):
        with pytest.raises(Exception, match="invalid chmod parameter"):
            parse_chmod(bad)


# --- build args ---------------------------------------------------------------------------------------


def test_build_args_resolution():
    args = BuildArgs({"CLI": "cli", "NULL": None, "HTTP_PROXY": "p"})
    args.add_meta_arg("META", "m")
    args.add_arg("META", None)  # ARG META inside a stage: the meta value
    args.add_arg("CLI", "default")  # the command line wins
    args.add_arg("NULL", "default")  # a null --build-arg does not override
    args.add_arg("PLAIN", None)  # declared, no value anywhere: not set
    assert args.get_all_allowed() == {"META": "m", "CLI": "cli", "NULL": "default", "HTTP_PROXY": "p"}
    assert args.filter_allowed(["CLI=from-env"]) == ["HTTP_PROXY=p", "META=m", "NULL=default"]
    assert not args.is_referenced_or_not_builtin("HTTP_PROXY")
    assert args.is_referenced_or_not_builtin("ANYTHING")


def test_unused_build_args_warning():
    out = io.StringIO()

    class Writer:
        def write(self, text):
            out.write(text)

    args = BuildArgs({"NOTUSED": "1", "USED": "2", "NULL": None, "HTTP_PROXY": "p", "SOURCE_DATE_EPOCH": "0"})
    args.add_arg("USED", None)
    args.warn_on_unused_build_args(Writer())
    assert out.getvalue() == "[Warning] One or more build-args [NOTUSED NULL] were not consumed\n"
    out.truncate(0)
    stage = args.clone()
    stage.reset_allowed()
    stage.add_arg("NOTUSED", None)
    clean = BuildArgs({"NOTUSED": "1"})
    clean.merge_referenced_args(stage)
    clean.warn_on_unused_build_args(Writer())
    assert out.getvalue() == ""


@settings(deadline=None)
@given(
    st.dictionaries(st.sampled_from("ABCD"), st.one_of(st.none(), st.text("xy", max_size=2))),
    st.dictionaries(st.sampled_from("ABCD"), st.one_of(st.none(), st.text("xy", max_size=2))),
    st.lists(st.sampled_from("ABCD")),
)
def test_build_args_properties(cli, declared, env_keys):
    args = BuildArgs(cli)
    for key, value in declared.items():
        args.add_arg(key, value)
    allowed = args.get_all_allowed()
    for key in declared:
        if cli.get(key) is not None:
            assert allowed[key] == cli[key]  # the command line wins
        elif declared[key] is not None:
            assert allowed[key] == declared[key]
        else:
            assert key not in allowed
    env = [f"{k}=e" for k in env_keys]
    assert all(entry.partition("=")[0] not in env_keys for entry in args.filter_allowed(env))


def test_prepend_env_on_cmd_keeps_referenced_and_sorted():
    args = BuildArgs({"HTTP_PROXY": "p", "B": "2"})
    args.add_arg("B", None)
    cmd = prepend_env_on_cmd(args, ["HTTP_PROXY=p", "B=2", "A=1"], ["/bin/sh", "-c", "x"])
    assert cmd == ["|2", "A=1", "B=2", "/bin/sh", "-c", "x"]


# --- copy primitives ------------------------------------------------------------------------------------


def make_tree(root: Path) -> Path:
    (root / "src/sub").mkdir(parents=True)
    (root / "src/sub/f").write_text("f")
    (root / "src/g").write_text("g")
    os.link(root / "src/g", root / "src/g-link")
    os.symlink("sub/f", root / "src/sym")
    os.chmod(root / "src/sub", 0o750)
    return root / "src"


def test_copy_directory_contents_links_and_merge(tmp_path):
    src = make_tree(tmp_path)
    dst = tmp_path / "dst"
    (dst / "sub").mkdir(parents=True)
    (dst / "sub/old").write_text("kept")
    (dst / "g").mkdir()  # a directory where the source has a file: replaced
    copy_directory(src, dst, root_pair(), None)
    assert sorted(walk(dst)) == ["g", "g-link", "sub", "sub/f", "sub/old", "sym"]
    assert (dst / "g").read_text() == "g" and os.stat(dst / "g").st_ino == os.stat(dst / "g-link").st_ino
    assert os.readlink(dst / "sym") == "sub/f"
    assert stat.S_IMODE(os.stat(dst / "sub").st_mode) == 0o750


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_fix_permissions_leaves_an_existing_destination_alone(tmp_path):
    src = make_tree(tmp_path)
    existing = tmp_path / "existing"
    existing.mkdir()
    os.chown(existing, 5, 5)
    copy_directory(src, existing, Identity(7, 8), 0o700)
    assert (os.stat(existing).st_uid, os.stat(existing / "sub/f").st_uid) == (5, 7)
    assert stat.S_IMODE(os.stat(existing / "sub/f").st_mode) == 0o700
    fresh = tmp_path / "fresh"
    copy_directory(src, fresh, Identity(7, 8), None)
    assert os.stat(fresh).st_uid == 7 and os.lstat(fresh / "sym").st_uid == 7


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_copy_file_creates_parents_for_the_identity(tmp_path):
    (tmp_path / "f").write_text("x")
    os.chmod(tmp_path / "f", 0o604)
    copy_file(tmp_path / "f", tmp_path / "a/b/c", Identity(3, 4), None)
    assert (tmp_path / "a/b/c").read_text() == "x"
    assert stat.S_IMODE(os.stat(tmp_path / "a/b/c").st_mode) == 0o604
    assert (os.stat(tmp_path / "a").st_uid, os.stat(tmp_path / "a/b/c").st_gid) == (3, 4)
