"""What vertices do for real (buildkit solver/llbsolver/ops: source.go, exec.go, file.go;
solver/llbsolver/file/backend.go; cache/contenthash; worker/base.go ResolveOp).

A `Worker` gives each vertex its op for one build:

    docker-image://…   ImageSourceOp   the image's layers in the build cache: imported from the image
                                       store, or pulled from the registry (pull.py)
    context://…        ContextSourceOp the request body (its key: the body's sha256)
    http(s)://…        HTTPSourceOp    a file downloaded for ADD <url>
    exec               ExecOp          RUN: a snapshot of the input, the runtime, the diff as a layer
    file               FileOp          COPY/ADD/WORKDIR/heredocs on a snapshot, the diff as a layer;
                                       the context's `copy /context /` unpacks into a plain directory

Results are cache.Ref: a stack of layers (an op that changed nothing returns its input's stack) or a
directory. Blocking work runs in threads; a cancelled op waits for its thread before it returns, so
nothing is removed from under it. Copies follow BuildKit's rules (fsutil copy): a trailing `/` makes
the destination a directory, a directory's contents are copied into it, wildcards that match nothing
copy nothing, owners and times come from the source unless --chown says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import re
import secrets
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import requests

from minibuild import errdefs
from minibuild.api import platforms
from minibuild.archive import (
    ArchiveError,
    decompress_stream,
    detect_compression,
    follow_symlink_in_scope,
    untar,
)
from minibuild.archive.changes import export_changes
from minibuild.builder import run_in_thread as in_thread
from minibuild.builder.next.cache import JobCache, Ref
from minibuild.builder.next.llb import Vertex, canonical
from minibuild.builder.next.progress import CANCELED
from minibuild.builder.next.pull import ResolvedImage, pull_into_cache, resolve_image_config
from minibuild.builder.next.solver import CacheMap, ExecContext
from minibuild.distribution import AuthConfig, RegistryService, parse_reference
from minibuild.image.service import ImageService
from minibuild.runtime import ContainerError, ProcessSpec, Runtime, UserLookupError, get_exec_user
from minibuild.runtime import Mount as RuntimeMount
from minibuild.snapshot import Snapshot, Snapshotter

HOSTNAME = "buildkitsandbox"  # the hostname BuildKit gives RUN steps
# One lock per cache mount directory, for `locked` and `private` sharing (the daemon has one loop).
_CACHE_MOUNT_LOCKS: dict[str, asyncio.Lock] = {}
_CHUNK = 1 << 20
_WILDCARD = re.compile(r"[*?\[]")


class OpError(Exception):
    """An op failed; str() is BuildKit's message."""


