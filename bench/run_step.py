"""Overhead of one `RUN true` step: prepare a snapshot, run the process, diff, commit, clean up.

The phases are the classic builder's: "diff" writes the snapshot's changes straight into the layer
store (hashed as they are written), "commit" publishes that layer and creates the step's image config
(ImageService.create_image, as the builder's commit does), "remove" throws the snapshot away.

For each snapshotter (overlay, naive) and each base (a busybox image; a 100 MB image of many files),
prints the median of each phase over repeated steps, after one warm-up step (which unpacks the base
layers and starts the runtime's zygote). Also prints what starting a fresh Python interpreter per step
would cost instead of forking the zygote, the reason the zygote exists.

    .venv/bin/python bench/run_step.py [--steps N] [--big-mb 100]
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from minibuild.image.image import format_time
from minibuild.image.service import ImageService
from minibuild.runtime import ProcessSpec, default_runtime, run
from minibuild.snapshot import NaiveSnapshotter, OverlaySnapshotter, overlay_supported

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
PHASES = ("prepare", "run", "diff", "commit", "remove")


def busybox_rootfs(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    for name in ("etc", "proc", "dev", "sys", "tmp", "root"):
        (root / name).mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    return root


def big_rootfs(root: Path, megabytes: int) -> Path:
    """busybox plus `megabytes` MB of data in 64 KiB files, 100 per directory."""
    busybox_rootfs(root)
    size = 64 * 1024
    chunk = os.urandom(size)
    for i in range(megabytes * 1024 * 1024 // size):
        directory = root / "data" / f"d{i // 100:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{i:05d}").write_bytes(chunk[i % 97 :] + chunk[: i % 97])
    return root


def layer_tar(root: Path, out: Path) -> Path:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return out


def base_image(service: ImageService, tar: Path) -> str:
    """A one-layer image of `tar`, as `docker import` makes one."""
    created = format_time(time.time_ns())
    history = [{"created": created, "created_by": "bench base"}]
    config = {"architecture": "amd64", "os": "linux", "config": {}, "created": created,
              "rootfs": {"type": "layers"}, "history": history}  # fmt: skip
    return service.create_image(config, layers=[tar])


def one_step(snapshotter, service: ImageService, base_id: str, key: str) -> dict[str, float]:
    times = {}
    store = service.layer_store
    base = service.get_image(base_id)
    chain = store.chain(base.chain_id)
    t0 = time.perf_counter()
    snapshot = snapshotter.prepare(key, chain)
    t1 = time.perf_counter()
    spec = ProcessSpec(args=["true"])
    code = asyncio.run(run(snapshot.rootfs, spec, mounts=snapshot.mounts, on_stdout=print, on_stderr=print))
    assert code == 0
    t2 = time.perf_counter()
    with store.writer(base.chain_id) as writer:
        snapshotter.diff(snapshot, writer)
        t3 = time.perf_counter()
        layer = writer.commit()
    created = format_time(time.time_ns())
    step = {"created": created, "created_by": "/bin/sh -c true"}
    config = {**base.config, "created": created, "history": [*base.history, step]}
    image_id = service.create_image(config, layers=[layer], parent_id=base_id)
    store.release(layer.chain_id)  # the image holds its own reference
    t4 = time.perf_counter()
    snapshotter.remove(snapshot)
    t5 = time.perf_counter()
    service.remove(image_id, prune=False)  # not timed: the base stays, the store as it was
    for name, (start, end) in zip(PHASES, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)], strict=True):
        times[name] = end - start
    times["total"] = t5 - t0
    return times


def bench(label: str, snapshotter, service: ImageService, base_id: str, steps: int) -> None:
    one_step(snapshotter, service, base_id, "warmup")  # unpacks the base once, starts the zygote
    os.sync()  # measure steps, not the write-back of the unpacked base
    runs = [one_step(snapshotter, service, base_id, f"step{i}") for i in range(steps)]
    medians = {name: statistics.median(r[name] for r in runs) * 1000 for name in (*PHASES, "total")}
    phases = "  ".join(f"{name} {medians[name]:7.1f}" for name in PHASES)
    print(f"{label:<24} total {medians['total']:8.1f} ms   ({phases} ms)")


def interpreter_start(args: list[str], times: int = 20) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--big-mb", type=int, default=100)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="minibuild-bench-"))
    try:
        service = ImageService(work / "data")
        bases = {
            "busybox": busybox_rootfs(work / "busybox"),
            f"{options.big_mb} MB": big_rootfs(work / "big", options.big_mb),
        }
        images = {
            name: base_image(service, layer_tar(root, work / f"{name}.tar")) for name, root in bases.items()
        }
        for name in bases:
            shutil.rmtree(bases[name])
        kinds = [NaiveSnapshotter]
        if overlay_supported(work):
            kinds.insert(0, OverlaySnapshotter)
        else:
            print("overlay: not available here")
        print(f"median of {options.steps} `RUN true` steps after one warm-up step")
        for kind in kinds:
            for base, base_id in images.items():
                snapshotter = kind(work / f"{kind.name}-{base.replace(' ', '')}")
                steps = (
                    options.steps
                    if kind is OverlaySnapshotter or base == "busybox"
                    else max(5, options.steps // 6)
                )
                bench(f"{kind.name} on {base}", snapshotter, service, base_id, steps)
        print("for comparison, starting a fresh interpreter instead of forking the zygote:")
        for args in (["-S", "-E", "-c", "pass"], ["-c", "import minibuild.runtime.init"]):
            print(f"  python {' '.join(args):<40} {interpreter_start(args):7.1f} ms")
    finally:
        default_runtime().close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
