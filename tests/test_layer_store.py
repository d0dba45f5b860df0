"""Layer store: diff IDs, chain IDs, sharing, reference counts, crash leftovers."""

import gzip
import hashlib
import io
import os
import tarfile
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.archive import ArchiveError
from minibuild.layer import LayerDoesNotExist, LayerError, LayerStore, chain_id_of
from minibuild.layer import store as layer_store
from minibuild.layer import writer as layer_writer

EMPTY_TAR_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(**files: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def leftovers(store: LayerStore) -> list[str]:
    return sorted(os.listdir(store.root / "tmp"))


@pytest.fixture
def store(tmp_path):
    return LayerStore(tmp_path / "layers")


def test_diff_id_is_the_sha256_of_the_tar(store):
    data = make_tar(a=b"hello")
    layer = store.register(io.BytesIO(data))
    assert layer.diff_id == sha(data)
    assert layer.chain_id == layer.diff_id and layer.parent is None
    assert layer.size == 5
    with layer.open() as f:
        assert f.read() == data


def test_empty_layer_has_dockers_well_known_diff_id(store):
    assert store.register(io.BytesIO(bytes(1024))).diff_id == EMPTY_TAR_DIFF_ID


def test_chain_ids_as_docker_computes_them(store):
    base_tar, top_tar = make_tar(a=b"1"), make_tar(b=b"2")
    base = store.register(io.BytesIO(base_tar))
    top = store.register(io.BytesIO(top_tar), base.chain_id)
    expected = sha(f"{sha(base_tar)} {sha(top_tar)}".encode())
    assert top.chain_id == expected
    assert top.parent == base.chain_id
    assert chain_id_of([base.diff_id, top.diff_id]) == expected
    assert chain_id_of([base.diff_id]) == base.diff_id
    assert chain_id_of([]) is None
    assert store.chain_id_of([base.diff_id, top.diff_id]) == expected
    assert [layer.chain_id for layer in store.chain(top.chain_id)] == [base.chain_id, top.chain_id]


@settings(deadline=None)  # a loaded machine must not fail it
@given(st.lists(st.binary(min_size=1, max_size=8).map(sha), min_size=1, max_size=6))
def test_chain_id_folds_left(diff_ids):
    expected = diff_ids[0]
    for diff_id in diff_ids[1:]:
        expected = sha(f"{expected} {diff_id}".encode())
    assert chain_id_of(diff_ids) == expected


def test_compressed_input_is_stored_decompressed(store, tmp_path):
    data = make_tar(a=b"x" * 1000)
    layer = store.register(io.BytesIO(gzip.compress(data)))
    assert layer.diff_id == sha(data)
    path = tmp_path / "layer.tar"
    path.write_bytes(data)
    assert store.register(path).chain_id == layer.chain_id  # a path works too


def test_shared_layer_is_stored_once_and_counted(store):
    data = make_tar(a=b"1")
    first = store.register(io.BytesIO(data))
    second = store.register(io.BytesIO(data))
    assert first == second
    assert len(os.listdir(store.root / "sha256")) == 1
    assert store.references(first.chain_id) == 2
    assert store.release(first.chain_id) == []
    assert first.chain_id in store
    assert store.release(first.chain_id) == [first]
    assert first.chain_id not in store and os.listdir(store.root / "sha256") == []


def test_child_keeps_its_parent(store):
    base = store.register(io.BytesIO(make_tar(a=b"1")))
    top = store.register(io.BytesIO(make_tar(b=b"2")), base.chain_id)
    assert store.release(base.chain_id) == []  # the child still needs it
    assert base.chain_id in store
    assert store.release(top.chain_id) == [top, base]
    assert store.layers() == []


def test_release_of_an_unheld_layer_is_an_error(store):
    layer = store.register(io.BytesIO(make_tar(a=b"1")))
    store.release(layer.chain_id)
    with pytest.raises(LayerDoesNotExist, match="layer does not exist"):
        store.release(layer.chain_id)
    base = store.register(io.BytesIO(make_tar(a=b"1")))
    store.register(io.BytesIO(make_tar(b=b"2")), base.chain_id)
    store.release(base.chain_id)
    with pytest.raises(LayerError, match="not retained"):
        store.release(base.chain_id)


def test_unknown_parent(store):
    with pytest.raises(LayerDoesNotExist):
        store.register(io.BytesIO(make_tar(a=b"1")), "sha256:" + "0" * 64)


@pytest.mark.parametrize("data", [b"garbage", b"x" * 1024, make_tar(a=b"123456" * 100)[:700]])
def test_malformed_tar_is_refused_and_leaves_nothing(store, data):
    with pytest.raises(ArchiveError):
        store.register(io.BytesIO(data))
    assert store.layers() == [] and leftovers(store) == []
    assert os.listdir(store.root / "sha256") == []


def test_reopen_restores_and_sweeps(tmp_path):
    root = tmp_path / "layers"
    store = LayerStore(root)
    base = store.register(io.BytesIO(make_tar(a=b"1")))
    kept = store.register(io.BytesIO(make_tar(b=b"2")), base.chain_id)
    orphan = store.register(io.BytesIO(make_tar(c=b"3")))
    again = LayerStore(root)
    assert {layer.chain_id for layer in again.layers()} == {base.chain_id, kept.chain_id, orphan.chain_id}
    assert again.get(kept.chain_id) == kept
    again.acquire(kept.chain_id)  # what the image store does for each image
    assert again.sweep_unreferenced() == [orphan]
    assert {layer.chain_id for layer in again.layers()} == {base.chain_id, kept.chain_id}


def test_crash_before_commit_leaves_no_layer(tmp_path, monkeypatch):
    root = tmp_path / "layers"
    store = LayerStore(root)
    real_rename = os.rename

    def crash(src, dst):
        if "sha256" in str(dst):
            raise KeyboardInterrupt("killed")  # the daemon dies between staging and commit
        return real_rename(src, dst)

    monkeypatch.setattr(layer_store.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        store.register(io.BytesIO(make_tar(a=b"1")))
    monkeypatch.undo()
    (root / "tmp" / "staged-by-a-killed-daemon").mkdir()  # as if the cleanup never ran
    again = LayerStore(root)
    assert again.layers() == [] and leftovers(again) == []


def test_incomplete_or_foreign_records_are_dropped_on_open(tmp_path):
    root = tmp_path / "layers"
    store = LayerStore(root)
    base = store.register(io.BytesIO(make_tar(a=b"1")))
    top = store.register(io.BytesIO(make_tar(b=b"2")), base.chain_id)
    other = store.register(io.BytesIO(make_tar(c=b"3")))
    (base.path / "layer.tar").unlink()  # base broken: its child must go too
    (root / "sha256" / "not-a-layer").mkdir()
    (root / "sha256" / ("f" * 64)).mkdir()
    again = LayerStore(root)
    assert [layer.chain_id for layer in again.layers()] == [other.chain_id]
    assert sorted(os.listdir(root / "sha256")) == [other.chain_id[7:]]
    assert top.chain_id not in again


def test_concurrent_registration_of_the_same_diff(store):
    data = make_tar(a=os.urandom(200_000))
    results = []

    def register():
        results.append(store.register(io.BytesIO(data)))

    threads = [threading.Thread(target=register) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({layer.chain_id for layer in results}) == 1
    assert store.references(results[0].chain_id) == 6
    assert leftovers(store) == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=8), st.randoms())
def test_a_held_layer_is_never_deleted(tmp_path_factory, stack_picks, rnd):
    """Register random stacks over shared bases, release in random order: held layers always remain."""
    store = LayerStore(tmp_path_factory.mktemp("prop"))
    held = []
    for pick in stack_picks:
        parent = None
        for depth in range(pick + 1):
            layer = store.register(io.BytesIO(make_tar(**{f"f{depth}": bytes([depth])})), parent)
            if parent is not None:
                store.release(parent)  # keep only the top of each stack
            parent = layer.chain_id
        held.append(parent)
    rnd.shuffle(held)
    while held:
        store.release(held.pop())
        for chain_id in held:
            assert all(layer.chain_id in store for layer in store.chain(chain_id))
    assert store.layers() == []


# --- LayerWriter: a diff written straight into the store ----------------------------------------------


def write_in_pieces(writer, data: bytes, cuts: list[int]) -> None:
    start = 0
    for cut in sorted(cuts) + [len(data)]:
        writer.write(data[start:cut])
        start = max(start, cut)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 6 << 20), max_size=12), st.integers(1, 6 << 20))
