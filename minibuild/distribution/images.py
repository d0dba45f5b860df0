"""Pull and push against minibuild's own stores (moby daemon/images/image_pull.go, image_push.go).

`LocalStores` gives pull and push what they need from the layer, image and reference stores; the
daemon (and tests, notebooks) call `pull_image` / `push_image` with them.
"""

from minibuild import errdefs
from minibuild.distribution.auth import AuthConfig
from minibuild.distribution.manifest import Platform
from minibuild.distribution.progress import Output
from minibuild.distribution.push import PushResult
from minibuild.distribution.service import RegistryService
from minibuild.image.reference import Reference
from minibuild.image.refstore import ReferenceStore
from minibuild.image.store import ImageStore
from minibuild.layer import LayerStore


class LocalStores:
    """PullStore and PushStore over a LayerStore, an ImageStore and a ReferenceStore."""

    def __init__(
        self, layer_store: LayerStore, image_store: ImageStore, reference_store: ReferenceStore
    ) -> None:
        self.layer_store = layer_store
        self.image_store = image_store
        self.reference_store = reference_store

    def has_image(self, image_id: str) -> bool:
        return image_id in self.image_store

    def put_image_config(self, config: bytes) -> str:
        return self.image_store.create(config)

    def get_image_config(self, image_id: str) -> bytes:
        return self.image_store.get(image_id).raw

    def get_reference(self, ref: Reference) -> str | None:
        try:
            return self.reference_store.get(ref)
        except errdefs.NotFound:
            return None

    def add_reference(self, ref: Reference, image_id: str) -> None:
        if ref.digest:
            self.reference_store.add_digest(ref, image_id, force=True)
        else:
            self.reference_store.add_tag(ref, image_id, force=True)
            self.image_store.set_last_updated(image_id)

    def references_by_name(self, ref: Reference) -> list[Reference]:
        return [r for r, _image_id in self.reference_store.references_by_name(ref)]


async def pull_image(
    registry: RegistryService,
    stores: LocalStores,
    ref: str | Reference,
    *,
    auth: AuthConfig | None = None,
    platform: Platform | None = None,
    progress: Output | None = None,
) -> str:
    """ImageService.PullImage: pull `ref` into the local stores; return the image ID."""
    return await registry.pull(stores, ref, auth=auth, platform=platform, progress=progress)


async def push_image(
    registry: RegistryService,
    stores: LocalStores,
    ref: str | Reference,
    *,
    auth: AuthConfig | None = None,
    progress: Output | None = None,
    chunk_size: int | None = None,
) -> list[PushResult]:
    """ImageService.PushImage: push a local tag (or every tag of a name) to its registry."""
    return await registry.push(stores, ref, auth=auth, progress=progress, chunk_size=chunk_size)
