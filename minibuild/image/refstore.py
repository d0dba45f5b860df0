"""References: name:tag and name@digest -> image ID (moby reference/store.go).

One JSON file, as moby keeps it, keyed by familiar repository name then familiar reference:

    {"Repositories":{"busybox":{"busybox:latest":"sha256:..."}}}

Each change rewrites the file atomically (temp + fsync + rename), so after a crash it holds either
the old set or the new one.
"""

import json
import threading
from collections.abc import Callable
from pathlib import Path

from minibuild import errdefs, gojson
from minibuild.image.reference import (
    InvalidReference,
    Reference,
    familiar_name,
    familiar_string,
    parse_normalized_named,
    tag_name_only,
)
from minibuild.ioutils import atomic_write_file

ERR_DOES_NOT_EXIST = "reference does not exist"


class ReferenceStore:
    """name:tag / name@digest -> image ID; thread safe."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._repositories: dict[str, dict[str, str]] = {}
        self._refs: dict[str, Reference] = {}  # familiar string -> parsed reference
        if self.path.exists():
            self._reload()

    def _reload(self) -> None:
        data = json.loads(self.path.read_bytes() or b"{}")
        for repository in (data.get("Repositories") or {}).values():
            for text, image_id in repository.items():
                try:
                    ref = parse_normalized_named(text)
                except InvalidReference:
                    continue  # moby skips what it cannot parse
                self._set(ref, image_id)

    def _save(self) -> None:
        document = {"Repositories": self._repositories}
        atomic_write_file(self.path, gojson.dumpb(document, sort_keys=True))

    def _set(self, ref: Reference, image_id: str) -> None:
        self._repositories.setdefault(familiar_name(ref), {})[familiar_string(ref)] = image_id
        self._refs[familiar_string(ref)] = ref

    # --- changing --------------------------------------------------------------------------------

    def add_tag(self, ref: Reference, image_id: str, force: bool = False) -> None:
        """Point name:tag (bare names get :latest) at an image."""
        if ref.digest:
            raise errdefs.InvalidParameter("refusing to create a tag with a digest reference")
        self._add(tag_name_only(ref), image_id, force)

    def add_digest(self, ref: Reference, image_id: str, force: bool = False) -> None:
        if not ref.digest:
            raise errdefs.InvalidParameter("reference is not canonical")
        self._add(ref, image_id, force)

    def _add(self, ref: Reference, image_id: str, force: bool) -> None:
        if familiar_name(ref) == "sha256":
            raise errdefs.InvalidParameter(
                "refusing to create an ambiguous tag using digest algorithm as name"
            )
        text = familiar_string(ref)
        with self._lock:
            old = self._repositories.get(familiar_name(ref), {}).get(text)
            if old == image_id:
                return
            if old is not None and ref.digest:
                raise errdefs.Conflict(f"Cannot overwrite digest {ref.digest}")
            if old is not None and not force:
                raise errdefs.Conflict(
                    f"Conflict: Tag {text} is already set to image {old}, "
                    "if you want to replace it, please use the force option"
                )
            self._set(ref, image_id)
            self._save()

    def delete(self, ref: Reference) -> None:
        """Remove one reference (a bare name means :latest)."""
        ref = tag_name_only(ref)
        name, text = familiar_name(ref), familiar_string(ref)
        with self._lock:
            repository = self._repositories.get(name, {})
            if text not in repository:
                raise errdefs.NotFound(ERR_DOES_NOT_EXIST)
            del repository[text]
            if not repository:
                del self._repositories[name]
            del self._refs[text]
            self._save()

    def prune(self, keep: Callable[[str], bool]) -> list[Reference]:
        """Drop every reference whose image `keep` rejects (dangling after a crash); return them."""
        with self._lock:
            gone = [self._refs[text] for repo in self._repositories.values()
                    for text, image_id in repo.items() if not keep(image_id)]  # fmt: skip
            for ref in gone:
                self.delete(ref)
            return gone

    # --- reading ---------------------------------------------------------------------------------

    def get(self, ref: Reference) -> str:
        """The image ID a reference points to (bare names mean :latest)."""
        ref = tag_name_only(ref)
        with self._lock:
            image_id = self._repositories.get(familiar_name(ref), {}).get(familiar_string(ref))
        if image_id is None:
            raise errdefs.NotFound(ERR_DOES_NOT_EXIST)
        return image_id

    def references(self, image_id: str) -> list[Reference]:
        """Every reference to an image, sorted by familiar string (moby's lexicalRefs)."""
        with self._lock:
            found = [self._refs[text] for repo in self._repositories.values()
                     for text, target in repo.items() if target == image_id]  # fmt: skip
        return sorted(found, key=familiar_string)

    def references_by_name(self, ref: Reference) -> list[tuple[Reference, str]]:
        """Every reference in one repository, sorted, with its image ID."""
        with self._lock:
            repository = dict(self._repositories.get(familiar_name(ref), {}))
        return [(self._refs[text], image_id) for text, image_id in sorted(repository.items())]

    def all(self) -> list[tuple[Reference, str]]:
        with self._lock:
            return [(self._refs[text], image_id) for repo in self._repositories.values()
                    for text, image_id in sorted(repo.items())]  # fmt: skip
