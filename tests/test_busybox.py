"""The offline busybox base image, from the host's static busybox."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from minibuild.archive import apply_layer
from minibuild.image import busybox
from minibuild.image.service import ImageService

EPOCH = 1_700_000_000

pytestmark = pytest.mark.skipif(
    not (os.path.exists("/bin/busybox") or shutil.which("busybox")), reason="busybox-static is not installed"
)


def rootfs(**kw) -> bytes:
    out = io.BytesIO()
    busybox.write_busybox_rootfs(out, **kw)
    return out.getvalue()


def test_finds_a_static_busybox():
    path = busybox.find_busybox()
    busybox.check_static(path)
    assert "bin/sh" in busybox.applet_paths(path)


def test_refuses_dynamic_and_non_elf_binaries(tmp_path):
    dynamic = Path(sys.executable).resolve()  # CPython is dynamically linked here
    with pytest.raises(busybox.BusyboxError, match="dynamically linked.*busybox-static"):
        busybox.check_static(dynamic)
    script = tmp_path / "busybox"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(busybox.BusyboxError, match="not an ELF executable.*busybox-static"):
        busybox.check_static(script)


def test_missing_busybox_names_the_package(monkeypatch):
    monkeypatch.setattr(busybox, "Path", lambda p: Path("/nonexistent") / p.lstrip("/"))
    monkeypatch.setattr(busybox.shutil, "which", lambda name: None)
    with pytest.raises(busybox.BusyboxError, match="install the Debian package busybox-static"):
        busybox.find_busybox()


def test_rootfs_contents():
    data = rootfs(source_date_epoch=EPOCH)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        by_name = {m.name: m for m in members}
        binary = tar.extractfile("bin/busybox").read()
        passwd = tar.extractfile("etc/passwd").read().decode()
        group = tar.extractfile("etc/group").read().decode()
    assert binary == busybox.find_busybox().read_bytes()
    assert by_name["bin/sh"].islnk() and by_name["bin/sh"].linkname == "bin/busybox"
    for applet in busybox.applet_paths(busybox.find_busybox()):
        assert by_name[applet].linkname == "bin/busybox"
    assert passwd.startswith("root:x:0:0:root:/root:/bin/sh\n") and "nobody:x:65534:65534:" in passwd
    assert "root:x:0:" in group and "nogroup:x:65534:" in group
    assert by_name["tmp"].isdir() and by_name["tmp"].mode == 0o1777
    for directory in ("dev", "proc", "sys", "home", "var", "root", "etc"):
        assert by_name[directory].isdir()
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "root", "root")}
    names = [m.name for m in members]
    for name in names:  # every parent comes before what it holds
        parent = os.path.dirname(name)
        assert not parent or names.index(parent) < names.index(name)


def test_rootfs_is_reproducible_and_clamped():
    first, second = rootfs(source_date_epoch=EPOCH), rootfs(source_date_epoch=EPOCH)
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        mtimes = {m.mtime for m in tar.getmembers()}
    assert mtimes == {min(EPOCH, int(busybox.find_busybox().stat().st_mtime))}
    assert rootfs(source_date_epoch=0) != first  # the epoch is part of the input


def test_busybox_image(tmp_path):
    ids = set()
    for name in ("one", "two"):
        service = ImageService(tmp_path / name)
        ids.add(busybox.create_busybox_image(service, source_date_epoch=EPOCH))
    assert len(ids) == 1  # the same host binary and epoch: the same image ID anywhere
    image_id = ids.pop()
    doc = service.inspect("busybox")
    assert doc["Id"] == image_id and doc["RepoTags"] == ["busybox:latest"]
    assert doc["Config"]["Cmd"] == ["sh"] and doc["Comment"] == "Imported from -"
    layer_tar = service.layer_store.get(service.get_image("busybox").chain_id).tar_path.read_bytes()
    assert "sha256:" + hashlib.sha256(layer_tar).hexdigest() == doc["RootFS"]["Layers"][0]
    assert busybox.create_busybox_image(service, "busybox:other", source_date_epoch=EPOCH) == image_id
    assert json.loads(service.get_image_config(image_id))["created"] == "2023-11-14T22:13:20Z"


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_the_rootfs_runs(tmp_path):
    """Extract the layer and run its shell in a chroot: the applets and users work."""
    root = tmp_path / "rootfs"
    apply_layer(io.BytesIO(rootfs()), root)
    out = subprocess.run(
        ["/bin/sh", "-c", "echo hello; ls / | tr '\\n' ' '; echo; id; test -k /tmp && echo sticky"],
        preexec_fn=lambda: (os.chroot(root), os.chdir("/")),
        env={"PATH": "/bin:/sbin:/usr/bin:/usr/sbin"},
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0] == "hello"
    assert lines[1].split() == [
        "bin",
        "dev",
        "etc",
        "home",
        "proc",
        "root",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "var",
    ]
    assert lines[2].startswith("uid=0(root) gid=0(root)")
    assert lines[3] == "sticky"
    assert os.stat(root / "bin/sh").st_ino == os.stat(root / "bin/busybox").st_ino
