"""Pull and push for the daemon's image service (moby daemon/images/image_pull.go, image_push.go).

`ImageService` (minibuild.image.service) answers what pull and push ask of the stores (the PullStore and
PushStore protocols), so the daemon, tests and notebooks call:

    image_id = await pull_image(registry, image_service, "localhost:5000/app:v1", auth=..., progress=out)
    results = await push_image(registry, image_service, "localhost:5000/app:v1", auth=..., progress=out)

with one RegistryService per data root (it owns the staging directory and the layer metadata).
"""

from minibuild.distribution.auth import AuthConfig
from minibuild.distribution.manifest import Platform
from minibuild.distribution.progress import Output
from minibuild.distribution.pull import PullStore
from minibuild.distribution.push import PushResult, PushStore
from minibuild.distribution.service import RegistryService
from minibuild.image.reference import Reference


async def pull_image(
    registry: RegistryService,
    images: PullStore,
    ref: str | Reference,
    *,
    auth: AuthConfig | None = None,
    platform: Platform | None = None,
    progress: Output | None = None,
) -> str:
    """ImageService.PullImage: pull `ref` into the image service; return the image ID."""
    return await registry.pull(images, ref, auth=auth, platform=platform, progress=progress)


async def push_image(
    registry: RegistryService,
    images: PushStore,
    ref: str | Reference,
    *,
    auth: AuthConfig | None = None,
    progress: Output | None = None,
    chunk_size: int | None = None,
) -> list[PushResult]:
    """ImageService.PushImage: push a local tag (or every tag of a name) to its registry."""
    return await registry.push(images, ref, auth=auth, progress=progress, chunk_size=chunk_size)
