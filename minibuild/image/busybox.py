"""An offline busybox base image (no moby file: it stands in for `docker import` of a busybox rootfs).

dockerd's reference runs used `busybox:local`, a static busybox rootfs imported with `docker import`.
This module builds the same kind of rootfs without a network: the host's statically linked busybox
(Debian package `busybox-static`) at /bin/busybox, its applets as hard links at the paths the binary
itself lists (`busybox --list-full`), /etc/passwd and /etc/group with the usual system users, and the
empty directories a container expects (/tmp mode 1777, /root, /home, /var, /dev, /proc, /sys).

The tar is reproducible: entries sorted, owner 0:0 `root`, every time the busybox binary's mtime
clamped to SOURCE_DATE_EPOCH when one is given. The same host binary always gives the same layer,
so the same image ID; another distribution's busybox gives another one.
"""

import io
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from minibuild import errdefs
from minibuild.archive.tarstream import tar_header, write_end, write_entry

if TYPE_CHECKING:
    from minibuild.image.service import ImageService

BUSYBOX_PACKAGE = "busybox-static"
BUSYBOX_CHANGES = ['CMD ["sh"]']  # the official image's default command
_PT_INTERP = 3

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""

GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""

# Directories and their modes; parents of applet paths are added as 0755.
DIRECTORIES = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555, "root": 0o700,
               "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "var": 0o755, "var/spool": 0o755,
               "var/spool/mail": 0o755, "var/www": 0o755}  # fmt: skip


class BusyboxError(errdefs.System):
    """No usable static busybox on this host."""


def find_busybox() -> Path:
    """The host's static busybox: /bin/busybox, else `busybox` on PATH; checked to be static."""
    candidates = [Path("/bin/busybox")]
    found = shutil.which("busybox")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            check_static(path)
            return path
    raise BusyboxError(f"no busybox binary found: install the Debian package {BUSYBOX_PACKAGE}")


def check_static(path: Path) -> None:
    """Refuse a dynamically linked binary: it would need the host's libc inside the image."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise BusyboxError(
                f"{path} is not an ELF executable; install the Debian package {BUSYBOX_PACKAGE}"
            )
        is64, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        if is64:
            (phoff,) = struct.unpack_from(order + "Q", ident, 0x20)
            phentsize, phnum = struct.unpack_from(order + "HH", ident, 0x36)
        else:
            (phoff,) = struct.unpack_from(order + "I", ident, 0x1C)
            phentsize, phnum = struct.unpack_from(order + "HH", ident, 0x2A)
        f.seek(phoff)
        headers = f.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(order + "I", headers, i * phentsize)
        if p_type == _PT_INTERP:
            raise BusyboxError(
                f"{path} is dynamically linked; a base image needs a static busybox: "
                f"install the Debian package {BUSYBOX_PACKAGE}"
            )


def applet_paths(busybox: Path) -> list[str]:
    """Where each applet lives, as the binary says (`busybox --list-full`)."""
    try:
        done = subprocess.run([str(busybox), "--list-full"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        raise BusyboxError(f"{busybox} --list-full failed: {err}") from err
    paths = {line.strip().lstrip("/") for line in done.stdout.decode().splitlines()}
    # `linuxrc` is an initrd's init at the root: not part of a container image.
    return sorted(p for p in paths if "/" in p and p != "bin/busybox" and ".." not in p.split("/"))


def _order(name: str) -> list[str]:
    """Archive order: by path components, so a directory comes before what it holds; bin/busybox
    first in bin/, so it carries the bytes and every applet is a hard link to it."""
    return ["bin", ""] if name == "bin/busybox" else name.rstrip("/").split("/")


def write_busybox_rootfs(
    out: BinaryIO, *, busybox: Path | None = None, source_date_epoch: int | None = None
) -> None:
    """Write the busybox rootfs as an uncompressed tar to `out`."""
    busybox = busybox or find_busybox()
    check_static(busybox)
    stat = busybox.stat()
    mtime = int(stat.st_mtime)
    if source_date_epoch is not None:
        mtime = min(mtime, source_date_epoch)
    applets = applet_paths(busybox)
    directories = dict(DIRECTORIES)
    for path in applets:
        parent = os.path.dirname(path)
        while parent:
            directories.setdefault(parent, 0o755)
            parent = os.path.dirname(parent)
    entries: dict[str, tuple[tarfile.TarInfo, bytes | Path | None]] = {}
    for name, mode in directories.items():
        entries[name + "/"] = (tar_header(name + "/", mode, mtime, kind=tarfile.DIRTYPE), None)
    # One inode under many names: the first name in archive order carries the bytes, the rest link to it.
    names = sorted(["bin/busybox", *applets], key=_order)
    entries[names[0]] = (tar_header(names[0], 0o755, mtime, stat.st_size), busybox)
    for path in names[1:]:
        link = tar_header(path, 0o755, mtime, kind=tarfile.LNKTYPE)
        link.linkname = names[0]
        entries[path] = (link, None)
    for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
        data = text.encode()
        entries[name] = (tar_header(name, 0o644, mtime, len(data)), data)
    for name in sorted(entries, key=_order):
        info, content = entries[name]
        if isinstance(content, Path):
            with open(content, "rb") as f:
                write_entry(out, info, f)
        else:
            write_entry(out, info, io.BytesIO(content) if content is not None else None)
    write_end(out)


def create_busybox_image(
    service: "ImageService", ref: str = "busybox:latest", *, source_date_epoch: int | None = None
) -> str:
    """Import the busybox rootfs as `ref` (default command `sh`); return the image ID."""
    buf = io.BytesIO()
    write_busybox_rootfs(buf, source_date_epoch=source_date_epoch)
    buf.seek(0)
    return service.import_image(buf, repo=ref, changes=BUSYBOX_CHANGES, source_date_epoch=source_date_epoch)
