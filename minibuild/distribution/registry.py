"""Where a repository lives and how to open it (moby registry/service_v2.go, registry/auth.go PingV2Registry,
distribution/registry.go NewV2Repository).

`docker.io/library/busybox` is served by `https://registry-1.docker.io`; any other domain is its own
registry: `https://<domain>` first and, when the registry is insecure (loopback or listed, see config.py),
`http://<domain>` after it. Opening a repository pings `<endpoint>/v2/` without credentials: the answer
confirms a v2 registry (`Docker-Distribution-Api-Version: registry/2.0`) and carries the challenge that
says how to authorize the requests that follow.
"""

import re
from dataclasses import dataclass

import aiohttp

from minibuild.distribution.auth import (
    AuthConfig,
    Authorizer,
    ChallengeManager,
    RepositoryScope,
    TokenHandler,
)
from minibuild.distribution.client import PING_TIMEOUT, Repository, Transport
from minibuild.distribution.config import (
    DEFAULT_V2_REGISTRY,
    INDEX_NAME,
    IndexInfo,
    ServiceConfig,
    new_index_info,
)
from minibuild.distribution.errors import RegistryError


@dataclass(frozen=True)
class APIEndpoint:
    """registry.APIEndpoint: one URL to try for a registry."""

    url: str
    official: bool = False
    mirror: bool = False
    tls_verify: bool = True


@dataclass(frozen=True)
class RepositoryInfo:
    """registry.RepositoryInfo: a normalized repository name and the registry serving it."""

    domain: str  # "docker.io", "127.0.0.1:5000"
    path: str  # "library/busybox": the name on the registry
    index: IndexInfo

    @property
    def name(self) -> str:
        """The full name, `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"


def new_repository_info(config: ServiceConfig, domain: str, path: str) -> RepositoryInfo:
    return RepositoryInfo(domain, path, new_index_info(config, domain))


def lookup_pull_endpoints(config: ServiceConfig, hostname: str) -> list[APIEndpoint]:
    """lookupV2Endpoints: mirrors then Docker Hub for docker.io; https (then http if insecure) elsewhere."""
    if hostname in (INDEX_NAME, "index.docker.io"):
        mirrors = [APIEndpoint(m if "://" in m else f"https://{m}", mirror=True) for m in config.mirrors]
        return [*mirrors, APIEndpoint(DEFAULT_V2_REGISTRY, official=True)]
    index = new_index_info(config, hostname)
    endpoints = [APIEndpoint(f"https://{hostname}", tls_verify=index.secure)]
    if not index.secure:
        endpoints.append(APIEndpoint(f"http://{hostname}", tls_verify=False))
    return endpoints


def lookup_push_endpoints(config: ServiceConfig, hostname: str) -> list[APIEndpoint]:
    """LookupPushEndpoints: the same without mirrors (a mirror is read-only)."""
    return [e for e in lookup_pull_endpoints(config, hostname) if not e.mirror]


class FallbackError(RegistryError):
    """fallbackError: this endpoint failed in a way that lets the next one be tried."""

    def __init__(self, err: Exception, confirmed_v2: bool = False, transport_ok: bool = False) -> None:
        super().__init__(str(err))
        self.err = err
        self.confirmed_v2 = confirmed_v2
        self.transport_ok = transport_ok


def _api_versions(header_values: list[str]) -> set[str]:
    return {v for value in header_values for v in re.split(r"[\s,]+", value) if v}


async def ping_v2_registry(transport: Transport, endpoint: APIEndpoint) -> tuple[ChallengeManager, bool]:
    """PingV2Registry: GET /v2/ unauthenticated; (challenges, whether the answer confirmed a v2 registry)."""
    url = endpoint.url.rstrip("/") + "/v2/"
    async with transport.request("GET", url, timeout=PING_TIMEOUT) as resp:
        found_v2 = "registry/2.0" in _api_versions(resp.headers.getall("Docker-Distribution-Api-Version", []))
        challenges = ChallengeManager()
        challenges.add_response(url, resp.status, resp.headers.getall("WWW-Authenticate", []))
        return challenges, found_v2


async def new_v2_repository(
    session: aiohttp.ClientSession,
    repo_info: RepositoryInfo,
    endpoint: APIEndpoint,
    auth: AuthConfig,
    actions: tuple[str, ...],
) -> tuple[Repository, bool]:
    """NewV2Repository: ping, then a Repository whose requests carry the authorization the ping asked for.

    A failed ping is a FallbackError: the caller may try the next endpoint (https -> http).
    """
    plain = Transport(session, tls_verify=endpoint.tls_verify)
    try:
        challenges, found_v2 = await ping_v2_registry(plain, endpoint)
    except RegistryError as err:
        raise FallbackError(err) from None
    token_handler = TokenHandler(session, auth, [RepositoryScope(repo_info.path, actions)])
    authorizer = Authorizer(challenges, auth, token_handler)
    transport = Transport(session, authorizer, tls_verify=endpoint.tls_verify)
    return Repository(transport, endpoint.url, repo_info.path), found_v2
