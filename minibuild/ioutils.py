"""Crash-safe file writes (moby pkg/ioutils/fswriters.go AtomicWriteFile).

Every store file is written to a temporary name in the same directory, fsynced, renamed over its
final name, and the directory fsynced, so a daemon killed at any moment leaves either the old file or
the new one, never half of either. Temporary names start with TEMP_PREFIX so stores can sweep them.
"""

import os
import secrets
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def temp_name(directory: Path, hint: str = "") -> Path:
    """A fresh temporary path in `directory` (same filesystem as the final name, so rename is atomic)."""
    return Path(directory) / f"{TEMP_PREFIX}{hint}{secrets.token_hex(8)}"


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically and durably."""
    path = Path(path)
    tmp = temp_name(path.parent, path.name + "-")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