def op_digest(op: dict[str, Any], *extra: str) -> str:
    """The op's own part of a cache key: its definition without its inputs (those have keys of their own)."""
    data = canonical({"op": op, "extra": list(extra)})
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Worker:
    """Resolves vertices to ops for one build (worker.ResolveOp) and holds what that build shares."""

    def __init__(
        self,
        *,
        cache: JobCache,
        snapshotter: Snapshotter,
        runtime: Runtime,
        image_service: ImageService,
        registry: RegistryService | None = None,
        source_date_epoch: int | None = None,
    ) -> None:
        self.cache = cache
        self.snapshotter = snapshotter
        self.runtime = runtime
        self.image_service = image_service
        self.registry = registry
        self.remote_images: dict[str, ResolvedImage] = {}  # name@digest -> what the frontend resolved
        self.auth_configs: dict[str, AuthConfig] = {}  # X-Registry-Config, for what sources resolve
        self.epoch = source_date_epoch
        self.bodies: dict[str, Path] = {}  # context:// identifier -> the request body
        self.content_addressed: set[str] = set()  # vertices whose users key them by content: the context
        self._checksums: dict[tuple[str, str, bool], str] = {}
        self._removals: list[asyncio.Future] = []

    def __call__(self, vertex: Vertex) -> Any:
        kind = vertex.kind
        if kind == "source":
            identifier = vertex.op["identifier"]
            if identifier.startswith("docker-image://"):
                return ImageSourceOp(self, vertex)
            if identifier.startswith("context://"):
                return ContextSourceOp(self, vertex)
            if identifier.startswith(("http://", "https://")):
                return HTTPSourceOp(self, vertex)
            raise OpError(f"unsupported source {identifier}")
        if kind == "exec":
            return ExecOp(self, vertex)
        if kind == "file":
            return FileOp(self, vertex)
        raise OpError(f"unsupported op {kind}")

    # -- snapshots --

    def new_layer_from(self, snapshot: Snapshot, parent: Ref) -> Ref:
        """The result of a step: `parent` plus the snapshot's changes as one layer (none if no change)."""
        changes = self.snapshotter.changes(snapshot)
        if not changes:
            return Ref(parent.chain, None, time.time())
        # Written once, straight into the layer store (hashed and synced as it goes): no temporary tar.
        with self.cache.layer_writer(parent.chain[-1] if parent.chain else None) as writer:
            export_changes(
                snapshot.upper,
                changes,
                writer,
                source_date_epoch=self.epoch,
                host_root=self.snapshotter.host_root,
            )
            layer = self.cache.commit_layer(writer)
        return Ref((*parent.chain, layer), None, time.time())

    def prepare(self, parent: Ref) -> Snapshot:
        if parent.path is not None:
            raise OpError("a directory result cannot be the root of a step")
        return self.snapshotter.prepare("bk-" + secrets.token_hex(10), list(parent.chain))

    @contextlib.contextmanager
    def file_views(self, dest: Snapshot, sources: dict[int, Ref]) -> Iterator[tuple[Path, dict[int, Path]]]:
        """The destination snapshot writable and the source results readable, from the host.

        Directories are used as they are; the naive snapshotter's trees are plain directories too.
        Overlays (the destination's and one per source stack) are mounted together, by one process
        holding them (Runtime.mounted), under a staging directory: `dest/`, `src-<input>/`.
        """
        views = {i: ref.path for i, ref in sources.items() if ref.path is not None}
        stacks = {i: ref for i, ref in sources.items() if ref.path is None}
        tree = getattr(self.snapshotter, "tree", None)
        if not dest.mounts:
            for i, ref in stacks.items():
                if tree is None:
                    raise OpError("a snapshotter without mounts must keep trees")
                views[i] = tree(list(ref.chain))
            yield dest.rootfs, views
            return
        readers: dict[int, Snapshot] = {}
        staging = self.cache.manager.staging_dir("views-")
        try:
            for i, ref in stacks.items():
                readers[i] = self.prepare(ref)
            staging.mkdir()
            (staging / "dest").mkdir()
            mounts = [replace(m, target="/dest") for m in dest.mounts]
            for i, snapshot in readers.items():
                (staging / f"src-{i}").mkdir()
                mounts += [replace(m, target=f"/src-{i}") for m in snapshot.mounts]
            with self.runtime.mounted(staging, mounts) as root:
                yield root / "dest", {**views, **{i: root / f"src-{i}" for i in readers}}
        finally:
            for snapshot in readers.values():
                self.snapshotter.remove(snapshot)
            shutil.rmtree(staging, ignore_errors=True)

    @contextlib.contextmanager
    def read_view(self, ref: Ref) -> Iterator[Path]:
        """A result's tree, readable from the host while the context lasts."""
        if ref.path is not None:
            yield ref.path
            return
        tree = getattr(self.snapshotter, "tree", None)
        if tree is not None:
            yield tree(list(ref.chain))
            return
        snapshot = self.prepare(ref)
        try:
            with self.snapshotter.mounted(snapshot) as root:
                yield root
        finally:
            self.snapshotter.remove(snapshot)

    def cache_mount(self, m: dict, scratch: Path) -> tuple[Path, asyncio.Lock | None]:
        """A cache mount's directory, and the lock to hold while using it (`locked` sharing); a busy
        `private` one is replaced by a fresh `scratch` directory, gone with the step."""
        directory, record_id = self.cache.cache_mount(
            m["cache_id"], mode=m.get("mode", 0o755), uid=m.get("uid", 0), gid=m.get("gid", 0)
        )
        sharing = m.get("sharing", "shared")
        lock = _CACHE_MOUNT_LOCKS.setdefault(record_id, asyncio.Lock())
        if sharing == "locked":
            return directory, lock
        if sharing == "private" and lock.locked():  # busy: this user gets a directory of its own
            scratch.mkdir(m.get("mode", 0o755))
            return scratch, None
        return directory, (lock if sharing == "private" else None)

    def remove_stubs(self, snapshot: Snapshot, stubs: list[str]) -> None:
        """Remove the mount points a step needed, deepest first, unless the step filled them."""
        with self.snapshotter.mounted(snapshot) as tree:
            for rel in reversed(stubs):
                path = tree / rel.lstrip("/")
                with contextlib.suppress(OSError):  # not empty (or gone): the step made it its own
                    if path.is_dir() and not path.is_symlink():
                        path.rmdir()
                    elif path.stat().st_size == 0:
                        path.unlink()

    def remove_later(self, snapshot: Snapshot) -> None:
        """Remove a finished step's snapshot in the background: its result is already a layer, so
        whatever waits for that result need not wait for the removal. `close()` waits for it."""
        self._removals.append(asyncio.ensure_future(in_thread(self.snapshotter.remove, snapshot)))

    async def close(self) -> None:
        """Wait for background removals (even when cancelled: nothing is left half removed)."""
        for task in self._removals:
            while not task.done():
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    continue
                except Exception:
                    break
        self._removals.clear()

    # -- content checksums (contenthash) --

    def checksum(self, ref: Ref, selectors: list[tuple[str, bool, bool]]) -> str:
        """A digest of the files `selectors` ((path, wildcard, follow symlinks)) pick in a directory result;
        names, types, modes, owners, link targets and contents count, times do not."""
        if ref.path is None:
            raise OpError("content checksums are only taken of the build context")
        h = hashlib.sha256()
        for path, wildcard, follow in selectors:
            memo = (str(ref.path), path, wildcard)
            if memo not in self._checksums:
                self._checksums[memo] = _checksum_paths(ref.path, path, wildcard, follow)
            h.update(self._checksums[memo].encode() + b"\n")
        return "sha256:" + h.hexdigest()