def test_writer_stores_what_register_stores(tmp_path_factory, cuts, flush_behind):
    """Any way of cutting the writes (tiny ones gathered, big ones passed on, hashing moved to a
    thread past a few MB, flushes behind the writer) gives register's layer, byte for byte."""
    data = make_tar(small=b"x" * 100, big=bytes(range(256)) * (5 << 12), empty=b"")
    store = LayerStore(tmp_path_factory.mktemp("w") / "layers")
    expected = store.register(io.BytesIO(data))
    store.release(expected.chain_id)  # deleted: the writer must make it again
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(layer_writer, "FLUSH_BEHIND", flush_behind)
        with store.writer() as writer:
            write_in_pieces(writer, data, cuts)
            assert writer.written == len(data) and writer.diff_id == sha(data)
            layer = writer.commit()
    assert (layer.diff_id, layer.chain_id, layer.size) == (expected.diff_id, expected.chain_id, expected.size)
    assert layer.tar_path.read_bytes() == data
    assert leftovers(store) == []


def test_writer_flushes_behind_and_fsyncs_the_final_file(store, monkeypatch):
    synced: list[str] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync
    monkeypatch.setattr(layer_writer, "FLUSH_BEHIND", 1 << 20)
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append("behind"), real_fdatasync(fd))[1])
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append("fsync"), real_fsync(fd))[1])
    with store.writer() as writer:
        writer.write(make_tar(a=os.urandom(8 << 20)))
        layer = writer.commit()
    assert "behind" in synced and "fsync" in synced  # the flushes never replace the final fsync
    assert layer.size == 8 << 20


