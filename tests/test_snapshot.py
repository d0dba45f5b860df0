"""Snapshotters: overlay and naive give the same layer tar for the same step; layers stack; no leaks."""

import asyncio
import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest
from test_runtime import NOBODY, REPO, _python_for_nobody, make_busybox_rootfs

from minibuild.layer import LayerStore
from minibuild.runtime import Mount, ProcessSpec, run
from minibuild.snapshot import (
    NaiveSnapshotter,
    OverlaySnapshotter,
    SnapshotError,
    overlay_supported,
    select_snapshotter,
)
from minibuild.snapshot import snapshotter as snapshotter_module
from minibuild.snapshot.copy import copy_file_data
from minibuild.snapshot.overlay import overlay_volatile_supported, volatile_mounts
from minibuild.snapshot.snapshotter import Snapshot, Snapshotter

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="these tests run steps as root"),
]
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def tar_of(root: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return out.getvalue()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[LayerStore, list]:
    """A layer store holding a busybox base layer with some content to change."""
    work = tmp_path_factory.mktemp("base")
    rootfs = make_busybox_rootfs(work / "rootfs")
    for path, text in {
        "data/keep": "keep\n",
        "data/remove": "rm\n",
        "data/dir/a": "a",
        "data/dir/b": "b",
    }.items():
        (rootfs / path).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / path).write_text(text)
    (rootfs / "ftod").write_text("file")
    (rootfs / "dtof").mkdir()
    (rootfs / "dtof/inner").write_text("x")
    (rootfs / "opq").mkdir()
    (rootfs / "opq/x").write_text("x")
    (rootfs / "opq/y").write_text("y")
    (rootfs / "existing-link").symlink_to("data/keep")
    store = LayerStore(work / "layers")
    layer = store.register(io.BytesIO(tar_of(rootfs)))
    return store, [layer]


def step(snapshot: Snapshot, script: str) -> tuple[int, bytes]:
    output: list[bytes] = []
    spec = ProcessSpec(args=["/bin/sh", "-c", script])
    code = asyncio.run(
        run(snapshot.rootfs, spec, mounts=snapshot.mounts, on_stdout=output.append, on_stderr=output.append)
    )
    return code, b"".join(output)


def diff_of(snapshotter: Snapshotter, snapshot: Snapshot, epoch: int | None = 0) -> bytes:
    out = io.BytesIO()
    snapshotter.diff(snapshot, out, source_date_epoch=epoch)
    return out.getvalue()


@pytest.fixture
def both(tmp_path) -> list[Snapshotter]:
    return [OverlaySnapshotter(tmp_path / "overlay"), NaiveSnapshotter(tmp_path / "naive")]


CASES = {
    "nothing": "true",
    "added": "echo new > /data/new",
    "changed": "echo more >> /data/keep",
    "deleted file": "rm /data/remove",
    "deleted dir": "rm -rf /data/dir",
    "file to dir": "rm /ftod && mkdir /ftod && echo x > /ftod/x",
    "dir to file": "rm -rf /dtof && echo f > /dtof",
    "symlinks": "ln -s /data/keep /data/link && ln -sfn data/remove /existing-link",
    "hard links": "echo h > /h1 && ln /h1 /h2 && mkdir /hl && ln /h1 /hl/h3",
    "permissions": "chmod 600 /data/keep && chmod 4755 /bin/busybox && chmod 700 /data",
    "ownership": "chown 1000:1000 /data/keep && chown -R 65534:65534 /data/dir",
    "opaque dir": "rm -rf /opq && mkdir /opq && echo z > /opq/z",
    "emptied dir": "rm -rf /opq && mkdir /opq",
    "everything": "echo a > /a && rm -rf /data/dir /data/remove && mkdir -p /x/y/z && chmod 1777 /x/y",
}


@pytest.mark.parametrize("case", CASES)
def test_overlay_and_naive_write_identical_layers(base, both, case):
    _store, chain = base
    diffs = []
    for snapshotter in both:
        snapshot = snapshotter.prepare("step", chain)
        code, output = step(snapshot, CASES[case])
        assert code == 0, output
        diffs.append(diff_of(snapshotter, snapshot))
        snapshotter.remove(snapshot)
        assert not snapshot.path.exists()
    overlay, naive = diffs
    assert overlay == naive
    if case == "nothing":
        assert "sha256:" + hashlib.sha256(overlay).hexdigest() == EMPTY_LAYER


