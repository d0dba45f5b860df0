"""The build cache: results of vertices, kept under the data root across daemon restarts
(buildkit cache/manager.go, cache/refs.go, solver/cachemanager.go, identity/randomid.go).

A result (`Ref`, BuildKit's ImmutableRef) is a stack of layers in the builder's own layer store — a
RUN or COPY adds one layer on top of its input's stack, or none when it changed nothing — or, for the
build context, a plain directory. A `CacheRecord` maps a cache key to a result:

    <data root>/buildkit/cache/layers/       the layer store (layer tars by chain ID)
    <data root>/buildkit/cache/contexts/     unpacked build contexts and downloads, by content
    <data root>/buildkit/cache/cachemounts/  the directories of RUN --mount=type=cache
    <data root>/buildkit/cache/records/      one JSON file per record, written atomically

Every record holds a reference on its top layer, so layers live as long as some record (or running
job) needs them; on start-up records whose layers are gone are dropped, then layers no record claims
(a crash between writing a layer and its record) are swept. Records used by a running job are "in
use" and survive a prune. A job's new records are written when it closes (each file replaced whole,
one directory sync per job, off the critical path of its steps).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minibuild.builder.next.llb import Vertex
from minibuild.ioutils import fsync_dir, temp_name
from minibuild.layer import Layer, LayerDoesNotExist, LayerStore
from minibuild.layer.writer import LayerWriter

RECORD_REGULAR = "regular"
RECORD_SOURCE_LOCAL = "source.local"
RECORD_INTERNAL = "internal"
RECORD_FRONTEND = "frontend"
RECORD_CACHE_MOUNT = "exec.cachemount"
_ID = re.compile(r"[0-9a-z]{25}")
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id() -> str:
    """identity.NewID: 128 random bits in base 36, 25 characters."""
    n = int.from_bytes(secrets.token_bytes(16), "big")
    out = []
    for _ in range(25):
        n, digit = divmod(n, 36)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


@dataclass(frozen=True)
class Ref:
    """A vertex's result: a stack of layers (bottom first; empty is scratch) or a directory."""

    chain: tuple[Layer, ...] = ()
    path: Path | None = None
    created_at: float = 0.0

    @property
    def chain_id(self) -> str | None:
        return self.chain[-1].chain_id if self.chain else None


@dataclass
class CacheRecord:
    """One cached result (a UsageRecord when reported)."""

    id: str
    key: str
    description: str
    record_type: str = RECORD_REGULAR
    chain_id: str | None = None
    path: str | None = None  # a directory result, relative to the cache root
    size: int = 0
    created_at: float = 0.0
    last_used_at: float = 0.0
    usage_count: int = 0
    parents: list[str] = field(default_factory=list)


@dataclass
class PruneReport:
    caches_deleted: list[str]
    space_reclaimed: int


