"""What every instruction does between its handler and its ` ---> <id>`: probe the cache, create a
container, commit an image (moby builder/dockerfile/internals.go; daemon/commit.go and image.NewChildImage
for the commit).

Each step makes one image. A metadata step (ENV, LABEL, ...) commits a container that was never
started: the image has the parent's layers, an `empty_layer` history entry and the container config
whose Cmd is the `#(nop)` comment naming the step. WORKDIR, RUN, COPY and ADD commit the diff of their
snapshot as a new layer. That container config is also the cache key the next build compares.
"""

import copy
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from minibuild import errdefs
from minibuild.api.platforms import host_arch
from minibuild.archive import ArchiveError
from minibuild.builder import created_ns, run_in_thread
from minibuild.builder.dockerfile.containers import Container
from minibuild.builder.dockerfile.copy import (
    CopyError,
    CopyInfo,
    CopyInstruction,
    get_source_hash_from_infos,
    parse_chmod,
    parse_chown_flag,
    perform_copy_for_info,
    root_pair,
)
from minibuild.builder.dockerfile.imagecontext import BuilderImage, RWLayer
from minibuild.dockerfile.instructions import _ShellDependantCmdLine
from minibuild.image.image import format_time
from minibuild.image.service import DOCKER_VERSION
from minibuild.layer import Layer

if TYPE_CHECKING:
    from minibuild.builder.dockerfile.builder import Builder
    from minibuild.builder.dockerfile.evaluator import DispatchRequest, DispatchState

DEFAULT_SHELL = ["/bin/sh", "-c"]
# A tar with no entries (its end marker only) and its digest, layer.DigestSHA256EmptyTar.
EMPTY_TAR_SIZE = 1024
DIGEST_SHA256_EMPTY_TAR = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"

RunConfigModifier = Callable[[dict[str, Any]], None]


# --- run configs (copyRunConfig and its modifiers) ------------------------------------------------------


def get_shell(run_config: dict[str, Any]) -> list[str]:
    """The SHELL in effect: the Dockerfile's, else /bin/sh -c."""
    return list(run_config.get("Shell") or DEFAULT_SHELL)


def copy_run_config(run_config: dict[str, Any], *modifiers: RunConfigModifier) -> dict[str, Any]:
    """A deep copy of a container config, then each modifier applied to it."""
    out = copy.deepcopy(run_config)
    for modify in modifiers:
        modify(out)
    return out


def with_cmd(cmd: list[str]) -> RunConfigModifier:
    def modify(config: dict[str, Any]) -> None:
        config["Cmd"] = list(cmd)

    return modify


def with_cmd_comment(comment: str) -> RunConfigModifier:
    """Cmd = shell + ["#(nop) ", comment]: the two-element form of most metadata steps."""

    def modify(config: dict[str, Any]) -> None:
        config["Cmd"] = [*get_shell(config), "#(nop) ", comment]

    return modify


def with_cmd_comment_string(comment: str) -> RunConfigModifier:
    """Cmd = shell + ["#(nop) " + comment]: the older one-element form WORKDIR, COPY and ADD keep."""

    def modify(config: dict[str, Any]) -> None:
        config["Cmd"] = [*get_shell(config), "#(nop) " + comment]

    return modify


def with_env(env: list[str]) -> RunConfigModifier:
    def modify(config: dict[str, Any]) -> None:
        config["Env"] = list(env)

    return modify


def with_entrypoint_override(cmd: list[str], entrypoint: list[str] | None) -> RunConfigModifier:
    """RUN runs its command without the image's ENTRYPOINT."""

    def modify(config: dict[str, Any]) -> None:
        if cmd:
            config["Entrypoint"] = entrypoint

    return modify


def without_healthcheck() -> RunConfigModifier:
    def modify(config: dict[str, Any]) -> None:
        config["Healthcheck"] = {"Test": ["NONE"]}

    return modify


def resolve_cmd_line(cmd: _ShellDependantCmdLine, run_config: dict[str, Any]) -> list[str]:
    """The argv of RUN/CMD/ENTRYPOINT: the shell form gets the SHELL prepended."""
    if not cmd.cmd_line:
        return []
    if cmd.prepend_shell:
        return [*get_shell(run_config), *cmd.cmd_line]
    return list(cmd.cmd_line)


