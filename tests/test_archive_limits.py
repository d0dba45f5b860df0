"""The limits against tar bombs (minibuild.archive.limits): what untar applies when its caller gives none."""

import gzip
import io
import tarfile

import pytest

from minibuild.archive import (
    ArchiveError,
    ArchiveLimits,
    apply_layer,
    apply_limits,
    current_limits,
    release_limits,
    untar,
)
from minibuild.archive.limits import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SIZE


def tar_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def limits():
    """Apply limits for one test; always given back."""
    tokens = []

    def apply(**kw) -> None:
        tokens.append(apply_limits(ArchiveLimits(**kw)))

    yield apply
    for token in tokens:
        release_limits(token)


def test_the_defaults_hold_without_a_daemon():
    assert current_limits() == ArchiveLimits(DEFAULT_MAX_SIZE, DEFAULT_MAX_ENTRIES)
    assert DEFAULT_MAX_SIZE == 16 * 1024**3


def test_an_entry_count_bomb_is_refused(tmp_path, limits):
    limits(max_entries=100)
    empty_files = tar_of({f"f{i:04d}": b"" for i in range(101)})
    with pytest.raises(ArchiveError, match="archive exceeds the limit of 100 entries"):
        untar(io.BytesIO(empty_files), tmp_path / "bomb")
    assert untar(io.BytesIO(tar_of({f"f{i:04d}": b"" for i in range(100)})), tmp_path / "ok") == 0


def test_a_gzip_bomb_is_refused_before_it_is_written(tmp_path, limits):
    limits(max_size=1 << 20)
    bomb = gzip.compress(tar_of({"zeros": bytes(8 << 20)}))  # 8 MiB of zeros in about 8 kB
    assert len(bomb) < 64 << 10
    with pytest.raises(ArchiveError, match=f"archive exceeds the size limit of {1 << 20} bytes"):
        untar(io.BytesIO(bomb), tmp_path / "bomb")
    assert not (tmp_path / "bomb" / "zeros").exists()  # refused from its header, before any byte


def test_layers_are_held_to_the_same_limits(tmp_path, limits):
    limits(max_size=10)
    with pytest.raises(ArchiveError, match="size limit of 10 bytes"):
        apply_layer(io.BytesIO(tar_of({"big": b"x" * 11})), tmp_path / "layer")


def test_a_callers_own_size_limit_wins(tmp_path, limits):
    limits(max_size=10)
    assert untar(io.BytesIO(tar_of({"f": b"x" * 100})), tmp_path / "d", size_limit=1000) == 100


def test_the_daemon_started_last_sets_them_until_it_stops():
    first = apply_limits(ArchiveLimits(max_size=1))
    second = apply_limits(ArchiveLimits(max_size=2))
    try:
        assert current_limits().max_size == 2
        release_limits(first)  # the first daemon stops: the second one's limits stay
        assert current_limits().max_size == 2
    finally:
        release_limits(second)
        release_limits(first)  # twice is harmless
    assert current_limits() == ArchiveLimits()


def test_none_is_no_limit(tmp_path, limits):
    limits(max_size=None, max_entries=None)
    assert untar(io.BytesIO(tar_of({f"f{i}": b"x" for i in range(50)})), tmp_path / "d") == 50