class CacheManager:
    """Cache records and the layers they hold; safe to use from several threads."""

    def __init__(self, root: Path, *, on_layer_removed: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.on_layer_removed = on_layer_removed  # e.g. a snapshotter's remove_layer
        self.records_dir = self.root / "records"
        self.contexts_dir = self.root / "contexts"
        self.cache_mounts_dir = self.root / "cachemounts"
        self.tmp_dir = self.root / "tmp"
        for directory in (self.records_dir, self.contexts_dir, self.cache_mounts_dir):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # a dead daemon's half-made files
        self.tmp_dir.mkdir()
        self.layers = LayerStore(self.root / "layers")
        self._lock = threading.RLock()
        self._records: dict[str, CacheRecord] = {}  # by key
        self._in_use: dict[str, int] = {}  # record id -> jobs using it
        self._dirty: set[str] = set()  # keys whose usage changed since the last flush
        self._retired: dict[str, CacheRecord] = {}  # replaced while in use: deleted when released
        self._restore()

    # -- start-up ----------------------------------------------------------------------------------

    def _restore(self) -> None:
        for entry in sorted(self.records_dir.iterdir()):
            record = self._read_record(entry)
            if record is None:
                entry.unlink(missing_ok=True)
                continue
            if record.chain_id is not None:
                try:
                    self.layers.acquire(record.chain_id)
                except LayerDoesNotExist:
                    entry.unlink(missing_ok=True)
                    continue
            if record.path is not None and not (self.root / record.path).is_dir():
                entry.unlink(missing_ok=True)
                continue
            older = self._records.get(record.key)
            if older is not None:  # two records of one key (a crash between replacing and deleting)
                stale, record = sorted((older, record), key=lambda r: r.created_at)
                self._forget(stale)
            self._records[record.key] = record
        self._removed(self.layers.sweep_unreferenced())
        claimed = {r.path for r in self._records.values() if r.path}
        for leftover in [*self.contexts_dir.iterdir(), *self.cache_mounts_dir.iterdir()]:
            if str(leftover.relative_to(self.root)) not in claimed:
                shutil.rmtree(leftover, ignore_errors=True)

    def _read_record(self, path: Path) -> CacheRecord | None:
        if not (path.suffix == ".json" and _ID.fullmatch(path.stem)):
            return None
        try:
            data = json.loads(path.read_text())
            record = CacheRecord(**data)
        except (OSError, ValueError, TypeError):
            return None
        return record if record.id == path.stem else None

    # -- lookups (a job goes through a JobCache) -----------------------------------------------------

    def job_cache(self) -> JobCache:
        """The solver's CacheStore for one job: what it loads or makes stays alive until close()."""
        return JobCache(self)

    def record(self, key: str) -> CacheRecord | None:
        with self._lock:
            return self._records.get(key)

    def _load(self, key: str, lease: JobCache) -> Ref | None:
        with self._lock:
            record = self._records.get(key)
            if record is None:
                return None
            try:
                chain = tuple(self.layers.chain(record.chain_id)) if record.chain_id else ()
            except LayerDoesNotExist:
                return None
            if record.chain_id is not None:
                lease.layers.append(self.layers.acquire(record.chain_id).chain_id)
            record.last_used_at = time.time()
            record.usage_count += 1
            self._dirty.add(key)
            self._hold(record, lease)
            path = self.root / record.path if record.path else None
            return Ref(chain, path, record.created_at)

    def _save(self, key: str, vertex: Vertex, result: Ref, lease: JobCache) -> None:
        path = None
        if result.path is not None:
            if not result.path.is_relative_to(self.contexts_dir):
                return  # a directory we do not own (a request body): not a result to keep
            path = str(result.path.relative_to(self.root))
        with self._lock:
            old = self._records.get(key)
            if old is not None and old.chain_id == result.chain_id and old.path == path:
                return
            size = 0
            if result.chain and not any(r.chain_id == result.chain_id for r in self._records.values()):
                size = result.chain[-1].size  # the record that brought a layer counts its bytes
            if path is not None:
                size = _tree_size(self.root / path)
            now = time.time()
            record = CacheRecord(
                id=new_id(),
                key=key,
                description=vertex.name or vertex.kind,
                record_type=RECORD_SOURCE_LOCAL if path else RECORD_REGULAR,
                chain_id=result.chain_id,
                path=path,
                size=size,
                created_at=result.created_at or now,
                last_used_at=now,
                usage_count=1,
                parents=[layer.parent for layer in result.chain[-1:] if layer.parent],
            )
            if record.chain_id is not None:
                self.layers.acquire(record.chain_id)
            # Written when the job closes, off the build's critical path: a daemon killed before then
            # loses the record, and the restart sweeps the layer only it would have held.
            self._dirty.add(key)
            self._records[key] = record
            if old is not None:  # a no-cache build replaced it: gone now, or once no job uses it
                if old.id in self._in_use:
                    self._retired[old.id] = old
                else:
                    self._delete(old)
            self._hold(record, lease)

    def _cache_mount(self, cache_id: str, mode: int, uid: int, gid: int, lease: JobCache) -> tuple[Path, str]:
        """The directory of RUN --mount=type=cache,id=…: made on first use (with `mode` and owner),
        kept across builds as an `exec.cachemount` record, in use while the job runs."""
        key = "cachemount:" + cache_id
        with self._lock:
            record = self._records.get(key)
            if record is None:
                name = hashlib.sha256(cache_id.encode()).hexdigest()[:32]
                directory = self.cache_mounts_dir / name
                staging = self.staging_dir("cachemount-")
                staging.mkdir(mode)
                os.chmod(staging, mode)
                if os.geteuid() == 0:
                    os.chown(staging, uid, gid)
                self.install_dir(staging, directory)
                now = time.time()
                record = CacheRecord(new_id(), key, f"cached mount {cache_id}", RECORD_CACHE_MOUNT,
                                     path=str(directory.relative_to(self.root)), created_at=now,
                                     last_used_at=now)  # fmt: skip
                self._records[key] = record
                self._write(record)
            record.last_used_at = time.time()
            record.usage_count += 1
            self._dirty.add(key)
            self._hold(record, lease)
            return self.root / record.path, record.id  # type: ignore[operator]

    def _hold(self, record: CacheRecord, lease: JobCache) -> None:
        self._in_use[record.id] = self._in_use.get(record.id, 0) + 1
        lease.records.append(record.id)

    def _release(self, lease: JobCache) -> None:
        with self._lock:
            for record_id in lease.records:
                count = self._in_use.get(record_id, 0) - 1
                if count > 0:
                    self._in_use[record_id] = count
                else:
                    self._in_use.pop(record_id, None)
                    if record_id in self._retired:
                        self._delete(self._retired.pop(record_id))
            for chain_id in lease.layers:
                self._removed(self.layers.release(chain_id))
            lease.records.clear()
            lease.layers.clear()
            self.flush()

    def flush(self) -> None:
        """Write the records made or used since the last flush, then sync their directory once.

        A record is only cache: one that a crash loses, or leaves empty, is dropped at start-up (and the
        layers only it held are swept). So each file is renamed into place whole but not synced on its
        own: one directory sync per job instead of two syncs per record (the layers it names were
        synced when they were made).
        """
        with self._lock:
            written = False
            for key in self._dirty:
                if (record := self._records.get(key)) is not None:
                    self._write(record)
                    written = True
            self._dirty.clear()
            if written:
                fsync_dir(self.records_dir)

    # -- layers and directories --------------------------------------------------------------------

    def register_layer(self, tar: Path, parent: Layer | None, lease: JobCache) -> Layer:
        """Add a diff tar on top of `parent`; the job holds it until it closes (a record then keeps it)."""
        layer = self.layers.register(tar, parent.chain_id if parent is not None else None)
        lease.layers.append(layer.chain_id)
        return layer

    def _removed(self, layers: list[Layer]) -> None:
        """Layers the store deleted: their unpacked trees go too."""
        if self.on_layer_removed is not None:
            for layer in layers:
                self.on_layer_removed(layer.chain_id)

    def context_dir(self, key: str) -> Path:
        """Where the context with content key `key` lives once unpacked."""
        return self.contexts_dir / key.removeprefix("sha256:")

    def staging_dir(self, hint: str) -> Path:
        return temp_name(self.tmp_dir, hint)

    def install_dir(self, staging: Path, final: Path) -> None:
        """Move a finished directory into place (another job may have got there first)."""
        try:
            os.rename(staging, final)
            fsync_dir(final.parent)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not final.is_dir():
                raise

    # -- usage and pruning -------------------------------------------------------------------------

    def disk_usage(self) -> list[dict[str, Any]]:
        """Every record, as BuildKit's UsageRecord fields."""
        with self._lock:
            return [
                {**asdict(r), "in_use": r.id in self._in_use, "shared": False}
                for r in sorted(self._records.values(), key=lambda r: r.created_at)
            ]

    def prune(
        self,
        *,
        all: bool = False,
        keep_storage: int = 0,
        keep_duration: float = 0.0,
        filters: dict[str, str | None] | None = None,
    ) -> PruneReport:
        """Delete records not in use that match: `filters` (id, type, description, parent, inuse,
        shared, private), older than `keep_duration` seconds of disuse; least recently used first,
        until at most `keep_storage` bytes remain (0: no limit). Internal and frontend records only
        with `all`. Returns the deleted record IDs and the bytes actually freed."""
        filters = filters or {}
        with self._lock:
            now = time.time()
            candidates = []
            for record in sorted(self._records.values(), key=lambda r: r.last_used_at):
                in_use = record.id in self._in_use
                if in_use or not _matches(record, filters, in_use):
                    continue
                if not all and record.record_type in (RECORD_INTERNAL, RECORD_FRONTEND):
                    continue
                if keep_duration and record.last_used_at > now - keep_duration:
                    continue
                candidates.append(record)
            total = sum(r.size for r in self._records.values())
            deleted: list[str] = []
            freed = 0
            for record in candidates:
                if keep_storage and total <= keep_storage:
                    break
                total -= record.size
                del self._records[record.key]
                freed += self._delete(record)
                deleted.append(record.id)
            return PruneReport(deleted, freed)

    def _delete(self, record: CacheRecord) -> int:
        """Remove a record and whatever only it held; the bytes freed."""
        (self.records_dir / f"{record.id}.json").unlink(missing_ok=True)
        freed = 0
        if record.chain_id is not None:
            gone = self.layers.release(record.chain_id)
            self._removed(gone)
            freed += sum(layer.size for layer in gone)
        if record.path is not None and not any(r.path == record.path for r in self._records.values()):
            directory = self.root / record.path
            freed += _tree_size(directory)
            shutil.rmtree(directory, ignore_errors=True)
        return freed

    def _forget(self, record: CacheRecord) -> None:
        """Drop a record found at start-up that another of the same key replaces."""
        (self.records_dir / f"{record.id}.json").unlink(missing_ok=True)
        if record.chain_id is not None:
            self.layers.release(record.chain_id)

    def _write(self, record: CacheRecord) -> None:
        """A record's file, replaced whole (a reader sees the old one or the new one, never a part)."""
        path = self.records_dir / f"{record.id}.json"
        tmp = temp_name(self.records_dir, path.name + "-")  # not a record's name: dropped at start-up
        try:
            tmp.write_bytes(json.dumps(asdict(record)).encode())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _matches(record: CacheRecord, filters: dict[str, str | None], in_use: bool) -> bool:
    for key, value in filters.items():
        if value is None:
            continue
        if key == "id" and record.id != value:
            return False
        if key == "type" and record.record_type != value:
            return False
        if key == "description" and value not in record.description:
            return False
        if key == "parent" and value not in record.parents:
            return False
        if key == "inuse" and (value.lower() == "true") != in_use:
            return False
        if key == "shared" and value.lower() == "true":
            return False  # no record shares its data with the image store
        # `private` matches everything (records are never shared); `until`/`unused-for` are durations
        # handled by the caller.
    return True


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_size
    return total


class JobCache:
    """The cache as one job sees it (the solver's CacheStore): loads and saves leased to the job."""

    def __init__(self, manager: CacheManager) -> None:
        self.manager = manager
        self.records: list[str] = []
        self.layers: list[str] = []

    def load(self, key: str, vertex: Vertex) -> Ref | None:
        return self.manager._load(key, self)

    def save(self, key: str, vertex: Vertex, result: Any) -> None:
        if isinstance(result, Ref):
            self.manager._save(key, vertex, result, self)

    def register_layer(self, tar: Path, parent: Layer | None) -> Layer:
        return self.manager.register_layer(tar, parent, self)

    def layer_writer(self, parent: Layer | None) -> LayerWriter:
        """Where a step writes its diff on top of `parent` (a layer this job holds): the layer store."""
        return self.manager.layers.writer(parent.chain_id if parent is not None else None)

    def commit_layer(self, writer: LayerWriter) -> Layer:
        """Publish a written diff as a layer, held by the job until it closes (a record then keeps it)."""
        layer = writer.commit()
        self.layers.append(layer.chain_id)
        return layer

    def cache_mount(
        self, cache_id: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0
    ) -> tuple[Path, str]:
        """A cache mount's directory and record ID, in use until this job closes."""
        return self.manager._cache_mount(cache_id, mode, uid, gid, self)

    def close(self) -> None:
        """Give back every lease; records used are written with their new usage."""
        self.manager._release(self)
