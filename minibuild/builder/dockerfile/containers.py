"""The build's containers (moby builder/dockerfile/containerbackend.go: containerManager).

Every step that is not served from the cache runs in a container, as in Docker: a metadata step
(ENV, LABEL, ...) creates one and never starts it, WORKDIR creates its directory in one, RUN runs its
command in one. The container's ID is printed (` ---> Running in <id>`), its config is what the step
commits, and `remove_all` prints `Removing intermediate container <id>` for each (honouring `rm` and
`forcerm` in the dispatcher). minibuild has no container store: a container is its ID, its config and
its writable snapshot, and lives only as long as the build.
"""

import secrets
import socket
from dataclasses import dataclass
from typing import Any

from minibuild import errdefs
from minibuild.api.streamformatter import StreamWriter
from minibuild.builder import BuildComponents, run_in_thread
from minibuild.builder.dockerfile.imagecontext import BuilderImage, RWLayer
from minibuild.runtime import ContainerError, ProcessSpec, RuntimeUnavailableError


class StatusCodeError(Exception):
    """A RUN's process exited with a non-zero status."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exit status {code}")
        self.code = code


@dataclass
class Container:
    """One build container: its ID, its config, the image below it and (once needed) its snapshot."""

    id: str
    config: dict[str, Any]
    image: BuilderImage
    rw_layer: RWLayer | None = None


class ContainerManager:
    """Creates, runs and removes the containers of one build."""

    def __init__(self, components: BuildComponents, network_mode: str, extra_hosts: list[str]) -> None:
        self.components = components
        self.network_mode = network_mode or "default"
        self.extra_hosts = extra_hosts
        self.tmp_containers: dict[str, Container] = {}

    def create(self, run_config: dict[str, Any], image: BuilderImage) -> Container:
        """A new container for `run_config` on `image`; like dockerd, it names the config's Hostname."""
        container_id = secrets.token_hex(32)
        if not run_config.get("Hostname"):
            host = self.network_mode == "host"
            run_config["Hostname"] = socket.gethostname() if host else container_id[:12]
        container = Container(container_id, run_config, image)
        self.tmp_containers[container_id] = container
        return container

    async def rw_layer(self, container: Container) -> RWLayer:
        """The container's writable root (prepared on first use: metadata steps never need one)."""
        if container.rw_layer is None:
            container.rw_layer = await run_in_thread(
                RWLayer, self.components, container.image, container.id, discard=RWLayer.release
            )
        return container.rw_layer

    async def run(self, container: Container, stdout: StreamWriter, stderr: StreamWriter) -> None:
        """Run the container's command, streaming its output; StatusCodeError on a non-zero exit.

        Cancelling the task kills the process tree (the runtime waits until it is gone).
        """
        mode = self.network_mode
        if mode.startswith("container:"):
            raise errdefs.NotFound(f"No such container: {mode.removeprefix('container:')}")
        layer = await self.rw_layer(container)
        config = container.config
        spec = ProcessSpec(
            args=list(config.get("Cmd") or []),
            env=list(config.get("Env") or []),
            cwd=config.get("WorkingDir") or "/",
            user=config.get("User") or "",
            network_mode=mode,
            hostname=config.get("Hostname") or container.id[:12],
            extra_hosts=list(self.extra_hosts),
        )
        try:
            code = await self.components.runtime.run(
                layer.rootfs, spec, on_stdout=stdout.write, on_stderr=stderr.write, mounts=layer.mounts
            )
        except RuntimeUnavailableError as err:
            raise errdefs.Unavailable(str(err)) from None
        except ContainerError as err:
            raise errdefs.System(str(err)) from None
        if code != 0:
            raise StatusCodeError(code)

    async def remove_container(self, container_id: str, stdout: StreamWriter) -> None:
        container = self.tmp_containers.pop(container_id)
        if container.rw_layer is not None:
            await run_in_thread(container.rw_layer.release)
        stdout.write(f"Removing intermediate container {container_id[:12]}\n")

    async def remove_all(self, stdout: StreamWriter) -> None:
        """Remove every container of the build so far, printing Docker's line for each (RemoveAll)."""
        for container_id in list(self.tmp_containers):
            await self.remove_container(container_id, stdout)

    async def release_all(self) -> None:
        """Drop what is left at the end of the build, without a word.

        With rm=0 Docker keeps the containers (`docker ps -a` lists them); minibuild has no containers
        to keep, so it only frees their snapshots.
        """
        layers = [c.rw_layer for c in self.tmp_containers.values() if c.rw_layer is not None]
        self.tmp_containers.clear()
        await run_in_thread(_release, layers)


def _release(layers: list[RWLayer]) -> None:
    for layer in layers:
        layer.release()
