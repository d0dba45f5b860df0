"""What one build step's process gets (moby daemon/oci_linux.go, container/container.go, libnetwork etchosts,
resolvconf).

`ProcessSpec` is the part of an OCI runtime spec a build step needs; `Mount` is containerd's mount.Mount
(a snapshotter describes its root filesystem with them). The /etc/hosts, /etc/resolv.conf and
/etc/hostname a step sees are built here, on the daemon side, and handed to the container init.
"""

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from minibuild.runtime.errors import ContainerError

DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # moby oci.DefaultPathEnv
NETWORK_MODES = ("default", "bridge", "none", "host")
# libnetwork's defaultContent of /etc/hosts.
_DEFAULT_HOSTS = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)
# libnetwork resolvconf: used when filtering leaves no nameserver.
_DEFAULT_DNS = ("8.8.8.8", "8.8.4.4")
_NAMESERVER_RE = re.compile(r"^\s*nameserver\s+(\S+)\s*$")


@dataclass(frozen=True)
class Mount:
    """containerd's mount.Mount: `mount -t type -o options source target`, target relative to the rootfs."""

    type: str
    source: str
    options: tuple[str, ...] = ()
    target: str = "/"


@dataclass
class ProcessSpec:
    """The process of one RUN step.

    `args` is the final argv (the builder applies SHELL); `env` is `KEY=value` strings; `user` is the
    Dockerfile USER (`name`, `uid`, `name:group`, `uid:gid`, empty for root); `network_mode` is one of
    NETWORK_MODES; `extra_hosts` are `host:ip` pairs as in the API's ExtraHosts.

    Unlike Docker, whose default bridge network routes a step to the outside, "default" (and "bridge")
    give a step a network namespace of its own with only loopback, like "none"; "host" shares the host's.
    """

    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: str = ""
    network_mode: str = "default"
    hostname: str = "localhost"
    extra_hosts: list[str] = field(default_factory=list)


def create_daemon_environment(env: list[str], hostname: str) -> list[str]:
    """moby's CreateDaemonEnvironment: PATH when the image sets none, then HOSTNAME, then the image's env."""
    keys = {entry.partition("=")[0] for entry in env}
    base = [] if "PATH" in keys else [f"PATH={DEFAULT_PATH_ENV}"]
    return base + [f"HOSTNAME={hostname}"] + list(env)


def _host_records(extra_hosts: list[str]) -> list[tuple[str, str]]:
    records = []
    for entry in extra_hosts:
        host, _, ip = entry.partition(":")  # an IPv6 address keeps its colons
        ip = ip.strip("[]")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ContainerError(f'invalid IP address in add-host: "{ip}"')
        if not host:
            raise ContainerError(f'bad format for add-host: "{entry}"')
        records.append((ip, host))
    return records


def build_hosts(extra_hosts: list[str], network_mode: str, host_file: Path = Path("/etc/hosts")) -> str:
    """/etc/hosts: the host's own with network=host, else libnetwork's default records; then extra hosts.

    A step's private network has no address of its own, so no record for the hostname is added
    (as with --network none).
    """
    if network_mode == "host":
        text = host_file.read_text() if host_file.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
    else:
        text = "".join(f"{ip}\t{names}\n" for ip, names in _DEFAULT_HOSTS)
    return text + "".join(f"{ip}\t{host}\n" for ip, host in _host_records(extra_hosts))


def build_resolv_conf(network_mode: str, host_file: Path = Path("/etc/resolv.conf")) -> str:
    """/etc/resolv.conf: the host's; off the host network without localhost nameservers (FilterResolvDNS),
    falling back to Google's public DNS when none is left."""
    text = host_file.read_text() if host_file.exists() else ""
    if network_mode == "host":
        return text
    kept = []
    for line in text.splitlines():
        match = _NAMESERVER_RE.match(line)
        if match and _is_localhost(match.group(1)):
            continue
        kept.append(line)
    if not any(_NAMESERVER_RE.match(line) for line in kept):
        kept += [f"nameserver {ip}" for ip in _DEFAULT_DNS]
    return "\n".join(kept) + "\n"


def _is_localhost(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
