"""Image commands: images, inspect, history, tag, rmi, save, load, import, busybox
(docker cli/command/image/list.go, history.go, tag.go, remove.go, save.go, load.go, import.go,
cli/command/system/inspect.go, cli/command/formatter/image.go, history.go).

Tables are laid out as Go's tabwriter lays them out (`docker images`: minimum width 10, padding 3).
`busybox` is minibuild's own: it makes the offline base image with `minibuild.image.busybox` and sends
it through the import endpoint, as `docker import` would. The layer is reproducible (SOURCE_DATE_EPOCH
clamps its times); its created time is the daemon's clock, as for any import.
"""

import argparse
import io
import json
import os
import tempfile
import time
from typing import Any

from minibuild import gojson
from minibuild.api.jsonmessage import display_json_messages_to_stream
from minibuild.api.units import human_duration, human_size_with_precision
from minibuild.cli.command import Command, Flag, StatusError
from minibuild.client.client import APIError


def tabwriter(rows: list[list[str]], minwidth: int = 10, padding: int = 3) -> str:
    """Go's text/tabwriter with padchar ' ': every column but the last padded to a common width."""
    if not rows:
        return ""
    widths = [0] * max(len(r) for r in rows)
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell) + padding, minwidth)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + row[-1:]
        lines.append("".join(cells))
    return "\n".join(lines) + "\n"


def truncate_id(image_id: str) -> str:
    """stringid.TruncateID: without `sha256:`, 12 characters."""
    return image_id.split(":", 1)[-1][:12]


def ellipsis(text: str, max_len: int) -> str:
    """stringutils.Ellipsis: cut to max_len runes, the last one `…`."""
    return text if len(text) <= max_len else text[: max_len - 1] + "…"


def _ago(created: int, now: float) -> str:
    return human_duration(now - created) + " ago"


def go_indent_json(value: Any) -> str:
    """The docker CLI's inspect output: Go JSON indented with four spaces."""
    compact = json.loads(gojson.dumps(value))  # Go's escapes survive json.dumps(ensure_ascii=False)
    text = json.dumps(compact, indent=4, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --- images ---------------------------------------------------------------------------------------------


def run_images(ns: argparse.Namespace, cli: Any) -> int:
    filters: dict[str, list[str]] = {}
    for item in ns.filter:
        key, eq, value = item.partition("=")
        if not eq:
            raise StatusError(
                "Bad format of filter (expected name=value)\nSee 'minibuild images --help'.", 125
            )
        filters.setdefault(key.strip().lower(), []).append(value)
    if ns.args:
        filters.setdefault("reference", []).append(ns.args[0])
    images = cli.client().image_list(all=ns.all, filters=filters or None)
    if ns.quiet:
        seen = []
        for image in images:
            shown = image["Id"] if ns.no_trunc else truncate_id(image["Id"])
            if shown not in seen:
                seen.append(shown)
        cli.stdout.write("".join(f"{s}\n" for s in seen))
        return 0
    rows = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]]
    now = cli.clock()
    for image in images:
        image_id = image["Id"] if ns.no_trunc else truncate_id(image["Id"])
        created = _ago(int(image.get("Created") or 0), now)
        size = human_size_with_precision(float(image.get("Size") or 0), 3)
        for repo_tag in image.get("RepoTags") or ["<none>:<none>"]:
            repo, _, tag = repo_tag.rpartition(":")
            rows.append([repo, tag, image_id, created, size])
    cli.stdout.write(tabwriter(rows))
    return 0


IMAGES = Command(
    "images",
    "[OPTIONS] [REPOSITORY[:TAG]]",
    "List images",
    run_images,
    [
        Flag(("-a", "--all"), "Show all images (default hides intermediate images)"),
        Flag(("-f", "--filter"), "Filter output based on conditions provided", "list", type_word="filter"),
        Flag(("--no-trunc",), "Don't truncate output"),
        Flag(("-q", "--quiet"), "Only show numeric IDs"),
    ],
    args=(0, 1),
)


# --- inspect --------------------------------------------------------------------------------------------


