"""What is known about layers on registries (moby distribution/metadata/v2_metadata_service.go).

A layer is stored uncompressed (its diff ID); a registry holds it compressed (a blob digest). Pull and
push remember the pairing, so a later push can ask a registry whether it already has the layer
(`Layer already exists`) without compressing it again:

    <root>/diffid-by-digest/sha256/<blob hex>        -> the diff ID
    <root>/v2metadata-by-diffid/sha256/<diff hex>    -> [{"Digest": …, "SourceRepository": …, "HMAC": ""}]

moby additionally keys entries by an HMAC of the credentials used; minibuild leaves HMAC empty (it does
not mount blobs across repositories, which is what the HMAC protects).
"""

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from minibuild.ioutils import atomic_write_file


@dataclass(frozen=True)
class V2Metadata:
    digest: str  # the blob digest on the registry
    source_repository: str  # full name, `127.0.0.1:5000/team/app`


def _hex(digest: str) -> str | None:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        return None
    return value


class V2MetadataService:
    """The two maps above, kept as small files (written atomically)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def _path(self, kind: str, digest: str) -> Path | None:
        value = _hex(digest)
        return None if value is None else self.root / kind / "sha256" / value

    def get_diff_id(self, digest: str) -> str | None:
        path = self._path("diffid-by-digest", digest)
        try:
            diff_id = path.read_text().strip() if path else ""
        except OSError:
            return None
        return diff_id if _hex(diff_id) else None

    def get_metadata(self, diff_id: str) -> list[V2Metadata]:
        path = self._path("v2metadata-by-diffid", diff_id)
        try:
            entries = json.loads(path.read_text()) if path else []
        except (OSError, ValueError):
            return []
        return [
            V2Metadata(e["Digest"], e.get("SourceRepository", ""))
            for e in entries
            if isinstance(e, dict) and isinstance(e.get("Digest"), str) and _hex(e["Digest"])
        ]

    def add(self, diff_id: str, meta: V2Metadata) -> None:
        """Remember that `meta.digest` (in `meta.source_repository`) is the compressed form of `diff_id`."""
        by_diff = self._path("v2metadata-by-diffid", diff_id)
        by_digest = self._path("diffid-by-digest", meta.digest)
        if by_diff is None or by_digest is None:
            raise ValueError(f"invalid digest pair {diff_id} / {meta.digest}")
        with self._lock:
            entries = [m for m in self.get_metadata(diff_id) if m != meta]
            entries.append(meta)
            by_diff.parent.mkdir(parents=True, exist_ok=True)
            by_digest.parent.mkdir(parents=True, exist_ok=True)
            docs = [
                {"Digest": m.digest, "SourceRepository": m.source_repository, "HMAC": ""} for m in entries
            ]
            atomic_write_file(by_diff, json.dumps(docs).encode())
            atomic_write_file(by_digest, diff_id.encode())

    def remove(self, diff_id: str, meta: V2Metadata) -> None:
        """Forget a pairing that turned out wrong (the registry no longer has the blob)."""
        path = self._path("v2metadata-by-diffid", diff_id)
        if path is None:
            return
        with self._lock:
            entries = [m for m in self.get_metadata(diff_id) if m != meta]
            docs = [
                {"Digest": m.digest, "SourceRepository": m.source_repository, "HMAC": ""} for m in entries
            ]
            if path.exists():
                atomic_write_file(path, json.dumps(docs).encode())
