"""The daemon: listeners, routers, `/info` and `/version`, start and stop (moby cmd/dockerd/daemon.go,
daemon/info.go, daemon/info_unix.go, pkg/listeners, docker/go-connections sockets).

`Daemon(config)` serves the API on every `--host`: a Unix socket (mode 0660; a stale socket file is
replaced, one a live daemon answers on is refused) and, only when asked, TCP — loopback unless an
address is given, with a printed warning, since the API has no authentication. `run_daemon` is
`minibuild daemon`: it stops cleanly on SIGTERM/SIGINT, cancelling running builds. `embedded_daemon`
runs one in a background thread for tests and notebooks, on a temporary socket.

Registries: one `RegistryService` per data root (`<data_root>/distribution`), configured by
`--insecure-registry` (host[:port] or CIDR; loopback is always insecure) and `--registry-mirror` (tried
before Docker Hub for docker.io images), checked at start as dockerd checks them (registry/config.go).
The image router pulls and pushes with it, `/auth` logs in with it, and builds get it through the
build backend.

Tar bombs: while it runs, the daemon's `--max-archive-size` and `--max-archive-entries` are the limits
every extraction of untrusted input is held to (minibuild.archive.limits; defaults 16 GiB of file
content and 1,000,000 entries; 0 is no limit).
"""

import asyncio
import atexit
import errno
import ipaddress
import logging
import os
import platform
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from minibuild import errdefs, gourl
from minibuild.api import versions
from minibuild.api.platforms import host_arch
from minibuild.api.router.build import Backend as BuildBackend
from minibuild.api.router.build import BuildRouter
from minibuild.api.router.image import ImageRouter
from minibuild.api.router.system import SystemRouter
from minibuild.api.server import ENGINE_VERSION, OS_TYPE, Server
from minibuild.archive import ArchiveLimits, apply_limits, release_limits
from minibuild.archive.limits import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SIZE
from minibuild.defaults import default_data_root, default_host
from minibuild.distribution import AuthConfig, RegistryService, ServiceConfig
from minibuild.distribution.config import (
    DEFAULT_CERTS_DIR,
    DEFAULT_INSECURE_CIDRS,
    INDEX_NAME,
    MAX_CONCURRENT_DOWNLOADS,
    MAX_CONCURRENT_UPLOADS,
    MAX_DOWNLOAD_ATTEMPTS,
    parse_cidr,
    split_host_port,
)
from minibuild.image.reference import DOMAIN_RE
from minibuild.image.service import ImageService

log = logging.getLogger("minibuild.daemon")

_INSECURE_TCP_WARNING = (
    "WARNING: API is accessible on http://{addr} without encryption.\n"
    "         Access to the remote API is equivalent to root access on the host. Refer\n"
    "         to the 'Docker daemon attack surface' section in the documentation for\n"
    "         more information: https://docs.docker.com/go/attack-surface/"
)


class DaemonError(Exception):
    """The daemon cannot start (bad --host, socket in use, data root unusable)."""


@dataclass
class DaemonConfig:
    """What `minibuild daemon` is told (a subset of dockerd's config)."""

    hosts: list[str] = field(default_factory=lambda: [default_host()])
    data_root: Path = field(default_factory=default_data_root)
    experimental: bool = False
    debug: bool = False
    storage_driver: str = ""  # the name inspect and /info show; empty: the snapshotter's (overlay2 or vfs)
    insecure_registries: list[str] = field(default_factory=list)  # --insecure-registry: host[:port] or CIDR
    registry_mirrors: list[str] = field(default_factory=list)  # --registry-mirror: http(s) URLs
    # --registry-certs-dir: dockerd has no flag, it always reads /etc/docker/certs.d (the default here)
    registry_certs_dir: Path = DEFAULT_CERTS_DIR
    max_concurrent_downloads: int = MAX_CONCURRENT_DOWNLOADS  # --max-concurrent-downloads, 0: no limit
    max_concurrent_uploads: int = MAX_CONCURRENT_UPLOADS  # --max-concurrent-uploads, 0: no limit
    max_download_attempts: int = MAX_DOWNLOAD_ATTEMPTS  # --max-download-attempts
    # --max-archive-size (bytes of file content) and --max-archive-entries; None: no limit.
    max_archive_size: int | None = DEFAULT_MAX_SIZE
    max_archive_entries: int | None = DEFAULT_MAX_ENTRIES


