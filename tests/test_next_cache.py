"""The build cache on disk: records survive restarts and crashes; prune frees what only they held."""

import io
import os
import re
import tarfile
import time

from minibuild.builder.next import llb
from minibuild.builder.next.cache import CacheManager, Ref, new_id


def layer_tar(tmp_path, name: str, data: bytes) -> object:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    path = tmp_path / f"{name}.tar"
    path.write_bytes(buf.getvalue())
    return path


def vertex(name: str) -> llb.Vertex:
    return llb.Vertex({"type": "sim", "name": name}, (), name=name)


def save_chain(manager: CacheManager, tmp_path, key: str, files: list[tuple[str, bytes]]) -> Ref:
    job = manager.job_cache()
    parent = None
    chain = []
    for name, data in files:
        parent = job.register_layer(layer_tar(tmp_path, name, data), parent)
        chain.append(parent)
    ref = Ref(tuple(chain), None, 1000.0)
    job.save(key, vertex(key), ref)
    job.close()
    return ref


def test_new_ids_are_25_lowercase_base36():
    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[0-9a-z]{25}", i) for i in ids)


def test_records_survive_a_restart(tmp_path):
    root = tmp_path / "cache"
    manager = CacheManager(root)
    ref = save_chain(manager, tmp_path, "k1", [("a", b"1"), ("b", b"22")])
    again = CacheManager(root)
    job = again.job_cache()
    loaded = job.load("k1", vertex("k1"))
    assert loaded is not None and [layer.chain_id for layer in loaded.chain] == [
        layer.chain_id for layer in ref.chain
    ]
    assert loaded.created_at == 1000.0
    assert job.load("nope", vertex("nope")) is None
    job.close()
    record = again.record("k1")
    assert record.usage_count == 2 and record.description == "k1" and record.size == 2


def test_a_crash_leaves_nothing_unclaimed(tmp_path):
    root = tmp_path / "cache"
    manager = CacheManager(root)
    save_chain(manager, tmp_path, "kept", [("a", b"1")])
    # A layer registered by a build killed before it wrote its record, a half-written temp file,
    # a record whose layer is gone, and junk.
    manager.layers.register(layer_tar(tmp_path, "orphan", b"x" * 10))
    (root / "records" / ".tmp-half").write_text("{")
    (root / "records" / (new_id() + ".json")).write_text(
        '{"id": "x", "key": "k", "description": "", "chain_id": "sha256:' + "0" * 64 + '"}'
    )
    (root / "tmp" / "leftover").write_text("x")
    (root / "contexts" / "unclaimed").mkdir()
    again = CacheManager(root)
    assert [layer.size for layer in again.layers.layers()] == [1]
    assert [p.name for p in (root / "records").iterdir()] == [again.record("kept").id + ".json"]
    assert list((root / "tmp").iterdir()) == [] and list((root / "contexts").iterdir()) == []


def test_records_written_unsynced_and_lost_to_a_crash_only_lose_cache(tmp_path):
    """Record files are renamed into place whole but not fsynced one by one: what a power loss can
    leave (an empty or truncated record) is dropped at start-up, with the layers only it held."""
    root = tmp_path / "cache"
    manager = CacheManager(root)
    save_chain(manager, tmp_path, "kept", [("a", b"1")])
    save_chain(manager, tmp_path, "emptied", [("b", b"22")])
    save_chain(manager, tmp_path, "torn", [("c", b"333")])
    records = root / "records"
    (records / f"{manager.record('emptied').id}.json").write_bytes(b"")
    torn = records / f"{manager.record('torn').id}.json"
    torn.write_bytes(torn.read_bytes()[:20])
    again = CacheManager(root)
    assert again.record("kept") is not None
    assert again.record("emptied") is None and again.record("torn") is None
    assert [layer.size for layer in again.layers.layers()] == [1]  # the others' layers were swept
    assert sorted(p.name for p in records.iterdir()) == [again.record("kept").id + ".json"]