def test_a_failed_flush_fails_the_commit_and_leaves_nothing(store, monkeypatch):
    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(layer_writer, "FLUSH_BEHIND", 1 << 20)
    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(OSError, match="Input/output error"), store.writer() as writer:
        writer.write(make_tar(a=os.urandom(4 << 20)))
        writer.commit()
    assert store.layers() == [] and leftovers(store) == []


@pytest.mark.parametrize("data", [b"garbage", b"x" * 1024, make_tar(a=b"123456" * 100)[:700]])
def test_writer_refuses_a_malformed_tar_at_commit(store, data):
    with pytest.raises(ArchiveError), store.writer() as writer:
        writer.write(data)
        writer.commit()
    assert store.layers() == [] and leftovers(store) == []


def test_writer_left_without_commit_leaves_nothing(store):
    with store.writer() as writer:
        writer.write(make_tar(a=os.urandom(5 << 20)))  # enough to start the hashing thread
    assert store.layers() == [] and leftovers(store) == []


def test_writer_on_a_parent_and_sharing(store):
    base = store.register(io.BytesIO(make_tar(a=b"1")))
    data = make_tar(b=b"2")
    first = store.register(io.BytesIO(data), base.chain_id)
    with store.writer(base.chain_id) as writer:
        writer.write(data)
        second = writer.commit()
    assert second == first and store.references(first.chain_id) == 2
    assert leftovers(store) == []
    with pytest.raises(LayerDoesNotExist):
        store.writer("sha256:" + "0" * 64)


@pytest.fixture
def small_limits():
    from minibuild.archive import ArchiveLimits, apply_limits, release_limits

    token = apply_limits(ArchiveLimits(max_size=1 << 16, max_entries=8))
    yield
    release_limits(token)


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({"big": bytes((1 << 16) + 1)}, "archive exceeds the size limit of 65536 bytes"),
        ({f"f{i}": b"" for i in range(9)}, "archive exceeds the limit of 8 entries"),
    ],
)
def test_register_holds_a_diff_to_the_archive_limits(store, small_limits, files, error):
    with pytest.raises(ArchiveError, match=error):
        store.register(io.BytesIO(make_tar(**files)))
    assert store.layers() == [] and leftovers(store) == []
    assert store.register(io.BytesIO(make_tar(big=bytes(1 << 16)))).size == 1 << 16  # at the limit: fine


def test_register_stops_a_decompression_bomb_before_it_is_written(store, small_limits, monkeypatch):
    bomb = gzip.compress(make_tar(big=bytes(64 << 20)))  # 64 MiB of zeros in ~64 KiB
    written = []
    real_write = layer_writer.LayerWriter.write
    monkeypatch.setattr(
        layer_writer.LayerWriter, "write", lambda self, d: written.append(len(d)) or real_write(self, d)
    )
    with pytest.raises(ArchiveError, match="more than any within the limits"):
        store.register(io.BytesIO(bomb))
    assert sum(written) < 2 << 20  # stopped at the cap, not after the whole stream
    assert store.layers() == [] and leftovers(store) == []


def test_own_diffs_are_not_held_to_the_limits(store, small_limits):
    with store.writer() as writer:  # a build step's diff: dockerd limits none, neither do we
        writer.write(make_tar(**{f"f{i}": bytes(1 << 14) for i in range(9)}))
        assert writer.commit().size == 9 << 14