def test_without_epoch_the_same_entries_in_the_same_order(base, both):
    _store, chain = base
    listings = []
    for snapshotter in both:
        snapshot = snapshotter.prepare("step", chain)
        assert step(snapshot, CASES["everything"])[0] == 0
        with tarfile.open(fileobj=io.BytesIO(diff_of(snapshotter, snapshot, epoch=None))) as members:
            listings.append([(m.name, m.type, m.mode, m.uid, m.gid, m.size, m.linkname) for m in members])
    assert listings[0] == listings[1]
    assert [entry[0] for entry in listings[0]] == [
        "a",
        "data",
        "data/.wh.dir",
        "data/.wh.remove",
        "x",
        "x/y",
        "x/y/z",
    ]


def test_layers_stack_with_whiteouts_and_opaque_dirs(base, both):
    store, chain = base
    script = "rm -rf /opq && mkdir /opq && echo z > /opq/z && rm /data/remove && echo n > /data/new"
    for snapshotter in both:
        first = snapshotter.prepare("first", chain)
        assert step(first, script)[0] == 0
        layer = store.register(io.BytesIO(diff_of(snapshotter, first)), chain[-1].chain_id)
        snapshotter.remove(first)
        second = snapshotter.prepare("second", [*chain, layer])
        code, output = step(second, "ls /opq; ls /data; cat /data/new")
        assert (code, output) == (0, b"z\ndir\nkeep\nnew\nn\n"), snapshotter.name
        assert diff_of(snapshotter, second) == bytes(1024)  # reading changes nothing
        snapshotter.remove(second)
        store.release(layer.chain_id)


def test_scratch_snapshot(both):
    for snapshotter in both:
        snapshot = snapshotter.prepare("scratch", [])
        assert diff_of(snapshotter, snapshot) == bytes(1024)
        with snapshotter.mounted(snapshot) as tree:
            assert os.listdir(tree) == []
        snapshotter.remove(snapshot)


def test_layer_is_unpacked_once_per_chain(base, tmp_path):
    _store, chain = base
    overlay = OverlaySnapshotter(tmp_path / "overlay")
    first, second = overlay.prepare("one", chain), overlay.prepare("two", chain)
    assert first.lower_dirs == second.lower_dirs
    assert len(os.listdir(overlay.layers)) == 1
    naive = NaiveSnapshotter(tmp_path / "naive")
    trees = {naive.prepare(key, chain).lower_dirs for key in ("one", "two")}
    assert len(trees) == 1 and len(os.listdir(naive.chains)) == 2  # scratch and the chain


