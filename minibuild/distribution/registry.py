"""Where a repository lives and how to open it (moby registry/service_v2.go, registry/auth.go PingV2Registry,
distribution/registry.go NewV2Repository).

`docker.io/library/busybox` is served by `https://registry-1.docker.io`; any other domain is its own
registry: `https://<domain>` first and, when the registry is insecure (loopback or listed, see config.py),
`http://<domain>` after it. A secure registry's https endpoint trusts the system's roots plus the
`*.crt` files of `<certs dir>/<host[:port]>/` and presents the client certificate of a `*.cert` + `*.key`
pair found there (dockerd's /etc/docker/certs.d); an insecure one's certificate is not checked at all,
so its certs.d is not read. Opening a repository pings `<endpoint>/v2/` without credentials: the answer
confirms a v2 registry (`Docker-Distribution-Api-Version: registry/2.0`) and carries the challenge that
says how to authorize the requests that follow.
"""

import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from minibuild import errdefs
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
    tls_config: ssl.SSLContext | None = field(default=None, compare=False)  # certs.d's, when it has any

    @property
    def ssl(self) -> ssl.SSLContext | bool:
        """What the transport verifies the server with: False (insecure), a context, or the defaults."""
        return (self.tls_config or True) if self.tls_verify else False


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
    """lookupV2Endpoints: mirrors then Docker Hub for docker.io; https (then http if insecure) elsewhere.

    Raises InvalidParameter (or a certificate's own error) when the registry's certs.d is unusable.
    """
    if hostname in (INDEX_NAME, "index.docker.io"):
        mirrors = []
        for mirror in config.mirrors:
            url = mirror if "://" in mirror else f"https://{mirror}"
            host = urlsplit(url).netloc
            secure = new_index_info(config, host).secure
            mirrors.append(
                APIEndpoint(
                    url, mirror=True, tls_verify=secure, tls_config=new_tls_config(config, host, secure)
                )
            )
        return [*mirrors, APIEndpoint(DEFAULT_V2_REGISTRY, official=True)]
    index = new_index_info(config, hostname)
    tls_config = new_tls_config(config, hostname, index.secure)
    endpoints = [APIEndpoint(f"https://{hostname}", tls_verify=index.secure, tls_config=tls_config)]
    if not index.secure:
        endpoints.append(APIEndpoint(f"http://{hostname}", tls_verify=False))
    return endpoints


def new_tls_config(config: ServiceConfig, hostname: str, secure: bool) -> ssl.SSLContext | None:
    """newTLSConfig: for a secure registry, the system's roots plus what its certs.d directory adds
    (None when it adds nothing); an insecure registry's certificate is not verified, certs.d unread."""
    if not secure:
        return None
    context = ssl.create_default_context()
    return context if read_certs_directory(context, config.certs_dir / hostname) else None


def read_certs_directory(context: ssl.SSLContext, directory: Path) -> bool:
    """ReadCertsDirectory: `*.crt` roots and `*.cert`/`*.key` client pairs into `context`, in name
    order; whether it found any. A missing directory is no error; an unpaired file is one, in dockerd's
    words. Only the last pair is presented (Python's context holds one; Go picks among them)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return False
    except OSError as err:
        raise errdefs.InvalidParameter(f"open {directory}: {(err.strerror or str(err)).lower()}") from None
    found = False
    for name in names:
        path = directory / name
        if name.endswith(".crt"):
            try:
                context.load_verify_locations(cafile=str(path))
            except ssl.SSLError:
                pass  # AppendCertsFromPEM skips what is not a PEM certificate
            except OSError as err:
                raise errdefs.Unknown(f"open {path}: {(err.strerror or str(err)).lower()}") from None
            found = True
        elif name.endswith(".cert"):
            key = name.removesuffix(".cert") + ".key"
            if key not in names:
                raise errdefs.InvalidParameter(
                    f"missing key {key} for client certificate {name}. "
                    "CA certificates must use the extension .crt"
                )
            try:
                context.load_cert_chain(str(path), str(directory / key))
            except (ssl.SSLError, OSError) as err:
                raise errdefs.Unknown(f"tls: failed to load the key pair {name}, {key}: {err}") from None
            found = True
        elif name.endswith(".key"):
            cert = name.removesuffix(".key") + ".cert"
            if cert not in names:
                raise errdefs.InvalidParameter(f"missing client certificate {cert} for key {name}")
    return found


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
    plain = Transport(session, tls_verify=endpoint.ssl)
    try:
        challenges, found_v2 = await ping_v2_registry(plain, endpoint)
    except RegistryError as err:
        raise FallbackError(err) from None
    token_handler = TokenHandler(session, auth, [RepositoryScope(repo_info.path, actions)], ssl=endpoint.ssl)
    authorizer = Authorizer(challenges, auth, token_handler)
    transport = Transport(session, authorizer, tls_verify=endpoint.ssl)
    return Repository(transport, endpoint.url, repo_info.path), found_v2