# --- listeners --------------------------------------------------------------------------------------


def parse_daemon_host(host: str) -> tuple[str, str | tuple[str, int]]:
    """`unix:///path` -> ("unix", path); `tcp://[addr]:port` -> ("tcp", (addr or 127.0.0.1, port))."""
    scheme, sep, rest = host.partition("://")
    if not sep:
        raise DaemonError(f"invalid --host {host!r}: expected unix:///path or tcp://[address]:port")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise DaemonError(f"invalid --host {host!r}: the socket path must be absolute")
        return "unix", rest
    if scheme == "tcp":
        addr, colon, port = rest.rstrip("/").rpartition(":")
        if not colon or not port.isdigit() or not 0 < int(port) < 65536:
            raise DaemonError(f"invalid --host {host!r}: a port is required (tcp://127.0.0.1:2375)")
        return "tcp", (addr.strip("[]") or "127.0.0.1", int(port))
    raise DaemonError(f"invalid --host {host!r}: only unix:// and tcp:// are supported")


def _socket_is_live(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def listen_unix(path: str) -> socket.socket:
    """A listening Unix socket at `path`, mode 0660 (NewUnixSocket)."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise DaemonError(f"cannot listen on {path}: the file exists and is not a socket")
        if _socket_is_live(path):
            raise DaemonError(f"cannot listen on {path}: another daemon is already listening on it")
        os.unlink(path)  # left behind by a daemon that died
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o660)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise DaemonError(f"cannot listen on {path}: {err.strerror or err}")
    return sock


def listen_tcp(addr: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise DaemonError(f"cannot listen on tcp://{addr}:{port}: {err.strerror or err}")
    return sock


# --- registry options (moby registry/config.go) -------------------------------------------------------


def validate_mirror(value: str) -> str:
    """ValidateMirror: an http(s) URL without path, query or credentials, normalized to end in `/`."""
    try:
        uri = gourl.parse(value)
    except gourl.URLParseError:
        raise DaemonError(f'invalid mirror: "{value}" is not a valid URI') from None
    if uri.scheme not in ("http", "https"):
        raise DaemonError(f'invalid mirror: unsupported scheme "{uri.scheme}" in "{value}"')
    if uri.path not in ("", "/") or uri.raw_query or uri.fragment:
        raise DaemonError(f'invalid mirror: path, query, or fragment at end of the URI "{value}"')
    if uri.userinfo is not None:
        username = uri.userinfo.partition(":")[0]
        shown = f"{uri.scheme}://{username}:xxxxx@{uri.host}{uri.path}"  # the password is never echoed
        raise DaemonError(f'invalid mirror: username/password not allowed in URI "{shown}"')
    return value.removesuffix("/") + "/"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def validate_insecure_registry(value: str) -> str:
    """One --insecure-registry entry (LoadInsecureRegistries): a CIDR or host[:port], scheme dropped."""
    if value.startswith("-") or value.endswith("-"):
        raise DaemonError(f"invalid index name ({value}). Cannot begin or end with a hyphen")
    for scheme in ("http://", "https://"):
        if value.lower().startswith(scheme):
            log.warning(
                "insecure registry %s should not contain '%s' and '%s' has been removed from the "
                "insecure registry config",
                value,
                scheme,
                scheme,
            )
            value = value[len(scheme) :]
            break
    else:
        if "://" in value:
            raise DaemonError(f"insecure registry {value} should not contain '://'")
    if parse_cidr(value) is not None:
        return value
    host, port = split_host_port(value)
    if not DOMAIN_RE.fullmatch(value) and not _is_ip(host):  # validHostPortRegex: the reference's domain
        raise DaemonError(f'insecure registry {value} is not valid: invalid host "{host}"')
    if port and (not port.isdigit() or int(port) > 65535):
        raise DaemonError(f'insecure registry {value} is not valid: invalid port "{port}"')
    return value


def load_registry_config(config: DaemonConfig) -> ServiceConfig:
    """The registry service's options from the daemon's flags; DaemonError with dockerd's wording."""
    if config.max_concurrent_downloads < 0:
        raise DaemonError(f"invalid max concurrent downloads: {config.max_concurrent_downloads}")
    if config.max_concurrent_uploads < 0:
        raise DaemonError(f"invalid max concurrent uploads: {config.max_concurrent_uploads}")
    if config.max_download_attempts <= 0:
        raise DaemonError(f"invalid max download attempts: {config.max_download_attempts}")
    return ServiceConfig(
        insecure_registries=[validate_insecure_registry(r) for r in config.insecure_registries],
        mirrors=[validate_mirror(m) for m in config.registry_mirrors],
        certs_dir=config.registry_certs_dir,
        max_concurrent_downloads=config.max_concurrent_downloads,
        max_concurrent_uploads=config.max_concurrent_uploads,
        max_download_attempts=config.max_download_attempts,
    )


def registry_info(config: ServiceConfig) -> dict[str, Any]:
    """/info's RegistryConfig: insecure CIDRs (loopback last, as dockerd appends it), index configs."""
    cidrs: list[str] = []
    indexes: dict[str, dict[str, Any]] = {}
    for entry in [*config.insecure_registries, *DEFAULT_INSECURE_CIDRS]:
        network = parse_cidr(entry)
        if network is None:
            indexes[entry] = {"Name": entry, "Mirrors": [], "Secure": False, "Official": False}
        elif str(network) not in cidrs:
            cidrs.append(str(network))
    indexes[INDEX_NAME] = {
        "Name": INDEX_NAME,
        "Mirrors": list(config.mirrors),
        "Secure": True,
        "Official": True,
    }
    return {
        "AllowNondistributableArtifactsCIDRs": [],
        "AllowNondistributableArtifactsHostnames": [],
        "InsecureRegistryCIDRs": cidrs,
        "IndexConfigs": dict(sorted(indexes.items())),
        "Mirrors": list(config.mirrors),
    }


# --- the daemon ---------------------------------------------------------------------------------------


def _read_os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = Path(candidate).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key.strip()] = value.strip().strip('"')
        break
    return out


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _read_flag(path: str) -> bool:
    try:
        return Path(path).read_text().strip() == "1"
    except OSError:
        return False


