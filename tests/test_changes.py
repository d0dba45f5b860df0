"""Layer diffs: changes between trees, overlay upper directories, and the layer tar written from them."""

import hashlib
import io
import itertools
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibuild.archive import apply_layer
from minibuild.archive.changes import Change, ChangeKind, changes_dirs, export_changes, overlay_changes
from minibuild.runtime import Mount, default_runtime
from minibuild.snapshot.copy import dir_copy

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (device whiteouts, trusted.* xattrs, chown)")
EMPTY_LAYER = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"  # Docker's empty layer
# A valid VFS_CAP_REVISION_2 security.capability value (cap_net_bind_service=ep).
CAPABILITY = bytes.fromhex("0100000200040000000000000000000000000000")
T0 = 1_600_000_000
OVERLAY_OPTIONS = ("index=off", "metacopy=off", "redirect_dir=nofollow")


def build(root: Path, spec: dict) -> Path:
    """A tree from {name: content | dict | ("link", target) | ("hard", other)}; fixed times."""
    root.mkdir(parents=True, exist_ok=True)
    for name, value in spec.items():
        path = root / name
        if isinstance(value, dict):
            build(path, value)
        elif isinstance(value, tuple) and value[0] == "link":
            path.symlink_to(value[1])
        elif isinstance(value, tuple) and value[0] == "hard":
            os.link(root / value[1], path)
        else:
            path.write_text(value)
            os.utime(path, (T0, T0))
    return root


def kinds(changes: list[Change]) -> list[str]:
    return [f"{c}{' (opaque)' if c.opaque else ''}" for c in changes]


BASE = {
    "etc": {"passwd": "root", "group": "root"},
    "opt": {"a": "1", "b": "2", "sub": {"c": "3"}},
    "keep": {"k": "k"},
    "file-then-dir": "f",
    "dir-then-file": {"x": "x"},
    "link": ("link", "etc/passwd"),
    "bin": {"tool": "elf"},
}


def mutate_naively(new: Path) -> None:
    """The same step, done directly on a copy."""
    (new / "etc/passwd").write_text("root\nalice")  # modified
    (new / "etc/motd").write_text("hi")  # added
    os.chmod(new / "keep/k", 0o600)  # metadata only
    (new / "opt/b").unlink()  # deleted file
    shutil.rmtree(new / "opt/sub")  # deleted directory
    shutil.rmtree(new / "dir-then-file")
    (new / "dir-then-file").write_text("now a file")
    (new / "file-then-dir").unlink()
    (new / "file-then-dir").mkdir()
    (new / "file-then-dir/inside").write_text("i")
    (new / "link").unlink()
    (new / "link").symlink_to("etc/group")
    (new / "new").mkdir()
    (new / "new/h1").write_text("hard")
    os.link(new / "new/h1", new / "new/h2")
    os.setxattr(new / "bin/tool", "security.capability", CAPABILITY)


EXPECTED = [
    "C /bin",
    "C /bin/tool",
    "C /dir-then-file",  # a file where a directory was: modified (its old entries go with it)
    "C /etc",
    "A /etc/motd",
    "C /etc/passwd",
    "C /file-then-dir",
    "A /file-then-dir/inside",
    "C /keep",
    "C /keep/k",
    "C /link",
    "A /new",
    "A /new/h1",
    "A /new/h2",
    "C /opt",
    "D /opt/b",
    "D /opt/sub",
]


@needs_root
def test_changes_dirs_reports_what_moby_reports(tmp_path):
    old = build(tmp_path / "old", BASE)
    new = tmp_path / "new"
    dir_copy(old, new)
    mutate_naively(new)
    assert kinds(changes_dirs(new, old)) == EXPECTED


def test_unchanged_copy_has_no_changes(tmp_path):
    old = build(tmp_path / "old", BASE)
    new = tmp_path / "new"
    dir_copy(old, new)
    assert changes_dirs(new, old) == []


def test_directory_with_every_old_entry_gone_is_opaque(tmp_path):
    old = build(tmp_path / "old", {"d": {"a": "1", "b": {"c": "2"}}, "e": {"x": "1", "y": "2"}})
    new = tmp_path / "new"
    dir_copy(old, new)
    shutil.rmtree(new / "d")  # rm -rf d && mkdir d && touch d/fresh
    (new / "d").mkdir()
    (new / "d/fresh").write_text("")
    (new / "e/x").unlink()  # one of two gone: a plain whiteout
    assert kinds(changes_dirs(new, old)) == ["C /d (opaque)", "A /d/fresh", "C /e", "D /e/x"]


def _whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