# --- committing -------------------------------------------------------------------------------------------


async def commit(b: "Builder", state: "DispatchState", comment: str) -> None:
    """Commit a metadata step: an image whose container config carries the `#(nop)` comment."""
    if not state.has_from_image():
        raise errdefs.System("Please provide a source image with `from` prior to commit")
    run_config_with_comment_cmd = copy_run_config(state.run_config, with_cmd_comment(comment))
    container = await probe_and_create(b, state, run_config_with_comment_cmd)
    if container is None:
        return
    await commit_container(b, state, container, run_config_with_comment_cmd)


async def commit_container(
    b: "Builder", state: "DispatchState", container: Container, container_config: dict[str, Any]
) -> None:
    """Commit a container's changes on top of its image as the next image of the stage."""
    state.image_id = await run_in_thread(_commit_build_step, b, state, container, container_config)


def _commit_build_step(
    b: "Builder", state: "DispatchState", container: Container, container_config: dict[str, Any]
) -> str:
    """daemon.CommitBuildStep: the container's diff (none for a never-started one) as a child image."""
    if container.rw_layer is None:
        return create_child_image(b, container.image, None, state, container_config, container.id)
    return commit_rw_layer(b, container.rw_layer, container.image, state, container_config, container.id)


def commit_rw_layer(
    b: "Builder",
    rw_layer: RWLayer,
    parent: BuilderImage,
    state: "DispatchState",
    container_config: dict[str, Any],
    container_id: str,
) -> str:
    """The snapshot's diff as the step's layer, then the child image on top of it.

    The diff is written straight into the layer store, which hashes it as it comes (no temporary
    copy to read back); a diff that is the empty tar (layer.IsEmpty) makes no layer.
    """
    store = b.components.image_service.layer_store
    with store.writer(parent.chain_id) as writer:
        rw_layer.diff(writer, b.source_date_epoch)
        if writer.written == EMPTY_TAR_SIZE and writer.diff_id == DIGEST_SHA256_EMPTY_TAR:
            return create_child_image(b, parent, None, state, container_config, container_id)
        layer = writer.commit()
    try:
        return create_child_image(b, parent, layer, state, container_config, container_id)
    finally:
        store.release(layer.chain_id)  # the image holds its own reference now


def create_child_image(
    b: "Builder",
    parent: BuilderImage,
    layer: Layer | None,
    state: "DispatchState",
    container_config: dict[str, Any],
    container_id: str,
) -> str:
    """image.NewChildImage + CreateImage: the parent's config, layers and history, plus this step."""
    empty = layer is None
    created = format_time(created_ns(b.source_date_epoch))
    container_config = copy.deepcopy(container_config)
    if b.source_date_epoch is not None:
        # Reproducible builds leave the random container ID out of the config (BuildKit has none).
        container_id = ""
        container_config["Hostname"] = ""
    entry: dict[str, Any] = {
        "created": created,
        "author": state.maintainer,
        "created_by": " ".join(container_config.get("Cmd") or []),
    }
    if empty:
        entry["empty_layer"] = True
    config: dict[str, Any] = {
        "architecture": parent.config.get("architecture") or host_arch(),
        "os": state.operating_system or parent.operating_system(),
        "config": copy_run_config(state.run_config),
        "container_config": container_config,
        "container": container_id,
        "created": created,
        "docker_version": DOCKER_VERSION,
        "author": state.maintainer,
        "history": [*parent.history, entry],
        "rootfs": {"type": "layers", "diff_ids": parent.diff_ids},
    }
    for key in ("variant", "os.version", "os.features"):
        if parent.config.get(key):
            config[key] = parent.config[key]
    return b.components.image_service.create_image(
        config, layers=[] if layer is None else [layer], parent_id=parent.image_id or None
    )


# --- the cache and containers ---------------------------------------------------------------------------


async def probe_cache(b: "Builder", state: "DispatchState", run_config: dict[str, Any]) -> bool:
    """Look the step up in the cache; on a hit print ` ---> Using cache` and move to that image."""
    cached_id = await run_in_thread(b.image_prober.probe, state.image_id, run_config)
    if not cached_id:
        return False
    b.stdout.write(" ---> Using cache\n")
    state.image_id = cached_id
    return True


