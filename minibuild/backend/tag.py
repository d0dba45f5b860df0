"""Tags of a build (moby api/server/backend/build/tag.go).

`Tagger.new(...)` validates every `t=` before any work starts, so a bad tag fails the build at once
(an HTTP 500 with the reference error); `tag_images` points each tag at the built image and prints
`Successfully tagged name:tag`.
"""

from typing import Protocol

from minibuild import errdefs
from minibuild.api.streamformatter import StreamWriter
from minibuild.image.reference import (
    InvalidReference,
    Reference,
    familiar_string,
    parse_normalized_named,
    tag_name_only,
)


class ImageComponent(Protocol):
    """What tagging needs from the image service."""

    def tag_image_with_reference(self, image_id: str, ref: Reference) -> None: ...


class Tagger:
    """Tags an image created by a build."""

    def __init__(self, image_component: ImageComponent, stdout: StreamWriter, repo_and_tags: list[Reference]):
        self.image_component = image_component
        self.stdout = stdout
        self.repo_and_tags = repo_and_tags

    def tag_images(self, image_id: str) -> None:
        for ref in self.repo_and_tags:
            self.image_component.tag_image_with_reference(image_id, ref)
            self.stdout.write(f"Successfully tagged {familiar_string(ref)}\n")


def new_tagger(image_component: ImageComponent, stdout: StreamWriter, names: list[str]) -> Tagger:
    """A Tagger for `names`; raises for the first invalid one (NewTagger)."""
    return Tagger(image_component, stdout, sanitize_repo_and_tags(names))


def sanitize_repo_and_tags(names: list[str]) -> list[Reference]:
    """Parse the `t` values: empty ones skipped, `:latest` added, duplicates dropped, no digests."""
    refs: list[Reference] = []
    seen: set[str] = set()
    for name in names:
        if name == "":
            continue
        try:
            ref = parse_normalized_named(name)
        except InvalidReference as err:
            raise errdefs.System(str(err)) from None
        if ref.digest:
            raise errdefs.System("build tag cannot contain a digest")
        ref = tag_name_only(ref)
        key = str(ref)
        if key not in seen:
            seen.add(key)
            refs.append(ref)
    return refs