def run_inspect(ns: argparse.Namespace, cli: Any) -> int:
    found, missing = [], []
    for name in ns.args:
        try:
            found.append(cli.client().image_inspect(name))
        except APIError as err:
            if err.status_code != 404:
                raise
            missing.append(name)
    cli.stdout.write(go_indent_json(found) + "\n")
    if missing:
        raise StatusError("\n".join(f"Error: No such object: {name}" for name in missing), 1)
    return 0


INSPECT = Command(
    "inspect",
    "[OPTIONS] NAME|ID [NAME|ID...]",
    "Return low-level information on Docker objects",
    run_inspect,
    [
        Flag(
            ("--type",),
            "Return JSON for specified type (minibuild has images only)",
            "string",
            choices=("", "image"),
        )
    ],  # fmt: skip
    args=(1, None),
)


# --- history --------------------------------------------------------------------------------------------


def run_history(ns: argparse.Namespace, cli: Any) -> int:
    history = cli.client().image_history(ns.args[0])
    if ns.quiet:
        cli.stdout.write("".join(f"{h['Id'] if ns.no_trunc else truncate_id(h['Id'])}\n" for h in history))
        return 0
    now = cli.clock()
    rows = [["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
    for h in history:
        image_id = h["Id"] if ns.no_trunc or h["Id"] == "<missing>" else truncate_id(h["Id"])
        created_by = (h.get("CreatedBy") or "").replace("\t", " ")
        if not ns.no_trunc:
            created_by = ellipsis(created_by, 45)
        if ns.human:
            created = _ago(int(h.get("Created") or 0), now)
        else:
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(h.get("Created") or 0)))
        size = (
            human_size_with_precision(float(h.get("Size") or 0), 3) if ns.human else str(h.get("Size") or 0)
        )
        rows.append([image_id, created, created_by, size, h.get("Comment") or ""])
    cli.stdout.write(tabwriter(rows))
    return 0


HISTORY = Command(
    "history",
    "[OPTIONS] IMAGE",
    "Show the history of an image",
    run_history,
    [
        Flag(("-H", "--human"), "Print sizes and dates in human readable format", default=True),
        Flag(("--no-trunc",), "Don't truncate output"),
        Flag(("-q", "--quiet"), "Only show numeric IDs"),
    ],
    args=(1, 1),
)


# --- tag, rmi -------------------------------------------------------------------------------------------


def run_tag(ns: argparse.Namespace, cli: Any) -> int:
    try:
        cli.client().image_tag(ns.args[0], ns.args[1])
    except ValueError as err:
        raise StatusError(str(err), 1)
    return 0


TAG = Command("tag", "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
              "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", run_tag, args=(2, 2))  # fmt: skip


def run_rmi(ns: argparse.Namespace, cli: Any) -> int:
    errors = []
    for name in ns.args:
        try:
            deleted = cli.client().image_remove(name, force=ns.force, prune_children=not ns.no_prune)
        except APIError as err:
            errors.append(str(err))
            continue
        for entry in deleted:
            if entry.get("Deleted"):
                cli.stdout.write(f"Deleted: {entry['Deleted']}\n")
            else:
                cli.stdout.write(f"Untagged: {entry.get('Untagged', '')}\n")
    if errors:
        raise StatusError("\n".join(errors), 1)
    return 0


RMI = Command(
    "rmi",
    "[OPTIONS] IMAGE [IMAGE...]",
    "Remove one or more images",
    run_rmi,
    [
        Flag(("-f", "--force"), "Force removal of the image"),
        Flag(("--no-prune",), "Do not delete untagged parents"),
    ],
    args=(1, None),
)


# --- save, load, import ---------------------------------------------------------------------------------


