"""The archive package's error (moby pkg/archive: errors surfaced by Untar/ApplyLayer)."""


class ArchiveError(Exception):
    """An archive that is malformed, truncated, unsafe or too large to extract."""