@needs_root
def test_overlay_changes_from_an_upper_directory(tmp_path):
    lower_bottom = build(tmp_path / "l1", {"d": {"a": "1", "b": "2"}, "gone": {"x": "1"}, "f": "f"})
    lower_top = build(tmp_path / "l2", {"d": {"c": "3"}, "top": "t"})
    _whiteout(lower_top / "f")  # f was deleted by the top layer already
    upper = build(tmp_path / "upper", {"d": {"a": "changed"}, "new": "n"})
    _whiteout(upper / "top")
    (upper / "gone").mkdir()  # rm -rf gone && mkdir gone
    os.setxattr(upper / "gone", "trusted.overlay.opaque", b"y")
    _whiteout(upper / "f")  # a whiteout for something already gone below: not a change
    changes = overlay_changes(upper, [lower_top, lower_bottom])
    assert kinds(changes) == ["C /d", "C /d/a", "C /gone (opaque)", "A /new", "D /top"]


@needs_root
def test_overlay_and_naive_changes_agree_on_a_real_overlay(tmp_path):
    lower = build(tmp_path / "lower", BASE)
    naive = tmp_path / "naive"
    dir_copy(lower, naive)
    mutate_naively(naive)
    expected = kinds(changes_dirs(naive, lower))

    upper, work, merged = (tmp_path / name for name in ("upper", "work", "merged"))
    for directory in (upper, work, merged):
        directory.mkdir()
    options = (f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}", *OVERLAY_OPTIONS)
    with default_runtime().mounted(merged, [Mount("overlay", "overlay", options)]) as view:
        mutate_naively(view)
    assert kinds(overlay_changes(upper, [lower])) == expected


# --- the layer tar ------------------------------------------------------------------------------


def read_tar(data: bytes) -> list[tarfile.TarInfo]:
    return list(tarfile.open(fileobj=io.BytesIO(data)))


def test_empty_diff_is_dockers_empty_layer(tmp_path):
    out = io.BytesIO()
    export_changes(tmp_path, [], out)
    assert out.getvalue() == bytes(1024)
    assert hashlib.sha256(out.getvalue()).hexdigest() == EMPTY_LAYER


@needs_root
def test_export_writes_sorted_entries_whiteouts_links_and_xattrs(tmp_path):
    old = build(tmp_path / "old", BASE)
    new = tmp_path / "new"
    dir_copy(old, new)
    mutate_naively(new)
    os.chown(new / "etc/motd", 1000, 1001)
    out = io.BytesIO()
    export_changes(new, changes_dirs(new, old), out, source_date_epoch=T0 - 10)
    data = out.getvalue()
    assert len(data) % 512 == 0 and data.endswith(bytes(1024))
    members = read_tar(data)
    names = [m.name for m in members]
    assert names == [
        "bin",
        "bin/tool",
        "dir-then-file",
        "etc",
        "etc/motd",
        "etc/passwd",
        "file-then-dir",
        "file-then-dir/inside",
        "keep",
        "keep/k",
        "link",
        "new",
        "new/h1",
        "new/h2",
        "opt",
        "opt/.wh.b",
        "opt/.wh.sub",
    ]
    by_name = {m.name: m for m in members}
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert all(m.mtime == T0 - 10 for m in members)  # clamped to SOURCE_DATE_EPOCH
    assert (by_name["etc/motd"].uid, by_name["etc/motd"].gid) == (1000, 1001)
    assert by_name["new/h2"].islnk() and by_name["new/h2"].linkname == "new/h1"
    assert by_name["link"].issym() and by_name["link"].linkname == "etc/group"
    assert by_name["keep/k"].mode == 0o600
    assert by_name["opt/.wh.b"].isreg() and by_name["opt/.wh.b"].size == 0
    capability = by_name["bin/tool"].pax_headers["SCHILY.xattr.security.capability"]
    assert capability.encode("utf-8", "surrogateescape") == CAPABILITY


def test_opaque_directory_is_followed_by_its_marker(tmp_path):
    new = build(tmp_path / "new", {"d": {"x": "1"}})
    os.chmod(new / "d", 0o750)
    out = io.BytesIO()
    export_changes(new, [Change("/d", ChangeKind.MODIFY, opaque=True), Change("/d/x", ChangeKind.ADD)], out)
    members = read_tar(out.getvalue())
    assert [(m.name, m.type, m.mode) for m in members] == [
        ("d", tarfile.DIRTYPE, 0o750),
        ("d/.wh..wh..opq", tarfile.REGTYPE, 0o750),
        ("d/x", tarfile.REGTYPE, 0o644),
    ]


def test_rootless_owner_is_written_as_root(tmp_path):
    new = build(tmp_path / "new", {"f": "x"})
    st = os.stat(new / "f")
    out = io.BytesIO()
    export_changes(new, [Change("/f", ChangeKind.ADD)], out, host_root=(st.st_uid, st.st_gid))
    [member] = read_tar(out.getvalue())
    assert (member.uid, member.gid) == (0, 0)