def test_a_job_closing_syncs_the_records_directory_once(tmp_path, monkeypatch):
    manager = CacheManager(tmp_path / "cache")
    job = manager.job_cache()
    parent = None
    for i in range(5):
        parent = job.register_layer(layer_tar(tmp_path, f"f{i}", b"x"), parent)
        job.save(f"k{i}", vertex(f"k{i}"), Ref((parent,), None, 1.0))
    syncs = []
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd))
    job.close()
    assert len(syncs) == 1 and len(list((tmp_path / "cache" / "records").iterdir())) == 5


def test_prune_reports_ids_and_bytes_freed(tmp_path):
    manager = CacheManager(tmp_path / "cache")
    save_chain(manager, tmp_path, "base", [("a", b"1" * 10)])
    base = manager.record("base")
    job = manager.job_cache()
    top = job.register_layer(layer_tar(tmp_path, "b", b"2" * 100), manager.layers.get(base.chain_id))
    job.save("top", vertex("top"), Ref((manager.layers.get(base.chain_id), top), None, 1.0))
    job.close()
    assert manager.prune(filters={"id": "nothing"}).caches_deleted == []
    report = manager.prune(filters={"id": manager.record("top").id})
    assert len(report.caches_deleted) == 1 and report.space_reclaimed == 100
    report = manager.prune()
    assert report.caches_deleted == [base.id] and report.space_reclaimed == 10
    assert manager.layers.layers() == []
    assert manager.prune().caches_deleted == []


def test_prune_keeps_records_in_use_recent_ones_and_storage(tmp_path):
    manager = CacheManager(tmp_path / "cache")
    for i in range(3):
        save_chain(manager, tmp_path, f"k{i}", [(f"f{i}", b"x" * 10)])
    job = manager.job_cache()
    assert job.load("k0", vertex("k0")) is not None  # in use until the job closes
    assert manager.prune(keep_duration=3600).caches_deleted == []  # all used just now
    report = manager.prune(keep_storage=20)  # 30 bytes held: one record goes; k0 is in use
    assert len(report.caches_deleted) == 1
    assert manager.record("k0") is not None
    assert manager.prune(filters={"type": "source.local"}).caches_deleted == []
    job.close()
    assert len(manager.prune(filters={"description": "k"}).caches_deleted) == 2


def test_usage_is_written_when_a_job_closes(tmp_path):
    root = tmp_path / "cache"
    manager = CacheManager(root)
    save_chain(manager, tmp_path, "k", [("a", b"1")])
    before = manager.record("k").last_used_at
    time.sleep(0.01)
    job = manager.job_cache()
    job.load("k", vertex("k"))
    job.close()
    assert CacheManager(root).record("k").last_used_at > before


def test_a_record_replaced_while_in_use_goes_when_released(tmp_path):
    root = tmp_path / "cache"
    manager = CacheManager(root)
    save_chain(manager, tmp_path, "k", [("old", b"1")])
    reader = manager.job_cache()
    old = reader.load("k", vertex("k"))
    save_chain(manager, tmp_path, "k", [("new", b"22")])  # a --no-cache build made it again
    assert manager.record("k").size == 2
    assert manager.layers.get(old.chain_id) is not None  # still used by the reader
    reader.close()
    assert old.chain_id not in manager.layers
    assert len(list((root / "records").iterdir())) == 1


def test_two_records_of_one_key_at_start_keep_the_newest(tmp_path):
    root = tmp_path / "cache"
    manager = CacheManager(root)
    save_chain(manager, tmp_path, "k", [("a", b"1")])
    first = manager.record("k")
    copy = dict(vars(first), id=new_id(), created_at=first.created_at + 1)
    (root / "records" / f"{copy['id']}.json").write_text(__import__("json").dumps(copy))
    again = CacheManager(root)
    assert again.record("k").id == copy["id"]
    assert len(list((root / "records").iterdir())) == 1
    assert again.layers.references(first.chain_id) == 1  # one record holds it, not two