# ---- sources --------------------------------------------------------------------------------------------


class ImageSourceOp:
    """FROM <image> (and COPY --from=<image>): the image's layers in the build cache, keyed by the image
    ID — imported from the image store for a local image; pulled from its registry for one the frontend
    resolved there, or that this vertex resolves itself (an image only COPY --from reads, as BuildKit's
    source op resolves what the frontend did not)."""

    def __init__(self, worker: Worker, vertex: Vertex) -> None:
        self.worker, self.vertex = worker, vertex
        self.ref = vertex.op["identifier"].removeprefix("docker-image://")
        self.remote = worker.remote_images.get(self.ref)
        self.image: Any = None

    async def cache_map(self, ctx: ExecContext) -> CacheMap:
        if self.remote is None and self.vertex.op["attrs"].get("image.resolvemode") != "pull":
            try:
                self.image = self.worker.image_service.get_image(self.ref)
            except errdefs.NotFound as err:
                if self.worker.registry is None:
                    raise OpError(f"failed to load cache key: {self.ref}: not found: {err}") from None
            except Exception as err:
                raise OpError(f"failed to load cache key: {self.ref}: {err}") from None
        if self.image is None and self.remote is None:
            self.remote = await self._resolve()
        return CacheMap(op_digest(self.vertex.op, self.remote.image_id if self.remote else self.image.id))

    async def _resolve(self) -> ResolvedImage:
        registry = self.worker.registry
        if registry is None:
            raise OpError(f"failed to load cache key: {self.ref}: not found: this daemon cannot pull images")
        try:
            ref = parse_reference(self.ref)
            auth = registry.resolve_auth_config(self.worker.auth_configs, ref)
            platform = platforms.parse(self.vertex.op.get("platform") or f"linux/{platforms.host_arch()}")
            return await resolve_image_config(registry, ref, auth=auth, platform=platform)
        except errdefs.DockerError as err:
            raise OpError(f"failed to load cache key: {err}") from None

    async def exec(self, ctx: ExecContext, inputs: list[Any]) -> Ref:
        if self.remote is not None:
            assert self.worker.registry is not None  # the frontend resolved it there
            return await pull_into_cache(self.worker.registry, self.worker.cache, self.remote, ctx)
        return await in_thread(self._import)

    def _import(self) -> Ref:
        store = self.worker.image_service.layer_store
        chain = store.chain(self.image.chain_id) if self.image.chain_id else []
        mine = self.worker.cache.manager.layers
        out = []
        for layer in chain:
            if layer.chain_id in mine:
                out.append(mine.acquire(layer.chain_id))
                self.worker.cache.layers.append(layer.chain_id)
            else:
                out.append(self.worker.cache.register_layer(layer.tar_path, out[-1] if out else None))
        return Ref(tuple(out), None, time.time())


class ContextSourceOp:
    """[internal] load remote build context: the request body, keyed by its sha256.

    BuildKit reads the body over an HTTP URL dockerd serves; here it is the file the router spooled.
    """

    def __init__(self, worker: Worker, vertex: Vertex) -> None:
        self.worker, self.vertex = worker, vertex
        self.body = worker.bodies[vertex.op["identifier"]]

    async def cache_map(self, ctx: ExecContext) -> CacheMap:
        digest = await in_thread(_file_sha256, self.body)
        return CacheMap("context:" + digest)

    async def exec(self, ctx: ExecContext, inputs: list[Any]) -> Ref:
        return Ref((), self.body, time.time())