def _rfc3339_nano(t: float) -> str:
    """Go's time.RFC3339Nano for local time: trailing zeros of the fraction dropped."""
    dt = datetime.fromtimestamp(t).astimezone()
    frac = f"{dt.microsecond:06d}".rstrip("0")
    offset = dt.strftime("%z")
    zone = "Z" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}"
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + zone


class Daemon:
    """One daemon: its data root, routers and listeners; also the backend of /info and /version."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        image_service: ImageService | None = None,
        registry_service: RegistryService | None = None,
        build_backend: BuildBackend | None = None,
    ) -> None:
        self.config = config
        self.data_root = Path(config.data_root)
        self.image_service = image_service
        self.registry_service = registry_service
        self.build_backend = build_backend
        self.build_router = BuildRouter(build_backend, self.data_root, experimental=config.experimental)
        self.server: Server | None = None
        self.runner: web.AppRunner | None = None
        self.sockets: list[socket.socket] = []
        self.unix_paths: list[str] = []
        self.tcp_addresses: list[str] = []
        self._stopped: asyncio.Event | None = None
        self._limits_token: object | None = None

    # --- /info and /version (daemon/info.go) ---

    def engine_id(self) -> str:
        """A stable id for this data root, made once (dockerd keeps an engine id the same way)."""
        path = self.data_root / "engine-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        new_id = str(uuid.uuid4())
        tmp = path.with_name(f".engine-id.{os.getpid()}")
        tmp.write_text(new_id + "\n")
        os.replace(tmp, path)
        return new_id

    def system_version(self) -> dict[str, Any]:
        arch = host_arch()
        kernel = platform.release()
        # GoVersion names the interpreter: minibuild is Python, not Go.
        py = f"python{platform.python_version()}"
        details = {
            "ApiVersion": versions.DEFAULT_VERSION,
            "Arch": arch,
            "Experimental": "true" if self.config.experimental else "false",
            "GitCommit": "",
            "GoVersion": py,
            "KernelVersion": kernel,
            "MinAPIVersion": versions.MIN_VERSION,
            "Os": OS_TYPE,
        }
        out: dict[str, Any] = {
            "Platform": {"Name": "minibuild"},
            "Components": [{"Name": "Engine", "Version": ENGINE_VERSION, "Details": details}],
            "Version": ENGINE_VERSION,
            "ApiVersion": versions.DEFAULT_VERSION,
            "MinAPIVersion": versions.MIN_VERSION,
            "GitCommit": "",
            "GoVersion": py,
            "Os": OS_TYPE,
            "Arch": arch,
            "KernelVersion": kernel,
        }
        if self.config.experimental:
            out["Experimental"] = True
        return out

    def system_info(self) -> dict[str, Any]:
        os_release = _read_os_release()
        warnings = [_INSECURE_TCP_WARNING.format(addr=a) for a in self.tcp_addresses]
        # minibuild has no containers, plugins, cgroups, swarm or container runtime of Docker's
        # kind: those fields say so (zeros, "none", inactive) rather than imitate dockerd.
        return {
            "ID": self.engine_id(),
            "Containers": 0,
            "ContainersRunning": 0,
            "ContainersPaused": 0,
            "ContainersStopped": 0,
            "Images": len(self.image_service.image_store.images()) if self.image_service else 0,
            "Driver": self.image_service.graph_driver if self.image_service else "",
            "DriverStatus": [],
            "SystemStatus": None,
            "Plugins": {"Volume": None, "Network": None, "Authorization": None, "Log": None},
            "MemoryLimit": False,
            "SwapLimit": False,
            "KernelMemory": False,
            "KernelMemoryTCP": False,
            "CpuCfsPeriod": False,
            "CpuCfsQuota": False,
            "CPUShares": False,
            "CPUSet": False,
            "PidsLimit": False,
            "IPv4Forwarding": _read_flag("/proc/sys/net/ipv4/ip_forward"),
            "BridgeNfIptables": False,
            "BridgeNfIp6tables": False,
            "Debug": self.config.debug,
            "NFd": len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0,
            "OomKillDisable": False,
            "NGoroutines": threading.active_count(),  # threads: the nearest thing to goroutines
            "SystemTime": _rfc3339_nano(time.time()),
            "LoggingDriver": "none",
            "CgroupDriver": "none",
            "NEventsListener": 0,
            "KernelVersion": platform.release(),
            "OperatingSystem": os_release.get("PRETTY_NAME", ""),
            "OSVersion": os_release.get("VERSION_ID", ""),
            "OSType": OS_TYPE,
            "Architecture": platform.machine(),
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": registry_info(
                self.registry_service.config if self.registry_service else ServiceConfig()
            ),
            "NCPU": os.cpu_count() or 1,
            "MemTotal": _mem_total(),
            "GenericResources": None,
            "DockerRootDir": str(self.data_root),
            "HttpProxy": os.environ.get("HTTP_PROXY", os.environ.get("http_proxy", "")),
            "HttpsProxy": os.environ.get("HTTPS_PROXY", os.environ.get("https_proxy", "")),
            "NoProxy": os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")),
            "Name": socket.gethostname(),
            "Labels": [],
            "ExperimentalBuild": self.config.experimental,
            "ServerVersion": ENGINE_VERSION,
            "ClusterStore": "",
            "ClusterAdvertise": "",
            "Runtimes": {},
            "DefaultRuntime": "",
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": False,
                "Error": "",
                "RemoteManagers": None,
            },
            "LiveRestoreEnabled": False,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": {"ID": "", "Expected": ""},
            "RuncCommit": {"ID": "", "Expected": ""},
            "InitCommit": {"ID": "", "Expected": ""},
            "SecurityOptions": [],
            "Warnings": warnings or None,
        }

    async def authenticate_to_registry(self, auth: AuthConfig) -> tuple[str, str]:
        """AuthenticateToRegistry (POST /auth): (status, identity token), or the registry's refusal."""
        if self.registry_service is None:
            raise errdefs.NotImplemented("this minibuild daemon has no registry service")
        return await self.registry_service.auth(auth)

    # --- serving ---

    def create_server(self) -> Server:
        server = Server(experimental=self.config.experimental)
        routers: list = [SystemRouter(self), self.build_router]
        if self.image_service is not None:
            routers.append(ImageRouter(self.image_service, self.data_root / "tmp", self.registry_service))
        server.init_routers(routers)
        return server

    async def start(self) -> None:
        """Open every listener, then the data root (its stores), then serve.

        The listeners come first: a daemon refused because another one serves the socket must not
        touch the data root (opening it sweeps what a dead daemon left there)."""
        registry_config = load_registry_config(self.config)
        listeners = [parse_daemon_host(h) for h in self.config.hosts]
        try:
            for kind, where in listeners:
                if kind == "unix":
                    self.sockets.append(listen_unix(where))
                    self.unix_paths.append(where)
                else:
                    addr, port = where
                    sock = listen_tcp(addr, port)
                    self.sockets.append(sock)
                    bound = sock.getsockname()
                    self.tcp_addresses.append(f"{bound[0]}:{bound[1]}")
            await self._open_data_root(registry_config)
        except BaseException:
            self._close_sockets()
            raise
        self._stopped = asyncio.Event()
        for addr in self.tcp_addresses:
            print(_INSECURE_TCP_WARNING.format(addr=addr), file=sys.stderr, flush=True)
        self._limits_token = apply_limits(
            ArchiveLimits(self.config.max_archive_size, self.config.max_archive_entries)
        )
        self.server = self.create_server()
        app = self.server.create_app()
        self.runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=log if self.config.debug else None,
            shutdown_timeout=5.0,
        )
        await self.runner.setup()
        for sock in self.sockets:
            await web.SockSite(self.runner, sock).start()

    async def _open_data_root(self, registry_config: ServiceConfig) -> None:
        try:
            self.data_root.mkdir(parents=True, exist_ok=True)
            if self.image_service is None:
                # Opening the service also empties <data root>/tmp: bodies a dead daemon left there.
                driver = {"graph_driver": self.config.storage_driver} if self.config.storage_driver else {}
                self.image_service = await asyncio.to_thread(ImageService, self.data_root, **driver)
            if self.registry_service is None:
                # Opening it empties <data root>/distribution/tmp: downloads a dead daemon left there.
                self.registry_service = await asyncio.to_thread(
                    RegistryService, self.data_root / "distribution", registry_config
                )
        except OSError as err:
            raise DaemonError(f"cannot use data root {self.data_root}: {err.strerror or err}")
        if self.build_backend is None:
            # Probing overlay and sweeping a killed daemon's leftovers take a while: off the event loop.
            self.build_backend = await asyncio.to_thread(
                create_build_backend, self.config, self.image_service, self.registry_service
            )
            self.build_router.backend = self.build_backend
            if not self.config.storage_driver:  # the driver the snapshotter picked stands for
                self.image_service.graph_driver = self.build_backend.components.snapshotter.graph_driver

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
        for path in self.unix_paths:
            try:
                os.unlink(path)
            except OSError as err:
                if err.errno != errno.ENOENT:
                    log.warning("could not remove %s: %s", path, err)
        self.sockets, self.unix_paths = [], []

    def request_stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    async def wait_stopped(self) -> None:
        assert self._stopped is not None, "start() first"
        await self._stopped.wait()

    async def stop(self) -> None:
        """Cancel running builds, close the listeners, finish in-flight requests."""
        self.build_router.cancel_all()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        self._close_sockets()
        if self._limits_token is not None:
            release_limits(self._limits_token)
            self._limits_token = None

    async def serve(self, ready: threading.Event | None = None) -> None:
        """start(), then serve until request_stop(), then stop()."""
        await self.start()
        try:
            if ready is not None:
                ready.set()
            await self.wait_stopped()
        finally:
            await self.stop()