def test_exported_capability_survives_apply_layer(tmp_path):
    if not ROOT:
        pytest.skip("setting security.capability needs root")
    new = build(tmp_path / "new", {"tool": "elf"})
    os.setxattr(new / "tool", "security.capability", CAPABILITY)
    out = io.BytesIO()
    export_changes(new, [Change("/tool", ChangeKind.ADD)], out)
    out.seek(0)
    apply_layer(out, tmp_path / "applied")
    assert os.getxattr(tmp_path / "applied/tool", "security.capability") == CAPABILITY


# --- round trip: old + exported diff == new, for random steps ----------------------------------

NAMES = ["a", "b", "c"]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)  # few names: many collisions
ops = st.one_of(
    st.tuples(st.just("write"), paths, st.text("xyz", max_size=5)),
    st.tuples(st.just("mkdir"), paths),
    st.tuples(st.just("rm"), paths),
    st.tuples(st.just("replace_dir"), paths),
    st.tuples(st.just("chmod"), paths, st.sampled_from([0o700, 0o755, 0o640, 0o4755])),
    st.tuples(st.just("symlink"), paths, paths),
    st.tuples(st.just("hardlink"), paths, paths),
    st.tuples(st.just("touch"), paths, st.integers(T0, T0 + 10)),
)
_counter = itertools.count()


def _plain_parent(root: Path, rel: str) -> bool:
    """Every parent of `rel` is a real directory, made if missing (never write through a symlink)."""
    current = root
    for part in rel.split("/")[:-1]:
        current = current / part
        if not os.path.lexists(current):
            current.mkdir()
        elif current.is_symlink() or not current.is_dir():
            return False
    return True


def apply_ops(root: Path, operations: list[tuple]) -> None:
    for op, rel, *args in operations:
        path = root / rel
        if not _plain_parent(root, rel):
            continue
        exists = os.path.lexists(path)
        is_dir = exists and path.is_dir() and not path.is_symlink()
        if op == "write" and not is_dir:
            if exists and path.is_symlink():
                path.unlink()
            path.write_text(args[0])
        elif op == "mkdir" and not exists:
            path.mkdir()
        elif op == "rm" and exists:
            shutil.rmtree(path) if is_dir else path.unlink()
        elif op == "replace_dir" and is_dir:
            shutil.rmtree(path)
            path.mkdir()
        elif op == "chmod" and exists and not path.is_symlink():
            os.chmod(path, args[0])
        elif op == "symlink" and not exists:
            path.symlink_to(args[0])
        elif op == "hardlink" and not exists:
            other = root / args[0]
            if _plain_parent(root, args[0]) and other.is_file() and not other.is_symlink():
                os.link(other, path)
        elif op == "touch" and exists and not is_dir:
            os.utime(path, (args[0], args[0]), follow_symlinks=False)


def snapshot_tree(root: Path) -> dict[str, tuple]:
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            s = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(s.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(s.st_mode):
                detail = (path.read_bytes(), int(s.st_mtime))
            else:
                detail = None
            result[rel] = (s.st_mode, s.st_uid, s.st_gid, detail)
    return result


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(ops, max_size=12), step=st.lists(ops, max_size=12))
def test_old_plus_exported_diff_is_new(tmp_path, before, step):
    base = tmp_path / str(next(_counter))
    old = base / "old"
    old.mkdir(parents=True)
    apply_ops(old, before)
    new = base / "new"
    dir_copy(old, new)
    apply_ops(new, step)
    out = io.BytesIO()
    export_changes(new, changes_dirs(new, old), out)
    applied = base / "applied"
    dir_copy(old, applied)
    out.seek(0)
    apply_layer(out, applied)
    assert snapshot_tree(applied) == snapshot_tree(new)


@needs_root
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(ops, max_size=10), step=st.lists(ops, min_size=1, max_size=10))
def test_overlay_changes_equal_naive_changes_for_random_steps(tmp_path, before, step):
    """Both detectors agree on the tree the step left (copied out of the overlay for the naive one).

    Copied out, not redone on a plain copy: on overlay, writing to one name of a hard-linked lower file
    copies it up alone, so the other name keeps its old content — a different tree, as in Docker.
    """
    base = tmp_path / str(next(_counter))
    lower = base / "lower"
    lower.mkdir(parents=True)
    apply_ops(lower, before)

    upper, work, merged = base / "upper", base / "work", base / "merged"
    for directory in (upper, work, merged):
        directory.mkdir()
    options = (f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}", *OVERLAY_OPTIONS)
    mount = Mount("overlay", "overlay", options)
    with default_runtime().mounted(merged, [mount]) as view:
        apply_ops(view, step)
        dir_copy(view, base / "result")
    assert kinds(overlay_changes(upper, [lower])) == kinds(changes_dirs(base / "result", lower))
