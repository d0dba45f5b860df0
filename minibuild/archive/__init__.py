"""Archives: compression sniffing and safe tar extraction (moby pkg/archive, pkg/symlink), within the
limits against tar bombs (minibuild.archive.limits).

Layer diffs (minibuild.archive.changes) live beside them.
"""

from minibuild.archive.archive import (
    WHITEOUT_META_PREFIX,
    WHITEOUT_OPAQUE_DIR,
    WHITEOUT_PREFIX,
    apply_layer,
    follow_symlink_in_scope,
    overlay_opaque_xattr,
    running_in_user_ns,
    untar,
)
from minibuild.archive.compression import decompress_stream, detect_compression
from minibuild.archive.errors import ArchiveError
from minibuild.archive.limits import ArchiveLimits, apply_limits, current_limits, release_limits

__all__ = [
    "WHITEOUT_META_PREFIX",
    "WHITEOUT_OPAQUE_DIR",
    "WHITEOUT_PREFIX",
    "ArchiveError",
    "ArchiveLimits",
    "apply_layer",
    "apply_limits",
    "current_limits",
    "decompress_stream",
    "detect_compression",
    "follow_symlink_in_scope",
    "overlay_opaque_xattr",
    "release_limits",
    "running_in_user_ns",
    "untar",
]