def run_daemon(config: DaemonConfig) -> int:
    """`minibuild daemon`: serve until SIGTERM or SIGINT; the exit status."""
    logging.basicConfig(
        level=logging.DEBUG if config.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    daemon = Daemon(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await daemon.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.request_stop)
        log.info("API listen on %s", ", ".join(config.hosts))
        try:
            await daemon.wait_stopped()
            log.info("Processing signal: stopping")
        finally:
            await daemon.stop()

    try:
        asyncio.run(main())
    except DaemonError as err:
        print(f"minibuild daemon: {err}", file=sys.stderr)
        return 1
    return 0


def create_build_backend(
    config: DaemonConfig, image_service: ImageService, registry_service: RegistryService
) -> BuildBackend:
    """The build backend (minibuild.backend: the tagger, the classic builder, the DAG solver)."""
    from minibuild.backend import new_backend  # the builders import the API's types: import them late

    return new_backend(config.data_root, image_service=image_service, registry=registry_service)


# --- embedded daemon ------------------------------------------------------------------------------------


class EmbeddedDaemon:
    """A daemon in a background thread, on its own temporary socket; stop() always cleans up."""

    def __init__(
        self,
        data_root: str | os.PathLike[str] | None = None,
        *,
        build_backend: BuildBackend | None = None,
        **config: Any,
    ) -> None:
        self._own_data_root = data_root is None
        self._build_backend = build_backend
        self.data_root = (
            Path(data_root) if data_root is not None else Path(tempfile.mkdtemp(prefix="minibuild-"))
        )
        self._socket_dir = tempfile.mkdtemp(prefix="minibuild-sock-")
        self.socket_path = os.path.join(self._socket_dir, "minibuild.sock")
        self.host = "unix://" + self.socket_path
        self.config = DaemonConfig(hosts=[self.host], data_root=self.data_root, **config)
        self.daemon: Daemon | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "EmbeddedDaemon":
        """Start serving (a no-op when already running); raises what keeps the daemon from starting."""
        if self.running:
            return self
        self.daemon = Daemon(self.config, build_backend=self._build_backend)
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.daemon.serve(ready))
            except BaseException as err:  # reported to start() below
                self._error = err
            finally:
                loop.close()
                ready.set()

        self._error = None
        self._thread = threading.Thread(target=run, name="minibuild-daemon", daemon=True)
        self._thread.start()
        ready.wait()
        if self._error is not None:
            self._thread.join()
            self._remove_temporary_dirs()  # no caller will stop() a daemon that never started
            raise self._error
        _RUNNING[self.data_root.resolve()] = self
        return self

    def stop(self) -> None:
        """Stop serving and remove the socket (and the data root when it was a temporary one)."""
        if self.running and self._loop is not None and self.daemon is not None:
            self._loop.call_soon_threadsafe(self.daemon.request_stop)
            self._thread.join(timeout=30)
        _RUNNING.pop(self.data_root.resolve(), None)
        self._remove_temporary_dirs()

    def _remove_temporary_dirs(self) -> None:
        shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._own_data_root:
            shutil.rmtree(self.data_root, ignore_errors=True)

    def client(self) -> Any:
        """An APIClient for this daemon."""
        from minibuild.client import APIClient

        return APIClient(self.host)

    def __enter__(self) -> "EmbeddedDaemon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_RUNNING: dict[Path, EmbeddedDaemon] = {}


def embedded_daemon(
    data_root: str | os.PathLike[str] | None = None,
    *,
    build_backend: BuildBackend | None = None,
    **config: Any,
) -> EmbeddedDaemon:
    """A started embedded daemon: `with embedded_daemon(data_root=d) as d: ...` or `d = embedded_daemon(...)`.

    Asking again for a data root that already has a running embedded daemon returns that one, so a
    notebook's setup cell can be re-run; `stop()` is safe to call twice.
    """
    if data_root is not None:
        existing = _RUNNING.get(Path(data_root).resolve())
        if existing is not None and existing.running:
            return existing
    return EmbeddedDaemon(data_root, build_backend=build_backend, **config).start()


@atexit.register
def _stop_embedded() -> None:
    for daemon in list(_RUNNING.values()):
        daemon.stop()
