"""How much one archive may unpack to (no moby file: dockerd sets no such limit; minibuild's guard
against tar bombs).

A tar bomb is a small upload that expands to more data than the disk holds (a gzip of zeros) or to more
files than it has inodes (a million empty files). `untar` checks every archive it unpacks against the
limits in force when its caller gives none: build contexts, ADD of archives, `docker load` archives and
the layers unpacked for a step (imported, loaded or pulled) all pass through it. The limits are
process-wide: `minibuild daemon --max-archive-size SIZE --max-archive-entries N` sets them at start
(`apply_limits`) and gives them back when it stops (`release_limits`); without a daemon, the defaults
hold. A request body that carries an archive (a build context, a load, an import) is refused as soon
as it grows past what any archive within the limits could take (`max_body_size`), so an endless upload
cannot fill the disk before unpacking starts.
"""

import threading
from dataclasses import dataclass

DEFAULT_MAX_SIZE = 16 * 1024**3  # bytes of file content: far above any real context or layer
DEFAULT_MAX_ENTRIES = 1_000_000  # files, directories and links: a large distribution has ~100,000


@dataclass(frozen=True)
class ArchiveLimits:
    """The most one archive may unpack to; None is no limit."""

    max_size: int | None = DEFAULT_MAX_SIZE
    max_entries: int | None = DEFAULT_MAX_ENTRIES


_lock = threading.Lock()
_applied: list[tuple[object, ArchiveLimits]] = []  # the daemons running in this process, oldest first


def current_limits() -> ArchiveLimits:
    """The limits of the daemon started last among those still running, else the defaults."""
    with _lock:
        return _applied[-1][1] if _applied else ArchiveLimits()


def apply_limits(limits: ArchiveLimits) -> object:
    """Make `limits` the ones in force; return a token for `release_limits`."""
    token = object()
    with _lock:
        _applied.append((token, limits))
    return token


def release_limits(token: object) -> None:
    """Withdraw the limits applied with `token` (the daemon stopped); unknown tokens are ignored."""
    with _lock:
        _applied[:] = [entry for entry in _applied if entry[0] is not token]


def max_body_size(limits: ArchiveLimits) -> int | None:
    """The largest body that can carry an archive within `limits`, None if either is unlimited: the
    content, up to 2 KiB of headers and padding per entry (a PAX header included), 10 KiB of end
    blocks, and 1% for compression (gzip, bzip2 and xz expand incompressible data far less)."""
    if limits.max_size is None or limits.max_entries is None:
        return None
    return limits.max_size + limits.max_size // 100 + limits.max_entries * 2048 + 10240