async def probe_and_create(
    b: "Builder", state: "DispatchState", run_config: dict[str, Any]
) -> Container | None:
    """A cache hit (None), else a new container for the step."""
    if await probe_cache(b, state, run_config):
        return None
    return await create(b, state, run_config)


async def create(b: "Builder", state: "DispatchState", run_config: dict[str, Any]) -> Container:
    """Create the step's container on the current image and say so (` ---> Running in <id>`)."""
    image = await run_in_thread(current_image, b, state)
    container = b.container_manager.create(run_config, image)
    b.stdout.write(f" ---> Running in {container.id[:12]}\n")
    return container


def current_image(b: "Builder", state: "DispatchState") -> BuilderImage:
    """The image the stage has reached (scratch before its first commit on FROM scratch)."""
    if not state.image_id:
        base = state.base_image
        return base if base is not None else BuilderImage.scratch()
    return BuilderImage.from_image(b.components.image_service.get_image(state.image_id))


# --- COPY and ADD ------------------------------------------------------------------------------------


async def perform_copy(b: "Builder", req: "DispatchRequest", inst: CopyInstruction) -> None:
    """Copy the sources into a snapshot of the current image and commit it (performCopy)."""
    state = req.state
    src_hash = get_source_hash_from_infos(inst.infos)
    # Docker writes `--chown=u:g` straight against the hash, without a space; --chmod is minibuild's
    chmod_comment = f"--chmod={inst.chmod_str} " if inst.chmod_str else ""
    chown_comment = f"--chown={inst.chown_str}" if inst.chown_str else ""
    comment = f"{inst.cmd_name} {chmod_comment}{chown_comment}{src_hash} in {inst.dest} "
    run_config_with_comment_cmd = copy_run_config(state.run_config, with_cmd_comment_string(comment))
    if await probe_cache(b, state, run_config_with_comment_cmd):
        return
    image = await run_in_thread(current_image, b, state)
    rw_layer = await run_in_thread(RWLayer, b.components, image, discard=RWLayer.release)
    try:
        state.image_id = await run_in_thread(
            _copy_and_commit, b, state, inst, rw_layer, image, run_config_with_comment_cmd
        )
    finally:
        await run_in_thread(rw_layer.release)


def _copy_and_commit(
    b: "Builder",
    state: "DispatchState",
    inst: CopyInstruction,
    rw_layer: RWLayer,
    image: BuilderImage,
    container_config: dict[str, Any],
) -> str:
    chmod = parse_chmod(inst.chmod_str) if inst.chmod_str else None
    with rw_layer.root() as root:
        dest = CopyInfo(root, normalize_dest(state.run_config.get("WorkingDir") or "", inst.dest))
        identity = root_pair()
        if inst.chown_str:
            identity = parse_chown_flag(inst.chown_str, root)
        for info in inst.infos:
            try:
                perform_copy_for_info(
                    dest,
                    info,
                    decompress=inst.allow_local_decompression,
                    identity=None if inst.preserve_ownership else identity,
                    chmod=chmod,
                )
            except (OSError, CopyError, ArchiveError) as err:
                raise CopyError(f"failed to copy files: {err}") from None
    return commit_rw_layer(b, rw_layer, image, state, container_config, "")


def normalize_dest(working_dir: str, requested: str) -> str:
    """A relative destination is relative to WORKDIR; a trailing slash is kept (normalizeDest)."""
    if posixpath.isabs(requested):
        return requested
    dest = _clean("/" + working_dir + "/" + requested)
    return dest + "/" if requested.endswith("/") and dest != "/" else dest


def normalize_workdir(current: str, requested: str) -> str:
    """WORKDIR: relative to the current one, cleaned, always absolute (normalizeWorkdir)."""
    if not requested:
        raise errdefs.System("cannot normalize nothing")
    return _clean(requested if posixpath.isabs(requested) else "/" + current + "/" + requested)


def _clean(path: str) -> str:
    """Go's path.Clean of an absolute path (posixpath.normpath keeps a leading "//")."""
    return "/" + posixpath.normpath(path).lstrip("/")
