"""Helpers for the BuildKit-style builder's tests (no tests here): a Backend with both builders on a
fresh data root with busybox:local, builds straight through Backend.build, traces decoded."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from minibuild.api.backend import BuildConfig, ProgressWriter
from minibuild.api.streamformatter import (
    AuxFormatter,
    BufferSink,
    JSONProgressOutput,
    new_stderr_writer,
    new_stdout_writer,
)
from minibuild.api.types import ImageBuildOptions
from minibuild.archive import apply_layer
from minibuild.backend.build import Backend, new_build_components
from minibuild.builder.dockerfile.builder import BuildManager
from minibuild.builder.next.builder import new_builder
from minibuild.builder.next.progress import StatusResponse
from minibuild.builder.next.timeline import timeline, vertices_from_trace
from minibuild.image.busybox import create_busybox_image

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here")
TRACE, IMAGE_ID = "moby.buildkit.trace", "moby.image.id"


def tar_of(files: dict[str, bytes], *, mtime: int = 1_700_000_000) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Built:
    """One build: the image ID or the error, the stream's messages, the decoded traces."""

    def __init__(self, image_id: str | None, messages: list[dict[str, Any]], error: BaseException | None):
        self.image_id, self.messages, self.error = image_id, messages, error
        self.traces = [
            StatusResponse.unmarshal(base64.b64decode(m["aux"])) for m in messages if m.get("id") == TRACE
        ]
        self.vertices = {v.name: v for v in vertices_from_trace(self.traces)}
        self.timeline = {e.name: e for e in timeline(list(self.vertices.values()))}

    def ok(self) -> str:
        assert self.error is None, repr(self.error)
        assert self.image_id
        return self.image_id

    def logs(self) -> bytes:
        return b"".join(entry.data for sr in self.traces for entry in sr.logs)

    def ran(self, name: str) -> bool:
        v = self.vertices[name]
        return v.started is not None and not v.cached

    def cached(self, name: str) -> bool:
        return self.vertices[name].cached

    def texts(self) -> list[str]:
        return [m["stream"] for m in self.messages if "stream" in m]


class NextBench:
    """The daemon's build backend (classic and BuildKit-style) on `data_root`, with busybox:local."""

    def __init__(self, data_root: Path, *, busybox: bool = True) -> None:
        self.data_root = data_root
        self.components = new_build_components(data_root)
        self.builder = new_builder(data_root, self.components)
        self.backend = Backend(BuildManager(self.components), self.components, buildkit=self.builder)
        self.service = self.components.image_service
        if busybox:  # as `busybox:local` (the reference's name) and `busybox:latest` (bench/'s)
            busybox_id = create_busybox_image(self.service, "busybox:local", source_date_epoch=0)
            self.service.tag(busybox_id, "busybox", "latest")

    def restart(self) -> NextBench:
        """A new backend on the same data root, as after a daemon restart."""
        return NextBench(self.data_root, busybox=False)

    async def build_async(
        self,
        dockerfile: str,
        files: dict[str, bytes] | None = None,
        *,
        body: bytes | None = None,
        **options: Any,
    ) -> Built:
        options.setdefault("version", "2")
        context = dict(files or {})
        context.setdefault("Dockerfile", dockerfile.encode())
        path = self.data_root / f"body-{os.urandom(4).hex()}.tar"
        path.write_bytes(tar_of(context) if body is None else body)
        sink = BufferSink()
        writer = ProgressWriter(
            sink,
            new_stdout_writer(sink),
            new_stderr_writer(sink),
            AuxFormatter(sink),
            JSONProgressOutput(sink),
        )
        image_id, error = None, None
        try:
            image_id = await self.backend.build(BuildConfig(path, ImageBuildOptions(**options), writer))
        except Exception as err:
            error = err
        finally:
            path.unlink(missing_ok=True)
        messages = [json.loads(line) for line in sink.getvalue().split(b"\r\n") if line]
        return Built(image_id, messages, error)

    def build(self, dockerfile: str, files: dict[str, bytes] | None = None, **options: Any) -> Built:
        return asyncio.run(self.build_async(dockerfile, files, **options))

    def config(self, image_id: str) -> dict[str, Any]:
        return self.service.get_image(image_id).config

    def tree(self, image_id: str, dest: Path) -> Path:
        image = self.service.get_image(image_id)
        dest.mkdir(parents=True, exist_ok=True)
        if image.chain_id is not None:
            for layer in self.service.layer_store.chain(image.chain_id):
                with layer.open() as f:
                    apply_layer(f, dest)
        return dest


def processes_with(marker: str) -> list[int]:
    """The host's processes whose command line contains `marker` (a RUN step's, seen from outside)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


def snapshot_of_tree(root: Path) -> dict[str, tuple]:
    """Every path with its type, mode, owner, size and content or link (no times): for comparisons."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = "/" + os.path.relpath(full, root)
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    detail: Any = f.read()
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(full)
            else:
                detail = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail)
    return out
