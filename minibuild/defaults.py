"""Default locations of the daemon (moby cmd/dockerd/config_unix.go, daemon/config; rootless paths).

The data root holds the layer store, image store and references. dockerd uses /var/lib/docker, and
$XDG_DATA_HOME/docker when rootless; minibuild follows the same rule under its own name:
/var/lib/minibuild for root, else $XDG_DATA_HOME/minibuild (default ~/.local/share/minibuild).
"""

import os
from pathlib import Path


def default_data_root() -> Path:
    """/var/lib/minibuild as root, else $XDG_DATA_HOME/minibuild (~/.local/share/minibuild)."""
    if os.geteuid() == 0:
        return Path("/var/lib/minibuild")
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "minibuild"


def default_socket_path() -> Path:
    """The daemon's socket: /run/minibuild.sock as root, else $XDG_RUNTIME_DIR/minibuild.sock.

    dockerd uses /var/run/docker.sock, and $XDG_RUNTIME_DIR/docker.sock when rootless. Without
    XDG_RUNTIME_DIR a non-root user gets /tmp/minibuild-<uid>/minibuild.sock.
    """
    if os.geteuid() == 0:
        return Path("/run/minibuild.sock")
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.path.isabs(runtime_dir):
        return Path(runtime_dir) / "minibuild.sock"
    return Path("/tmp") / f"minibuild-{os.geteuid()}" / "minibuild.sock"


def default_host() -> str:
    """The address clients use when neither --host nor MINIBUILD_HOST says otherwise."""
    return "unix://" + str(default_socket_path())
