"""Which registries are secure, and what Docker Hub is called (moby registry/config.go).

A registry is "secure" (https only, certificates verified) unless it is listed in the daemon's insecure
registries (by name: host[:port] exactly as written, a bare IP included; or a CIDR its address falls in)
or its address is on loopback: moby's default insecure CIDR is
127.0.0.0/8, so `localhost:5000` and `127.0.0.1:5000` are spoken to over http after https fails.
Docker Hub goes by several names (`docker.io`, `index.docker.io`) and is keyed in credential stores by
its legacy v1 URL `https://index.docker.io/v1/`. Proxies come from the environment as Go reads them.
"""

import ipaddress
import socket
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

INDEX_NAME = "docker.io"  # IndexName: the official index, as references spell it
INDEX_HOSTNAME = "index.docker.io"
INDEX_SERVER = "https://index.docker.io/v1/"  # IndexServer: Docker Hub's key in credential stores
DEFAULT_V2_REGISTRY = "https://registry-1.docker.io"  # DefaultV2Registry: where docker.io images live
DEFAULT_INSECURE_CIDRS = ("127.0.0.0/8",)
MAX_DOWNLOAD_ATTEMPTS = 5  # dockerd's --max-download-attempts default
MAX_CONCURRENT_DOWNLOADS = 3  # dockerd's --max-concurrent-downloads default
MAX_CONCURRENT_UPLOADS = 5  # dockerd's --max-concurrent-uploads default
MAX_UPLOAD_ATTEMPTS = 5  # moby xfer's maxUploadAttempts
DEFAULT_CERTS_DIR = Path("/etc/docker/certs.d")  # CertsDir(): per-registry CA roots and client pairs


@dataclass
class ServiceConfig:
    """The daemon's registry options (`--insecure-registry`, `--registry-mirror`, `--max-concurrent-*`,
    `--max-download-attempts`)."""

    insecure_registries: list[str] = field(default_factory=list)  # host[:port] or CIDR
    mirrors: list[str] = field(default_factory=list)
    max_download_attempts: int = MAX_DOWNLOAD_ATTEMPTS  # tries of a layer download, the first included
    max_concurrent_downloads: int = MAX_CONCURRENT_DOWNLOADS  # layers at once per pull; 0: no limit
    max_concurrent_uploads: int = MAX_CONCURRENT_UPLOADS  # layers at once per push; 0: no limit
    # dockerd fixes this at 5 (no daemon option); minibuild lets the service set it, as for downloads
    max_upload_attempts: int = MAX_UPLOAD_ATTEMPTS  # tries of a layer upload, the first included
    retry_tick: float = 1.0  # seconds per step of the "Retrying in N seconds" countdown (waitDuration)
    certs_dir: Path = DEFAULT_CERTS_DIR  # <certs_dir>/<host[:port]>/: *.crt roots, *.cert + *.key pairs

    def __post_init__(self) -> None:
        self.insecure_cidrs = [ipaddress.ip_network(c) for c in DEFAULT_INSECURE_CIDRS]
        self.insecure_names: set[str] = set()
        for entry in self.insecure_registries:
            entry = entry.removeprefix("http://").removeprefix("https://").rstrip("/")
            network = parse_cidr(entry)
            if network is None:
                self.insecure_names.add(entry)  # an index name, a bare IP too: matched as written
            else:
                self.insecure_cidrs.append(network)


def parse_cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """net.ParseCIDR: `10.0.0.0/8` (host bits allowed), else None (a bare address is no network)."""
    _, slash, bits = value.partition("/")
    if not slash or not (bits.isascii() and bits.isdigit()):
        return None
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class IndexInfo:
    """registrytypes.IndexInfo: a registry as the daemon sees it."""

    name: str
    secure: bool
    official: bool


def _host_addresses(host: str) -> list[ipaddress._BaseAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []  # unresolvable: moby treats it as secure and lets the connection fail later
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def split_host_port(value: str) -> tuple[str, str]:
    """net.SplitHostPort (`[::1]:5000`, `host:5000`); where it fails (no port, a bare IPv6 address, stray
    brackets), the whole value as the host, as moby's callers fall back."""
    if value.startswith("["):
        end = value.find("]")
        host, port, ok = value[1:end], value[end + 2 :], end > 0 and value[end + 1 : end + 2] == ":"
    else:
        host, colon, port = value.rpartition(":")
        ok = bool(colon) and ":" not in host and "[" not in host
    if not ok or ":" in port or "[" in port or "]" in port or "]" in host:
        return value, ""
    return host, port


def is_secure_index(config: ServiceConfig, index_name: str) -> bool:
    """isSecureIndex: insecure when listed by name, or when any of its addresses is in an insecure CIDR."""
    if index_name in config.insecure_names:
        return False
    host, _ = split_host_port(index_name)
    for address in _host_addresses(host):
        if any(address in cidr for cidr in config.insecure_cidrs if cidr.version == address.version):
            return False
    return True


def new_index_info(config: ServiceConfig, index_name: str) -> IndexInfo:
    """newIndexInfo: the official index under any of its names, else the host[:port] as written."""
    if index_name in (INDEX_NAME, INDEX_HOSTNAME):
        return IndexInfo(INDEX_NAME, secure=True, official=True)
    return IndexInfo(index_name, secure=is_secure_index(config, index_name), official=False)


def proxy_for(url: str) -> str | None:
    """http.ProxyFromEnvironment: HTTPS_PROXY/HTTP_PROXY by scheme, unless NO_PROXY matches or the host
    is loopback (Go never proxies localhost)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    if urllib.request.proxy_bypass_environment(host):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)
