"""Throughput of the archive and the stores: untar, layer registration, import, save, load.

    .venv/bin/python bench/store.py

Prints wall time and CPU (user + system) for each step; GNU tar extracts the same many-files archive
for comparison when it is installed. Figures vary with the disk and the machine's load.
TMPDIR=/dev/shm (tmpfs) leaves the disk's own costs out, such as ext4's inode allocation after deletes.
"""

import io
import os
import resource
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from minibuild.archive import untar
from minibuild.archive.tarstream import read_entries
from minibuild.image.busybox import create_busybox_image
from minibuild.image.service import ImageService


def many_files_tar(dirs: int = 100, files: int = 100, size: int = 512) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in range(dirs):
            info = tarfile.TarInfo(f"usr/share/d{d}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
            for f in range(files):
                info = tarfile.TarInfo(f"usr/share/d{d}/f{f}")
                info.size = size
                tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


def one_big_file_tar(megabytes: int = 100) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(1 << 20) * megabytes
        info = tarfile.TarInfo("big")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def measure(label: str, fn, *, children: bool = False) -> None:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    before, start = resource.getrusage(who), time.perf_counter()
    fn()
    after, wall = resource.getrusage(who), time.perf_counter() - start
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"{label:<44} wall {wall:7.3f} s   cpu {cpu:7.3f} s")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="minibuild-bench-"))
    try:
        small = many_files_tar()
        big = one_big_file_tar()
        measure("untar 10,000 files of 512 B", lambda: untar(io.BytesIO(small), work / "small"))
        measure(
            "read its 10,100 headers (no extraction)", lambda: sum(1 for _ in read_entries(io.BytesIO(small)))
        )
        if shutil.which("tar"):
            (work / "gnu").mkdir()
            measure(
                "GNU tar, the same archive",
                lambda: subprocess.run(["tar", "-xf", "-", "-C", str(work / "gnu")], input=small, check=True),
                children=True,
            )
        measure("untar one 100 MiB file", lambda: untar(io.BytesIO(big), work / "big"))
        service = ImageService(work / "root")
        measure(
            "register a 100 MiB layer (hash + validate)",
            lambda: service.layer_store.register(io.BytesIO(big)),
        )
        measure("register a 10,000-file layer", lambda: service.layer_store.register(io.BytesIO(small)))
        measure(
            "create busybox:latest (rootfs + import)",
            lambda: create_busybox_image(service, source_date_epoch=0),
        )
        out = io.BytesIO()
        measure("save busybox:latest", lambda: service.save(["busybox"], out))
        other = ImageService(work / "other")
        measure(
            "load it into an empty data root", lambda: other.load(io.BytesIO(out.getvalue()), on_stream=len)
        )
        print(f"saved archive: {len(out.getvalue()) / 1e6:.2f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
