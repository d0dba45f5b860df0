"""Request and response types shared by the client and the daemon (moby api/types/client.go, auth.go).

`ImageBuildOptions` is every query parameter of `POST /build` at API 1.40; the client turns it into a
query (`minibuild.client.image_build.image_build_options_to_query`) and the router parses a query back
into it (`minibuild.api.router.build.new_image_build_options`). `BuildOptions` is the name the builders
use for it.
"""

from dataclasses import dataclass, field
from typing import Any

from minibuild.distribution.auth import AuthConfig

__all__ = [
    "BUILDER_BUILDKIT",
    "BUILDER_V1",
    "AuthConfig",
    "BuildCachePruneOptions",
    "BuildCachePruneReport",
    "BuildOptions",
    "ImageBuildOptions",
    "Ulimit",
]

# ImageBuildOptions.version: which builder runs the build.
BUILDER_V1 = "1"  # the classic builder: one instruction after another
BUILDER_BUILDKIT = "2"  # the DAG solver


@dataclass
class Ulimit:
    """A `--ulimit` for RUN steps (docker/go-units ulimit.go)."""

    name: str
    hard: int
    soft: int


@dataclass
class ImageBuildOptions:
    """Everything a build request can ask for (API 1.40).

    Defaults are what the daemon assumes for a missing parameter; note `remove` (`rm`), which
    defaults to true when absent, and `dockerfile`, left empty (the builder falls back to `Dockerfile`,
    then `dockerfile`).
    """

    tags: list[str] = field(default_factory=list)
    suppress_output: bool = False  # q
    remote_context: str = ""  # remote
    no_cache: bool = False
    remove: bool = True  # rm
    force_remove: bool = False  # forcerm
    pull_parent: bool = False  # pull
    isolation: str = ""
    cpu_set_cpus: str = ""
    cpu_set_mems: str = ""
    cpu_shares: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0
    memory: int = 0
    memory_swap: int = 0
    cgroup_parent: str = ""
    network_mode: str = ""
    shm_size: int = 0
    dockerfile: str = ""
    ulimits: list[Ulimit] = field(default_factory=list)
    # A value of None is `--build-arg NAME` with NAME unset on the client: reported if unused.
    build_args: dict[str, str | None] = field(default_factory=dict)
    auth_configs: dict[str, AuthConfig] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    squash: bool = False
    cache_from: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    target: str = ""
    session_id: str = ""  # session
    platform: str = ""  # normalised `os/arch[/variant]`
    version: str = BUILDER_V1
    build_id: str = ""  # buildid: the key /build/cancel uses
    outputs: list[dict[str, Any]] = field(default_factory=list)


BuildOptions = ImageBuildOptions


@dataclass
class BuildCachePruneOptions:
    """`POST /build/prune`: `filters` maps a key (`id`, `until`, `type`, …) to its one value or None."""

    all: bool = False
    keep_storage: int = 0
    filters: dict[str, str | None] = field(default_factory=dict)


@dataclass
class BuildCachePruneReport:
    """The answer to a prune: `caches_deleted` None is written as JSON null, like Go's nil slice."""

    caches_deleted: list[str] | None = None
    space_reclaimed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"CachesDeleted": self.caches_deleted or None, "SpaceReclaimed": self.space_reclaimed}
