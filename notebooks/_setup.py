"""What every notebook's setup cell does, in one place.

    daemon = start_daemon(globals().get("daemon"))   # re-running the cell keeps the running daemon
    minibuild = minibuild_cli(daemon)                 # minibuild("images") runs the CLI in this process
    app = context_dir({"Dockerfile": "FROM busybox:local\n"})
    ...
    remove_scratch()                                  # the last cell

`start_daemon` starts the real daemon (`embedded_daemon()`, the same code as `minibuild daemon`) in a
background thread, with a temporary data root and socket, and makes `busybox:local` offline from this
machine's static busybox. `SOURCE_DATE_EPOCH=0` makes its builds reproducible, so image IDs are stable.
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from minibuild.api.daemon import EmbeddedDaemon, embedded_daemon
from minibuild.cli.main import main as cli_main
from minibuild.image.busybox import create_busybox_image

# Every directory a notebook makes goes under one scratch directory, which its last cell removes
# (nbval kills the kernel: nothing registered to run at exit would).
SCRATCH = Path(tempfile.gettempdir()) / f"minibuild-notebook-{os.getpid()}"


def start_daemon(running: EmbeddedDaemon | None = None, **config: object) -> EmbeddedDaemon:
    """`running` if it still runs, else a new embedded daemon (with `config`) holding `busybox:local`."""
    os.environ["SOURCE_DATE_EPOCH"] = "0"  # created times and file times clamped to 0
    logging.getLogger("minibuild").addHandler(logging.NullHandler())  # the daemon's log stays out of cells
    if running is not None and running.running:
        return running
    daemon = embedded_daemon(**config)
    create_busybox_image(daemon.daemon.image_service, "busybox:local", source_date_epoch=0)
    return daemon


def minibuild_cli(daemon: EmbeddedDaemon) -> Callable[..., None]:
    """A `minibuild(*args)` that runs the command line against `daemon`, in this process."""

    def minibuild(*args: str) -> None:
        status = cli_main(["--host", daemon.host, *args])
        if status:
            print(f"(exit status {status})")

    return minibuild


def scratch_dir(prefix: str) -> Path:
    """A new directory under SCRATCH."""
    SCRATCH.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH))


def context_dir(files: dict[str, str | bytes]) -> Path:
    """A build context directory holding `files` (names may have directories)."""
    root = scratch_dir("ctx-")
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def remove_scratch() -> None:
    shutil.rmtree(SCRATCH, ignore_errors=True)