class HTTPSourceOp:
    """ADD <url>: the file, downloaded when the key is computed (its key: its content and its time).

    The download lands, under a name made of both, beside the unpacked contexts: a later build that
    gets the same file finds it there.
    """

    def __init__(self, worker: Worker, vertex: Vertex) -> None:
        self.worker, self.vertex = worker, vertex
        self.url = vertex.op["identifier"]
        name = vertex.op["attrs"].get("http.filename", "")
        self.filename = name if name not in ("", ".", "..") and "/" not in name else "__unnamed__"
        self.download: Path | None = None

    async def cache_map(self, ctx: ExecContext) -> CacheMap:
        digest = await in_thread(self._download)
        return CacheMap(op_digest(self.vertex.op, digest))

    def _download(self) -> str:
        manager = self.worker.cache.manager
        staging = manager.staging_dir("http-")
        staging.mkdir()
        target = staging / self.filename
        h = hashlib.sha256()
        try:
            with requests.get(self.url, stream=True, timeout=60) as resp:
                if resp.status_code >= 400:
                    raise OpError(f"invalid response status {resp.status_code}")
                with open(target, "wb") as out:
                    for chunk in resp.iter_content(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                modified = resp.headers.get("Last-Modified")
            os.chmod(target, 0o600)  # BuildKit's mode for downloaded files
            mtime = _http_time(modified)
            if mtime is not None:
                os.utime(target, (mtime, mtime))
            digest = (
                "sha256:" + hashlib.sha256(f"{h.hexdigest()} {self.filename} {mtime}".encode()).hexdigest()
            )
            self.download = manager.context_dir("http-" + digest[7:])
            manager.install_dir(staging, self.download)
        except requests.RequestException as err:
            raise OpError(f"failed to load cache key: {err}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return digest

    async def exec(self, ctx: ExecContext, inputs: list[Any]) -> Ref:
        assert self.download is not None
        return Ref((), self.download, time.time())


def _http_time(value: str | None) -> float | None:
    """A Last-Modified header as Unix seconds (None when absent or unreadable)."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


# ---- exec (RUN) -----------------------------------------------------------------------------------------


class ExecOp:
    """RUN: the command in a new snapshot of its input, through the runtime; the diff is the result.

    RUN --mount: `cache` mounts a directory kept across builds (an exec.cachemount record; `locked`
    sharing lets one step at a time use it, `private` gives a busy one's other users a fresh one),
    `tmpfs` a tmpfs, `bind` a private copy of a path of the context or another stage (so nothing a
    step writes there reaches them; BuildKit makes it read-only instead). The directories a mount
    needed in the tree are removed after the step, unless it put something in them.
    """

    def __init__(self, worker: Worker, vertex: Vertex) -> None:
        self.worker, self.vertex = worker, vertex
        self.meta = vertex.op

    def cache_map(self, ctx: ExecContext) -> CacheMap:
        deps: list[Callable | None] = []
        for i, input_vertex in enumerate(self.vertex.inputs):
            if input_vertex.digest not in self.worker.content_addressed:
                deps.append(None)
                continue
            # A bind mount of the context: the key follows the content of what it shows.
            selectors = [
                (m["selector"] or "/", False, True) for m in self.meta["mounts"][1:] if m.get("input") == i
            ]

            async def checksum(ref: Ref, selectors: list = selectors) -> str:
                return await in_thread(self.worker.checksum, ref, selectors)

            deps.append(checksum)
        # The proxy env is left out of the key, as BuildKit does: another proxy gives the same result.
        op = {k: v for k, v in self.meta.items() if k != "proxy_env"}
        return CacheMap(op_digest(op, f"epoch={self.worker.epoch}"), deps)

    async def exec(self, ctx: ExecContext, inputs: list[Any]) -> Ref:
        root_mount, *extra = self.meta["mounts"]
        root = inputs[root_mount["input"]] if root_mount["input"] >= 0 else Ref()
        snapshot = await in_thread(self.worker.prepare, root)
        staging = self.worker.cache.manager.staging_dir("mounts-")
        try:
            mounts, stubs, locks = list(snapshot.mounts), [], []
            if extra:
                if not mounts:  # a plain directory tree: bind it on itself, the others go on top
                    mounts.append(RuntimeMount("bind", str(snapshot.rootfs), ("rbind",), "/"))
                more, stubs, locks = await in_thread(self._prepare_mounts, snapshot, inputs, extra, staging)
                mounts += more
            # The op's ulimit and shm_size (in its cache key, as BuildKit has them) are not applied: the
            # runtime gives every step the daemon's limits and a 64 MiB /dev/shm.
            spec = ProcessSpec(
                args=list(self.meta["args"]),
                env=[*self.meta["env"], *_proxy_env_list(self.meta.get("proxy_env", {}))],
                cwd=self.meta["cwd"],
                user=self.meta["user"],
                network_mode=self.meta["network"],
                hostname=HOSTNAME,
                extra_hosts=[h.replace("=", ":", 1) for h in self.meta["extra_hosts"]],
            )
            async with contextlib.AsyncExitStack() as held:
                for lock in locks:
                    await held.enter_async_context(lock)
                try:
                    code = await self.worker.runtime.run(
                        snapshot.rootfs, spec, on_stdout=ctx.stdout, on_stderr=ctx.stderr, mounts=mounts
                    )
                except (ContainerError, UserLookupError) as err:
                    raise OpError(str(err)) from None
                except asyncio.CancelledError:
                    # The process is killed (SIGKILL: 137), and runc's error carries the context's.
                    ctx.canceled_as = f"{_executor_failed(spec.args, 137)}: {CANCELED}"
                    raise
            if code != 0:
                raise OpError(_executor_failed(spec.args, code))
            if stubs:
                await in_thread(self.worker.remove_stubs, snapshot, stubs)
            return await in_thread(self.worker.new_layer_from, snapshot, root)
        finally:
            self.worker.remove_later(snapshot)
            if extra:
                await in_thread(shutil.rmtree, staging, True)

    def _prepare_mounts(
        self, snapshot: Snapshot, inputs: list[Any], specs: list[dict], staging: Path
    ) -> tuple[list[RuntimeMount], list[str], list[asyncio.Lock]]:
        """Each extra mount as the runtime mounts it, and the mount points it needed in the tree."""
        staging.mkdir()
        out: list[RuntimeMount] = []
        stubs: list[str] = []
        locks: list[asyncio.Lock] = []
        with self.worker.snapshotter.mounted(snapshot) as tree:
            for i, m in enumerate(specs):
                target = _in_root(tree, m["dest"])
                rel = "/" + os.path.relpath(target, tree)
                if m["type"] == "bind":
                    source = staging / f"bind-{i}"
                    with self.worker.read_view(inputs[m["input"]] if m["input"] >= 0 else Ref()) as view:
                        path = _in_root(view, m["selector"] or "/")
                        if not os.path.lexists(path):
                            raise OpError(
                                f'failed to compute cache key: "{m["selector"]}" not found: not found'
                            )
                        _Copier(None, None).copy(path, source)
                    is_dir = source.is_dir()
                elif m["type"] == "cache":
                    source, lock = self.worker.cache_mount(m, staging / f"private-{i}")
                    locks += [lock] if lock is not None else []
                    is_dir = True
                elif m["type"] == "tmpfs":
                    is_dir = True
                else:
                    raise OpError(f"unsupported mount type {m['type']}")
                stubs += _mount_point(tree, target, is_dir)
                if m["type"] == "tmpfs":
                    options = (f"size={m['size']}",) if m.get("size") else ()
                    out.append(RuntimeMount("tmpfs", "tmpfs", options, rel))
                else:
                    out.append(RuntimeMount("bind", str(source), ("rbind",), rel))
        return out, stubs, locks


def _proxy_env_list(proxy_env: dict[str, str]) -> list[str]:
    """proxyEnvList: each proxy setting in both cases (HTTP_PROXY and http_proxy)."""
    return [f"{name}={value}" for key, value in proxy_env.items() for name in (key.upper(), key)]


def _executor_failed(args: list[str], code: int) -> str:
    return f"executor failed running [{' '.join(args)}]: exit code: {code}"


def _mount_point(tree: Path, target: Path, is_dir: bool) -> list[str]:
    """Create a missing mount point (and its missing parents); the paths made, for removal later."""
    missing = []
    probe = target
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    made = []
    for index, path in enumerate(reversed(missing)):
        if is_dir or index < len(missing) - 1:
            path.mkdir(0o755)
        else:
            path.touch(0o644)
        made.append("/" + os.path.relpath(path, tree))
    return made


# ---- file ops (COPY, ADD, WORKDIR, inline files) ------------------------------------------------------


class FileOp:
    """A chain of file actions on one tree: mkdir, mkfile, copy (from the context or another result)."""

    def __init__(self, worker: Worker, vertex: Vertex) -> None:
        self.worker, self.vertex = worker, vertex
        self.base = vertex.op["base"]
        self.actions = vertex.op["actions"]

    def cache_map(self, ctx: ExecContext) -> CacheMap:
        deps: list[Callable | None] = []
        for i, input_vertex in enumerate(self.vertex.inputs):
            if input_vertex.digest not in self.worker.content_addressed:
                deps.append(None)
                continue
            selectors = [
                (a["src"], bool(a.get("allow_wildcard")), bool(a.get("follow_symlinks")))
                for a in self.actions
                if a["action"] == "copy" and a["input"] == i
            ]

            async def checksum(ref: Ref, selectors: list = selectors) -> str:
                return await in_thread(self.worker.checksum, ref, selectors)

            deps.append(checksum)
        return CacheMap(op_digest(self.vertex.op, f"epoch={self.worker.epoch}"), deps)

    def unpacks_context(self) -> bool:
        """`copy /context /`: a scratch tree made of one unpacked archive, kept as a plain directory."""
        return self.base == -1 and len(self.actions) == 1 and bool(self.actions[0].get("attempt_unpack"))

    async def exec(self, ctx: ExecContext, inputs: list[Any]) -> Ref:
        if self.unpacks_context() and inputs[self.actions[0]["input"]].path is not None:
            source = inputs[self.actions[0]["input"]].path
            if source.is_dir():  # a downloaded context: the file the http source named
                source = source / posixpath.basename(self.actions[0]["src"])
            return await in_thread(self._unpack_context, source)
        base = inputs[self.base] if self.base >= 0 else Ref()
        snapshot = await in_thread(self.worker.prepare, base)
        try:
            await in_thread(self._apply, snapshot, inputs)
            return await in_thread(self.worker.new_layer_from, snapshot, base)
        finally:
            self.worker.remove_later(snapshot)

    def _unpack_context(self, body: Path) -> Ref:
        manager = self.worker.cache.manager
        final = manager.context_dir("ctx-" + _file_sha256(body)[7:])
        if not final.is_dir():
            staging = manager.staging_dir("context-")
            staging.mkdir()
            try:
                with open(body, "rb") as raw:
                    head = raw.read(1)
                    raw.seek(0)
                    if head:
                        untar(raw, staging, whiteouts="keep")
            except ArchiveError as err:
                shutil.rmtree(staging, ignore_errors=True)
                raise OpError(str(err)) from None
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            manager.install_dir(staging, final)
        return Ref((), final, time.time())

    def _apply(self, snapshot: Snapshot, inputs: list[Any]) -> None:
        sources = {
            a["input"]: inputs[a["input"]] for a in self.actions if a["action"] == "copy" and a["input"] >= 0
        }
        with self.worker.file_views(snapshot, sources) as (root, views):
            views[-1] = self.worker.cache.manager.staging_dir("scratch-")  # copies from scratch: nothing
            for action in self.actions:
                kind = action["action"]
                owner = _chown(action.get("chown", ""), root)
                if kind == "mkdir":
                    _mkdir(root, action["path"], action["mode"], action["make_parents"], owner)
                elif kind == "mkfile":
                    _mkfile(root, action["path"], action["mode"], bytes.fromhex(action["data"]), owner)
                elif kind == "copy":
                    _copy(views[action["input"]], root, action, owner)
                else:
                    raise OpError(f"unsupported file action {kind}")


def _chown(spec: str, root: Path) -> tuple[int, int] | None:
    """--chown user[:group], by name through the destination's /etc/passwd and /etc/group."""
    if not spec:
        return None
    user, _, group = spec.partition(":")

    def read(name: str) -> str | None:
        try:
            return follow_symlink_in_scope(f"etc/{name}", root).read_text(errors="replace")
        except OSError:
            return None

    try:
        exec_user = get_exec_user(f"{user}:{group or user}" if group or user.isdigit() else user,
                                  read("passwd"), read("group"))  # fmt: skip
    except UserLookupError as err:
        raise OpError(f"unable to convert uid/gid chown string to host mapping: {err}") from None
    return exec_user.uid, exec_user.gid


def _in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """A path of the tree, symlinks resolved inside `root` (the last one only if `follow_last`)."""
    clean = posixpath.normpath("/" + path).lstrip("/")
    if not clean or clean == ".":
        return Path(root)
    if follow_last:
        return follow_symlink_in_scope(clean, root)
    parent, name = posixpath.split(clean)
    return follow_symlink_in_scope(parent, root) / name


def _mkdir_all(root: Path, path: str, owner: tuple[int, int] | None) -> Path:
    """MkdirAll inside the tree; directories it creates get mode 0755 and `owner`."""
    target = _in_root(root, path)
    missing = []
    probe = target
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    if probe.is_symlink() or not probe.is_dir():
        raise OpError(f"mkdir {path}: not a directory")
    for directory in reversed(missing):
        directory.mkdir(0o755)
        os.chmod(directory, 0o755)
        if owner is not None:
            os.lchown(directory, *owner)
    return target


def _mkdir(root: Path, path: str, mode: int, parents: bool, owner: tuple[int, int] | None) -> None:
    target = _in_root(root, path)
    if target.is_dir():
        return
    if parents:
        _mkdir_all(root, posixpath.dirname(posixpath.normpath("/" + path)), owner)
    try:
        target.mkdir(mode)
    except FileExistsError:
        raise OpError(f"mkdir {path}: file exists") from None
    except FileNotFoundError:
        raise OpError(f"mkdir {path}: no such file or directory") from None
    os.chmod(target, mode)
    if owner is not None:
        os.lchown(target, *owner)


def _mkfile(root: Path, path: str, mode: int, data: bytes, owner: tuple[int, int] | None) -> None:
    target = _in_root(root, path, follow_last=False)
    if target.is_dir() and not target.is_symlink():
        raise OpError(f"mkfile {path}: is a directory")
    target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(target, mode)
    if owner is not None:
        os.lchown(target, *owner)


def _copy(src_root: Path, dest_root: Path, action: dict, owner: tuple[int, int] | None) -> None:
    """docopy: resolve wildcards, then unpack archives (ADD) or copy each match."""
    src = posixpath.normpath("/" + action["src"])
    if action.get("allow_wildcard") and _WILDCARD.search(src):
        matches = resolve_wildcards(src_root, src, bool(action.get("follow_symlinks")))
        if not matches and not action.get("allow_empty_wildcard"):
            raise OpError(f"{src} not found")
    else:
        matches = [src]
    for match in matches:
        if action.get("attempt_unpack") and _unpack(src_root, match, dest_root, action["dest"]):
            continue
        _copy_one(src_root, match, dest_root, action, owner)


def _copy_one(src_root: Path, src: str, dest_root: Path, action: dict, owner: tuple[int, int] | None) -> None:
    """copy.Copy for one source: where it lands follows fsutil's prepareTargetDir."""
    follow = bool(action.get("follow_symlinks"))
    src_path = _in_root(src_root, src, follow_last=follow)
    try:
        src_st = os.lstat(src_path)
    except FileNotFoundError:
        raise OpError(f'failed to copy files: "{src}" not found: not found') from None
    dest = action["dest"]
    ensure = dest if dest.endswith("/") else posixpath.dirname(posixpath.normpath("/" + dest))
    if action.get("create_dest_path", True):
        _mkdir_all(dest_root, ensure, owner)
    dest_path = _in_root(dest_root, dest)
    src_is_dir = stat.S_ISDIR(src_st.st_mode)
    dest_exists = dest_path.exists()
    contents_only = bool(action.get("dir_contents_only"))
    if (not contents_only and src_is_dir and dest_exists) or (
        not src_is_dir and dest_exists and dest_path.is_dir()
    ):
        dest_path = dest_path / posixpath.basename(src.rstrip("/") or "/")
    parent = dest_path if (contents_only and src_is_dir and not dest_exists) else dest_path.parent
    _mkdir_all(dest_root, "/" + os.path.relpath(parent, dest_root), owner)
    _Copier(owner, action.get("mode")).copy(src_path, dest_path, top=True)


class _Copier:
    """Copies a tree keeping hard links, symlinks, devices, modes, owners, xattrs and times."""

    def __init__(self, owner: tuple[int, int] | None, mode: int | None) -> None:
        self.owner, self.mode = owner, mode
        self.inodes: dict[tuple[int, int], Path] = {}

    def copy(self, src: Path, dst: Path, *, top: bool = False) -> None:
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
                raise OpError(f"cannot copy to non-directory: {dst.name}")
            created = not dst.exists()
            if created:
                dst.mkdir(0o700)
            for entry in sorted(os.listdir(src)):
                self.copy(src / entry, dst / entry)
            if created or not top:
                self.attributes(src, dst, st)
            return
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        elif dst.exists() or dst.is_symlink():
            dst.unlink()
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.inodes and not stat.S_ISDIR(st.st_mode):
            os.link(self.inodes[key], dst, follow_symlinks=False)
            return
        if stat.S_ISREG(st.st_mode):
            with open(src, "rb") as fin, open(dst, "xb") as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(dst)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            os.mknod(dst, st.st_mode, st.st_rdev)
        else:
            return  # sockets are not copied
        if st.st_nlink > 1:
            self.inodes[key] = dst
        self.attributes(src, dst, st)

    def attributes(self, src: Path, dst: Path, st: os.stat_result) -> None:
        uid, gid = self.owner if self.owner is not None else (st.st_uid, st.st_gid)
        with contextlib.suppress(PermissionError):
            os.lchown(dst, uid, gid)
        if not stat.S_ISLNK(st.st_mode):
            mode = self.mode if self.mode is not None else stat.S_IMODE(st.st_mode)
            os.chmod(dst, mode)
        try:
            names = os.listxattr(src, follow_symlinks=False)
        except OSError:
            names = []
        for name in names:
            with contextlib.suppress(OSError):
                os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _unpack(src_root: Path, src: str, dest_root: Path, dest: str) -> bool:
    """ADD of a local archive: extract it into the destination directory; False if it is no archive.

    untar resolves every entry below the destination as given, so a mounted snapshot's view
    (/proc/<pid>/root/...) is filled in place.
    """
    path = _in_root(src_root, src)
    if not path.is_file() or not _is_archive(path):
        return False
    target = _mkdir_all(dest_root, dest, None)
    with open(path, "rb") as raw:
        try:
            untar(raw, target, whiteouts="keep")
        except ArchiveError as err:
            raise OpError(str(err)) from None
    return True


def _is_archive(path: Path) -> bool:
    """isArchivePath: a (maybe compressed) file whose first block is a tar header."""
    with open(path, "rb") as f:
        head = f.read(512)
        if detect_compression(head) != "identity":
            f.seek(0)
            try:
                head = decompress_stream(f).read(512)
            except (ArchiveError, OSError, EOFError):
                return False
    if len(head) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


# ---- wildcards and content checksums --------------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match for one path component: * ? [...] and \\ escapes."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise OpError(f"syntax error in pattern: {pattern}")
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def resolve_wildcards(root: Path, pattern: str, follow: bool) -> list[str]:
    """The paths of the tree matching `pattern` component by component, sorted."""
    parts = [p for p in pattern.split("/") if p]
    found = ["/"]
    for part in parts:
        matcher = _glob_regex(part) if _WILDCARD.search(part) else None
        next_found = []
        for base in found:
            directory = _in_root(root, base)
            if matcher is None:
                candidate = posixpath.join(base, part.replace("\\", ""))
                if os.path.lexists(_in_root(root, candidate, follow_last=False)):
                    next_found.append(candidate)
                continue
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            next_found += [posixpath.join(base, n) for n in names if matcher.fullmatch(n)]
        found = next_found
    return found


def _checksum_paths(root: Path, path: str, wildcard: bool, follow: bool) -> str:
    """The digest of what a copy of `path` reads; raises BuildKit's not-found message if nothing."""
    src = posixpath.normpath("/" + path)
    if wildcard and _WILDCARD.search(src):
        matches = resolve_wildcards(root, src, follow)
    else:
        matches = [src]
        if not os.path.lexists(_in_root(root, src, follow_last=follow)):
            raise OpError(f'failed to compute cache key: "{src}" not found: not found')
    h = hashlib.sha256()
    for match in matches:
        top = _in_root(root, match, follow_last=follow)
        h.update(match.encode() + b"\0")
        for rel, st in _walk(top):
            h.update(_header_bytes(rel, st, top / rel if rel else top))
    return "sha256:" + h.hexdigest()


def _walk(top: Path) -> Iterator[tuple[str, os.stat_result]]:
    st = os.lstat(top)
    yield "", st
    if stat.S_ISDIR(st.st_mode):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                yield os.path.relpath(full, top), os.lstat(full)


def _header_bytes(rel: str, st: os.stat_result, path: Path) -> bytes:
    fields = [rel, oct(st.st_mode), str(st.st_uid), str(st.st_gid)]
    if stat.S_ISLNK(st.st_mode):
        fields.append(os.readlink(path))
    elif stat.S_ISREG(st.st_mode):
        fields.append(_file_sha256(path))
    return "\0".join(fields).encode() + b"\n"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