def copy_to_file(path: str, chunks: Any) -> None:
    """command.CopyToFile: write next to the target, then rename, so a failure leaves no partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".docker_temp_", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run_save(ns: argparse.Namespace, cli: Any) -> int:
    if not ns.output and cli.stdout.isatty():
        raise StatusError("cowardly refusing to save to a terminal. Use the -o flag or redirect", 1)
    with cli.client().image_save(ns.args) as resp:
        if ns.output:
            copy_to_file(ns.output, resp.iter_bytes())
        else:
            out = cli.stdout.buffer if hasattr(cli.stdout, "buffer") else cli.stdout
            for chunk in resp.iter_bytes():
                out.write(chunk)
            out.flush()
    return 0


SAVE = Command(
    "save",
    "[OPTIONS] IMAGE [IMAGE...]",
    "Save one or more images to a tar archive (streamed to STDOUT by default)",
    run_save,
    [Flag(("-o", "--output"), "Write to a file, instead of STDOUT", "string")],
    args=(1, None),
)


def _input(ns_input: str, cli: Any, what: str) -> Any:
    if ns_input and ns_input != "-":
        try:
            return open(ns_input, "rb")
        except OSError as err:
            raise StatusError(f"open {ns_input}: {(err.strerror or str(err)).lower()}", 1)
    if cli.stdin.isatty():
        raise StatusError(f"requested {what} from stdin, but stdin is empty", 1)
    return cli.stdin.buffer if hasattr(cli.stdin, "buffer") else cli.stdin


def run_load(ns: argparse.Namespace, cli: Any) -> int:
    source = _input(ns.input, cli, "load")
    quiet = ns.quiet or not cli.stdout.isatty()  # the CLI shows load progress on terminals only
    with cli.client().image_load(_read_chunks(source), quiet=quiet) as resp:
        if resp.json:
            display_json_messages_to_stream(resp.messages(), cli.stdout)
        else:
            cli.stdout.write(resp.body.read().decode(errors="replace"))
    return 0


LOAD = Command(
    "load",
    "[OPTIONS]",
    "Load an image from a tar archive or STDIN",
    run_load,
    [
        Flag(("-i", "--input"), "Read from tar archive file, instead of STDIN", "string"),
        Flag(("-q", "--quiet"), "Suppress the load output"),
    ],
)


def _read_chunks(source: Any, size: int = 1 << 16) -> Any:
    while chunk := source.read(size):
        yield chunk


def run_import(ns: argparse.Namespace, cli: Any) -> int:
    source = _input(ns.args[0], cli, "import")
    ref = ns.args[1] if len(ns.args) > 1 else ""
    with cli.client().image_import(
        _read_chunks(source), ref, message=ns.message, changes=ns.change, platform=ns.platform
    ) as resp:
        display_json_messages_to_stream(resp.messages(), cli.stdout)
    return 0


IMPORT = Command(
    "import",
    "[OPTIONS] file|- [REPOSITORY[:TAG]]",
    "Import the contents from a tarball to create a filesystem image",
    run_import,
    [
        Flag(("-c", "--change"), "Apply Dockerfile instruction to the created image", "list"),
        Flag(("-m", "--message"), "Set commit message for imported image", "string"),
        Flag(("--platform",), "Set platform if server is multi-platform capable", "string"),
    ],
    args=(1, None),  # RequiresMinArgs(1): the docker CLI ignores arguments after the repository
)


def run_busybox(ns: argparse.Namespace, cli: Any) -> int:
    """Make the offline base image: the host's static busybox as a rootfs, imported through the API."""
    from minibuild.image.busybox import BUSYBOX_CHANGES, BusyboxError, write_busybox_rootfs

    epoch = cli.env.get("SOURCE_DATE_EPOCH", "")
    try:
        rootfs = io.BytesIO()
        write_busybox_rootfs(rootfs, source_date_epoch=int(epoch) if epoch.isdigit() else None)
    except BusyboxError as err:
        raise StatusError(str(err), 1)
    with cli.client().image_import(rootfs.getvalue(), ns.tag, changes=BUSYBOX_CHANGES) as resp:
        display_json_messages_to_stream(resp.messages(), cli.stdout)
    return 0


BUSYBOX = Command(
    "busybox",
    "[OPTIONS]",
    "Create a busybox image offline from this host's static busybox (package busybox-static)",
    run_busybox,
    [Flag(("-t", "--tag"), "Name of the image", "string", default="busybox:latest")],
)