def _mountinfo_mentions(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return str(path) in f.read()


def test_mounted_gives_the_host_a_view_without_a_mount(base, tmp_path):
    _store, chain = base
    overlay = OverlaySnapshotter(tmp_path / "overlay")
    snapshot = overlay.prepare("copy", chain)
    with overlay.mounted(snapshot) as tree:
        assert (tree / "data/keep").read_text() == "keep\n"
        (tree / "data/copied").write_text("from the host")  # what COPY does
        assert not _mountinfo_mentions(snapshot.rootfs)
    assert (snapshot.upper / "data/copied").read_text() == "from the host"
    with tarfile.open(fileobj=io.BytesIO(diff_of(overlay, snapshot))) as members:
        assert [m.name for m in members] == ["data", "data/copied"]


def test_the_daemons_view_is_volatile_and_can_be_mounted_again(base, tmp_path, monkeypatch):
    """COPY's view skips the sync of the whole upper filesystem at unmount (`volatile`); overlayfs
    then refuses the next mount of the same upper until its marker goes, which mounted() removes."""
    _store, chain = base
    overlay = OverlaySnapshotter(tmp_path / "overlay")
    if not overlay_volatile_supported(overlay.tmp, overlay.runtime):
        pytest.skip("this kernel's overlayfs has no volatile option (Linux < 5.10)")
    seen = []
    real_mounted = overlay.runtime.mounted
    monkeypatch.setattr(overlay.runtime, "mounted", lambda r, m: seen.append(m) or real_mounted(r, m))
    snapshot = overlay.prepare("twice", chain)
    for text in ("first", "second"):
        with overlay.mounted(snapshot) as tree:
            (tree / text).write_text(text)
        assert not (snapshot.path / "work/work/incompat").exists()
    assert all("volatile" in m.options for mounts in seen for m in mounts)
    assert "volatile" not in snapshot.mounts[0].options  # RUN's mount is the runtime's, unchanged
    code, output = step(snapshot, "cat /first /second")  # and it can still mount the snapshot
    assert (code, output) == (0, b"firstsecond")
    assert volatile_mounts((Mount(type="bind", source="/x"),)) == (Mount(type="bind", source="/x"),)


def test_copy_file_data_falls_back_from_kernel_copies(tmp_path, monkeypatch):
    """copy_file_range (refused across filesystems), then sendfile, then read and write."""
    data = os.urandom(3 << 20)
    (tmp_path / "src").write_bytes(data)

    def refuse(*_args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    for refused in ([], ["copy_file_range"], ["copy_file_range", "sendfile"]):
        with monkeypatch.context() as mp:
            for name in refused:
                mp.setattr(os, name, refuse)
            target = tmp_path / f"dst-{len(refused)}"
            with open(tmp_path / "src", "rb") as fin, open(target, "wb") as fout:
                copy_file_data(fin.fileno(), fout.fileno())
        assert target.read_bytes() == data


def test_a_cancelled_step_leaves_no_mount(base, tmp_path):
    _store, chain = base
    overlay = OverlaySnapshotter(tmp_path / "overlay")
    snapshot = overlay.prepare("cancelled", chain)

    async def main() -> None:
        started = asyncio.Event()
        spec = ProcessSpec(args=["/bin/sh", "-c", "echo > /data/partial; echo go; sleep 1000"])
        task = asyncio.create_task(
            run(
                snapshot.rootfs,
                spec,
                mounts=snapshot.mounts,
                on_stdout=lambda _: started.set(),
                on_stderr=print,
            )
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not _mountinfo_mentions(snapshot.path)
    assert [c.path for c in overlay.changes(snapshot)] == ["/data", "/data/partial"]
    overlay.remove(snapshot)
    assert not snapshot.path.exists()


def test_keys_are_checked(tmp_path):
    naive = NaiveSnapshotter(tmp_path / "naive")
    naive.prepare("abc", [])
    with pytest.raises(SnapshotError, match="already exists"):
        naive.prepare("abc", [])
    for bad in ("../x", "", "a/b", ".hidden"):
        with pytest.raises(SnapshotError, match="invalid snapshot key"):
            naive.prepare(bad, [])


def test_staging_leftovers_are_swept_at_start(tmp_path):
    naive = NaiveSnapshotter(tmp_path / "naive")
    (naive.tmp / ".tmp-chain-half-written").mkdir()
    (naive.tmp / ".tmp-chain-half-written/file").write_text("x")
    NaiveSnapshotter(tmp_path / "naive")
    assert os.listdir(naive.tmp) == []


def test_remove_is_immediate_and_the_files_go_in_the_background(base, tmp_path):
    _store, chain = base
    for snapshotter in (OverlaySnapshotter(tmp_path / "overlay"), NaiveSnapshotter(tmp_path / "naive")):
        snapshots = [snapshotter.prepare(f"gone{i}", chain) for i in range(3)]
        for snapshot in snapshots:
            (snapshot.upper / "big").write_bytes(os.urandom(1 << 20))
            snapshotter.remove(snapshot)
            assert not snapshot.path.exists()
        type(snapshotter)(snapshotter.root)  # a new start sweeping tmp/ meanwhile is no conflict
        snapshotter_module._reaper.submit(lambda: None).result()  # what was queued before is done
        assert os.listdir(snapshotter.tmp) == [] and os.listdir(snapshotter.snapshots) == []


def test_select_snapshotter_probes_overlay(tmp_path):
    chosen = select_snapshotter(tmp_path / "ok")
    assert isinstance(chosen, OverlaySnapshotter) == overlay_supported(tmp_path / "ok")
    # Overlay's options cannot name a directory with a comma or colon: the probe mount fails.
    odd = tmp_path / "no,overlay:here"
    assert overlay_supported(odd) is False
    assert isinstance(select_snapshotter(odd), NaiveSnapshotter)


def test_overlay_is_available_on_this_machine(tmp_path):
    if not Path("/proc/filesystems").read_text().count("overlay"):
        pytest.skip("the kernel has no overlayfs")
    assert overlay_supported(tmp_path)


ROOTLESS = textwrap.dedent(
    """
    import asyncio, io, json, sys, tarfile
    from pathlib import Path
    from minibuild.layer import LayerStore
    from minibuild.runtime import ProcessSpec, run
    from minibuild.snapshot import OverlaySnapshotter, NaiveSnapshotter

    def sh(snapshot, script):
        out = []
        spec = ProcessSpec(args=["/bin/sh", "-c", script])
        stdout = stderr = out.append
        running = run(snapshot.rootfs, spec, mounts=snapshot.mounts, on_stdout=stdout, on_stderr=stderr)
        code = asyncio.run(running)
        return code, b"".join(out).decode()

    work = Path(sys.argv[1])
    store = LayerStore(work / "layers")
    chain = [store.register(work / "base.tar")]
    result = {}
    for snapshotter in (OverlaySnapshotter(work / "overlay"), NaiveSnapshotter(work / "naive")):
        first = snapshotter.prepare("first", chain)
        code, out = sh(first, "rm -rf /opq && mkdir /opq && echo new > /opq/new && rm /etc/group && id -u")
        with snapshotter.mounted(first) as tree:  # what COPY does
            (tree / "copied").write_text("copied")
        diff = io.BytesIO()
        snapshotter.diff(first, diff, source_date_epoch=0)
        snapshotter.remove(first)  # also overlay's work/work, which has no permissions at all
        layer = store.register(io.BytesIO(diff.getvalue()), chain[0].chain_id)
        second = snapshotter.prepare("second", [*chain, layer])
        with tarfile.open(fileobj=io.BytesIO(diff.getvalue())) as tar:
            members = [[m.name, m.uid, m.gid] for m in tar]
        result[snapshotter.name] = {
            "code": code,
            "out": out,
            "tar": members,
            "digest": layer.diff_id,
            "second": sh(second, "ls /opq; ls /etc")[1],
        }
    print(json.dumps(result))
    """
)


def test_rootless_overlay_and_naive_agree():
    setpriv = shutil.which("setpriv")
    probe = subprocess.run([setpriv or "setpriv", *NOBODY, "unshare", "-r", "true"], capture_output=True)
    if setpriv is None or probe.returncode != 0:
        pytest.skip("unprivileged user namespaces are not available here")
    python = _python_for_nobody(setpriv)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"minibuild-rootless-snap-{os.getpid()}"
    work.mkdir(mode=0o755)
    try:
        rootfs = make_busybox_rootfs(work / "rootfs")
        (rootfs / "opq").mkdir()
        (rootfs / "opq/old").write_text("old")
        (work / "base.tar").write_bytes(tar_of(rootfs))
        subprocess.run(["chown", "-R", "65534:65534", str(work)], check=True)
        env = dict(os.environ, PYTHONPATH=str(REPO), HOME="/tmp")
        argv = [setpriv, *NOBODY, python, "-c", ROOTLESS, str(work)]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=True)
    overlay, naive = result["overlay"], result["naive"]
    assert overlay == naive
    assert overlay["code"] == 0 and overlay["out"] == "0\n"
    assert overlay["tar"] == [
        ["copied", 0, 0],
        ["etc", 0, 0],
        ["etc/.wh.group", 0, 0],
        ["opq", 0, 0],
        ["opq/.wh..wh..opq", 0, 0],
        ["opq/new", 0, 0],
    ]
    assert overlay["second"] == "new\nhostname\nhosts\npasswd\nresolv.conf\n"  # group was deleted
