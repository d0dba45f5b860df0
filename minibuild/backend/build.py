"""The build backend behind `POST /build` (moby api/server/backend/build/backend.go).

`Backend.build(config)` does what the article lists, in this order:

1. a `Tagger` checks every `-t` first, so a bad tag fails before any work;
2. the builder is chosen by `options.version`: "1" the classic builder, "2" the BuildKit-style one;
3. `squash`, when asked, merges the layers the build added into one (and says `moby.image.id`);
4. `Successfully built <12 hex>` (the classic builder only: BuildKit reports in its own way);
5. each tag is applied: `Successfully tagged name:tag`.

`new_backend(data_root)` builds one for a daemon: image and registry services, a snapshotter (overlay
where the kernel allows it) and the runtime. The BuildKit-style builder plugs in as `buildkit=`.
"""

import re
import shutil
from pathlib import Path
from typing import Any, Protocol

from minibuild import errdefs, trace
from minibuild.api.backend import BuildConfig
from minibuild.api.types import BUILDER_BUILDKIT, BuildCachePruneOptions, BuildCachePruneReport
from minibuild.backend.squash import squash_image
from minibuild.backend.tag import new_tagger
from minibuild.builder import BuildComponents, Result, run_in_thread, source_date_epoch
from minibuild.builder.dockerfile.builder import BuildManager
from minibuild.builder.next.builder import Builder as NextBuilder
from minibuild.builder.next.builder import Opt as NextOpt
from minibuild.distribution import RegistryService
from minibuild.image.service import ImageService, truncate_id
from minibuild.layer import LayerStore
from minibuild.runtime import Runtime, default_runtime
from minibuild.snapshot import Snapshotter, select_snapshotter
from minibuild.snapshot.snapshotter import remove_tree

_HEX64 = re.compile(r"[0-9a-f]{64}")


class ImageBuilder(Protocol):
    """A builder: the classic BuildManager, or the BuildKit-style builder."""

    async def build(self, config: BuildConfig) -> Result | None: ...


class BuildkitBuilder(ImageBuilder, Protocol):
    """The BuildKit-style builder also owns a cache it can prune and builds it can cancel by ID."""

    async def prune(self, options: BuildCachePruneOptions) -> BuildCachePruneReport: ...

    async def cancel(self, build_id: str) -> None: ...


class Backend:
    """Implements the router's Backend protocol (minibuild.api.router.build.Backend)."""

    def __init__(
        self, builder: ImageBuilder, components: BuildComponents, buildkit: BuildkitBuilder | None = None
    ) -> None:
        self.builder = builder
        self.components = components
        self.image_component = components.image_service
        self.buildkit = buildkit

    @trace.traced
    async def build(self, config: BuildConfig) -> str:
        """Build, squash if asked, report and tag; return the image ID (`sha256:...`)."""
        options = config.options
        use_buildkit = options.version == BUILDER_BUILDKIT
        stdout = config.progress_writer.stdout_formatter
        tagger = new_tagger(self.image_component, stdout, options.tags)

        trace.point("switch", version=options.version)
        if use_buildkit:
            if self.buildkit is None:
                raise errdefs.NotImplemented(
                    "the BuildKit-style builder (version=2) is not part of this minibuild yet: "
                    "build with the classic builder (version=1, DOCKER_BUILDKIT=0)"
                )
            build = await self.buildkit.build(config)
        else:
            build = await self.builder.build(config)

        if build is None:  # the upload half of a BuildKit upload-request pair: nothing built
            return ""
        image_id = build.image_id
        if options.squash:
            image_id = await self.squash_build(build, source_date_epoch(options.build_args))
            aux = config.progress_writer.aux_formatter
            if aux is not None:
                aux.emit("moby.image.id", {"ID": image_id})

        if not use_buildkit:
            stdout.write(f"Successfully built {truncate_id(image_id)}\n")
        trace.point("tag_images", image_id=image_id, tags=options.tags)
        if image_id:
            await run_in_thread(tagger.tag_images, image_id)
        return image_id

    @trace.traced
    async def squash_build(self, build: Any, epoch: int | None) -> str:
        from_image = getattr(build, "from_image", None)  # BuildKit reports no base image: squash all
        from_id = from_image.image_id if from_image is not None else ""
        try:
            return await run_in_thread(squash_image, self.components, build.image_id, from_id, epoch)
        except errdefs.DockerError as err:
            raise errdefs.System(f"error squashing image: {err.message}") from None

    async def prune_cache(self, options: BuildCachePruneOptions) -> BuildCachePruneReport:
        """Prune the BuildKit-style builder's cache; the classic cache is plain images, left alone."""
        if self.buildkit is None:
            return BuildCachePruneReport(None, 0)  # no BuildKit cache exists to prune
        return await self.buildkit.prune(options)

    async def cancel(self, build_id: str) -> None:
        """Cancel a BuildKit-style build by its `buildid`; classic builds ignore it, as in Docker."""
        if self.buildkit is not None:
            await self.buildkit.cancel(build_id)


def new_build_components(
    data_root: Path,
    *,
    image_service: ImageService | None = None,
    registry: RegistryService | None = None,
    runtime: Runtime | None = None,
) -> BuildComponents:
    """The services builds use under a data root; leftovers of a killed daemon's builds are removed.

    Pass the daemon's own image and registry services when it has them: one of each per data root.
    """
    data_root = Path(data_root)
    image_service = image_service or ImageService(data_root)
    registry = registry or RegistryService(data_root / "distribution")
    tmp_dir = data_root / "builder" / "tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)  # contexts and diffs of builds that never finished
    tmp_dir.mkdir(parents=True)
    snapshotter = select_snapshotter(data_root / "snapshots", runtime)
    for leftover in snapshotter.snapshots.iterdir():  # every snapshot belongs to a build: none runs yet
        remove_tree(leftover)
    prune_unpacked_layers(snapshotter, image_service.layer_store)
    return BuildComponents(image_service, registry, snapshotter, runtime or default_runtime(), tmp_dir)


def prune_unpacked_layers(snapshotter: Snapshotter, layer_store: LayerStore) -> None:
    """Drop the snapshotter's unpacked copies of layers the layer store no longer has (their images
    were deleted)."""
    unpacked = getattr(snapshotter, "layers", None) or getattr(snapshotter, "chains", None)
    remove_layer = getattr(snapshotter, "remove_layer", None)
    if unpacked is None or remove_layer is None:
        return
    for entry in Path(unpacked).iterdir():
        chain_id = "sha256:" + entry.name
        if _HEX64.fullmatch(entry.name) and chain_id not in layer_store:
            remove_layer(chain_id)


def new_backend(data_root: Path, **services: object) -> Backend:
    """The daemon's build backend: the classic builder and the BuildKit-style one."""
    components = new_build_components(data_root, **services)  # type: ignore[arg-type]
    c = components
    buildkit = NextBuilder(NextOpt(Path(data_root) / "buildkit", c.image_service, c.registry, c.runtime))
    return Backend(BuildManager(components), components, buildkit=buildkit)
