"""Images a build reads: base images, `COPY --from` images, and writable layers on top of them
(moby builder/dockerfile/imagecontext.go; daemon/images/image_builder.go GetImageAndReleasableLayer).

`ImageSources.get(name_or_id, local_only, platform)` finds an image once per build: a local one, or a
pull when the image is missing (or always, with `pull=1`). An image named by a stage is local only.
`RWLayer` is a writable snapshot on top of an image's layers: WORKDIR, RUN and COPY write into one,
and its diff becomes the step's layer.
"""

import enum
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from minibuild import errdefs
from minibuild.api.platforms import host_arch
from minibuild.api.streamformatter import JSONProgressOutput
from minibuild.builder import BuildComponents, run_in_thread
from minibuild.distribution import AuthConfig, Platform
from minibuild.image.image import Image
from minibuild.image.reference import InvalidReference, parse_normalized_named, tag_name_only
from minibuild.layer import chain_id_of
from minibuild.snapshot import Snapshot


@dataclass(frozen=True)
class BuilderImage:
    """builder.Image: an image as the builder sees it. `image_id` "" is scratch."""

    image_id: str
    config: dict[str, Any]

    @classmethod
    def from_image(cls, image: Image) -> "BuilderImage":
        return cls(image.id, image.config)

    @classmethod
    def scratch(cls, platform: Platform | None = None) -> "BuilderImage":
        os_name = platform.os if platform is not None else "linux"
        arch = platform.architecture if platform is not None else host_arch()
        return cls("", {"os": os_name, "architecture": arch, "rootfs": {"type": "layers"}})

    def run_config(self) -> dict[str, Any] | None:
        return self.config.get("config")

    def operating_system(self) -> str:
        return self.config.get("os") or "linux"

    @property
    def diff_ids(self) -> list[str]:
        return list((self.config.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def chain_id(self) -> str | None:
        return chain_id_of(self.diff_ids)

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.config.get("history") or [])


class PullOption(enum.Enum):
    NO_PULL = "no-pull"  # a stage's image: never pulled
    PREFER_LOCAL = "prefer-local"  # FROM/COPY --from an image: pulled only when missing
    FORCE_PULL = "force-pull"  # with pull=1: always pulled


async def get_image_and_releasable_layer(
    components: BuildComponents,
    ref_or_id: str,
    *,
    pull_option: PullOption,
    auth_configs: dict[str, AuthConfig],
    output: JSONProgressOutput,
    platform: Platform | None,
) -> BuilderImage:
    """The image for a FROM or COPY --from (GetImageAndReleasableLayer); "" is scratch."""
    if ref_or_id == "":
        return BuilderImage.scratch(platform)
    service = components.image_service
    if pull_option != PullOption.FORCE_PULL:
        try:
            return BuilderImage.from_image(service.get_image(ref_or_id))
        except errdefs.DockerError:
            if pull_option == PullOption.NO_PULL:
                raise
    return await pull_for_builder(components, ref_or_id, auth_configs, output, platform)


async def pull_for_builder(
    components: BuildComponents,
    name: str,
    auth_configs: dict[str, AuthConfig],
    output: JSONProgressOutput,
    platform: Platform | None,
) -> BuilderImage:
    """Pull `name` (its progress goes to the build's stream), then find it locally (pullForBuilder)."""
    try:
        ref = tag_name_only(parse_normalized_named(name))
    except InvalidReference as err:
        raise errdefs.InvalidParameter(str(err)) from None
    registry = components.registry
    auth = registry.resolve_auth_config(auth_configs, ref) if auth_configs else AuthConfig()
    await registry.pull(components.image_service, ref, auth=auth, platform=platform, progress=output)
    return BuilderImage.from_image(components.image_service.get_image(name))


class RWLayer:
    """A writable snapshot on top of an image's layers (moby's rwLayer of image_builder.go).

    The image's top layer is held while the snapshot lives, so deleting the image meanwhile cannot
    pull the layers from under it. `release` throws the snapshot away.
    """

    def __init__(self, components: BuildComponents, image: BuilderImage, key: str | None = None) -> None:
        self.components = components
        self.chain_id = image.chain_id
        layers = components.image_service.layer_store
        chain = []
        if self.chain_id is not None:
            layers.acquire(self.chain_id)
            chain = layers.chain(self.chain_id)
        try:
            key = key or secrets.token_hex(32)
            self.snapshot: Snapshot | None = components.snapshotter.prepare(key, chain)
        except BaseException:
            if self.chain_id is not None:
                layers.release(self.chain_id)
            raise

    @property
    def rootfs(self) -> Path:
        assert self.snapshot is not None, "released"
        return self.snapshot.rootfs

    @property
    def mounts(self) -> tuple:
        assert self.snapshot is not None, "released"
        return self.snapshot.mounts

    @contextmanager
    def root(self) -> Iterator[Path]:
        """The layer's tree as the daemon can write it, while the context lasts (Root())."""
        assert self.snapshot is not None, "released"
        with self.components.snapshotter.mounted(self.snapshot) as path:
            yield path

    def diff(self, out: BinaryIO, source_date_epoch: int | None) -> None:
        """Write what was changed on top of the image as a layer tar."""
        assert self.snapshot is not None, "released"
        self.components.snapshotter.diff(self.snapshot, out, source_date_epoch=source_date_epoch)

    def release(self) -> None:
        if self.snapshot is None:
            return
        snapshot, self.snapshot = self.snapshot, None
        try:
            self.components.snapshotter.remove(snapshot)
        finally:
            if self.chain_id is not None:
                self.components.image_service.layer_store.release(self.chain_id)


class ImageMount:
    """An image a build uses as a base or as a COPY --from source (moby's imageMount)."""

    def __init__(self, components: BuildComponents, image: BuilderImage) -> None:
        self.components = components
        self.image = image

    def image_id(self) -> str:
        return self.image.image_id

    async def new_rw_layer(self) -> RWLayer:
        return await run_in_thread(RWLayer, self.components, self.image, discard=RWLayer.release)


class ImageSources:
    """The images of one build, each looked up (or pulled) once (moby's imageSources)."""

    def __init__(
        self,
        components: BuildComponents,
        *,
        pull_parent: bool,
        auth_configs: dict[str, AuthConfig],
        output: JSONProgressOutput,
    ) -> None:
        self.components = components
        self.pull_parent = pull_parent
        self.auth_configs = auth_configs
        self.output = output
        self.by_image_id: dict[str, ImageMount] = {}

    async def get(self, id_or_ref: str, local_only: bool, platform: Platform | None) -> ImageMount:
        if id_or_ref in self.by_image_id:
            return self.by_image_id[id_or_ref]
        if local_only:
            pull_option = PullOption.NO_PULL
        else:
            pull_option = PullOption.FORCE_PULL if self.pull_parent else PullOption.PREFER_LOCAL
        image = await get_image_and_releasable_layer(
            self.components,
            id_or_ref,
            pull_option=pull_option,
            auth_configs=self.auth_configs,
            output=self.output,
            platform=platform,
        )
        mount = ImageMount(self.components, image)
        self.add(mount)
        return mount

    def add(self, mount: ImageMount) -> None:
        if mount.image_id():
            self.by_image_id[mount.image_id()] = mount
