"""`minibuild version`, `minibuild builder prune`, `minibuild daemon` (docker cli/command/system/version.go,
cli/command/builder/prune.go; moby cmd/dockerd/docker.go, registry flags of cmd/dockerd/options.go)."""

import argparse
import platform
from pathlib import Path
from typing import Any

import minibuild
from minibuild.api import versions
from minibuild.api.daemon import DaemonConfig, run_daemon
from minibuild.api.platforms import host_arch
from minibuild.api.types import BuildCachePruneOptions
from minibuild.api.units import human_size, ram_in_bytes
from minibuild.archive.limits import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SIZE
from minibuild.cli.command import Command, Flag, StatusError
from minibuild.client.client import ClientError
from minibuild.defaults import default_data_root, default_host
from minibuild.distribution.config import (
    DEFAULT_CERTS_DIR,
    MAX_CONCURRENT_DOWNLOADS,
    MAX_CONCURRENT_UPLOADS,
    MAX_DOWNLOAD_ATTEMPTS,
)


def _tabbed(lines: list[tuple[str, str]]) -> str:
    """tabwriter(out, 20, 1, 1, ' ', 0) over `label:\tvalue` lines."""
    width = max([20] + [len(label) + 1 for label, _ in lines])
    return "".join(f"{label.ljust(width)}{value}\n" for label, value in lines)


def run_version(ns: argparse.Namespace, cli: Any) -> int:
    client = cli.client()
    server: dict[str, Any] | None = None
    error: Exception | None = None
    try:
        server = client.server_version()
    except ClientError as err:
        error = err
    api = client.version
    downgraded = f" (downgraded from {versions.DEFAULT_VERSION})" if api != versions.DEFAULT_VERSION else ""
    py = f"python{platform.python_version()}"
    lines = [
        (" Version:", minibuild.__version__),
        (" API version:", api + downgraded),
        (" Go version:", py),  # the interpreter: minibuild is Python
        (" Git commit:", ""),
        (" Built:", ""),
        (" OS/Arch:", f"linux/{host_arch()}"),
        (" Experimental:", "false"),
    ]
    out = "Client:\n" + _tabbed(lines)
    if server is not None:
        name = (server.get("Platform") or {}).get("Name", "")
        out += "\nServer:" + (f" {name}" if name else "") + "\n"
        for component in server.get("Components") or []:
            details = component.get("Details") or {}
            out += f" {component.get('Name', '')}:\n"
            if component.get("Name") == "Engine":
                rows = [
                    ("  Version:", component.get("Version", "")),
                    ("  API version:", f"{details.get('ApiVersion', '')} "
                     f"(minimum version {details.get('MinAPIVersion', '')})"),
                    ("  Go version:", details.get("GoVersion", "")),
                    ("  Git commit:", details.get("GitCommit", "")),
                    ("  Built:", details.get("BuildTime", "")),
                    ("  OS/Arch:", f"{details.get('Os', '')}/{details.get('Arch', '')}"),
                    ("  Experimental:", details.get("Experimental", "")),
                ]  # fmt: skip
            else:
                rows = [("  Version:", component.get("Version", ""))]
                rows += [(f"  {k}:", str(v)) for k, v in sorted(details.items())]
            out += _tabbed(rows)
    cli.stdout.write(out)
    if error is not None:
        raise error
    return 0


VERSION = Command("version", "[OPTIONS]", "Show the Docker version information", run_version)


def run_builder_prune(ns: argparse.Namespace, cli: Any) -> int:
    filters: dict[str, str | None] = {}
    for item in ns.filter:
        key, eq, value = item.partition("=")
        if not eq:
            raise StatusError(
                "Bad format of filter (expected name=value)\nSee 'minibuild builder prune --help'.", 125
            )
        filters[key.strip().lower()] = value
    try:
        keep = ram_in_bytes(ns.keep_storage) if ns.keep_storage else 0
    except ValueError as err:
        raise StatusError(f'invalid argument "{ns.keep_storage}" for "--keep-storage" flag: {err}', 125)
    if not ns.force:
        warning = "WARNING! This will remove all {}build cache. Are you sure you want to continue? [y/N] "
        cli.stdout.write(warning.format("" if ns.all else "dangling "))
        cli.stdout.flush()
        answer = cli.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    report = cli.client().build_cache_prune(
        BuildCachePruneOptions(all=ns.all, keep_storage=keep, filters=filters)
    )
    output = ""
    if report.caches_deleted:
        output = "Deleted build cache objects:\n" + "".join(f"{c}\n" for c in report.caches_deleted)
    # fmt.Fprintln(out, output, "Total reclaimed space:", size): Println puts a space between operands.
    cli.stdout.write(f"{output} Total reclaimed space: {human_size(report.space_reclaimed)}\n")
    return 0


BUILDER_PRUNE = Command(
    "prune",
    "",
    "Remove build cache",
    run_builder_prune,
    [
        Flag(("-a", "--all"), "Remove all unused build cache, not just dangling ones"),
        Flag(("--filter",), "Provide filter values (e.g. 'until=24h')", "list", type_word="filter"),
        Flag(("-f", "--force"), "Do not prompt for confirmation"),
        Flag(("--keep-storage",), "Amount of disk space to keep for cache", "string", type_word="bytes"),
    ],
)


def _archive_limit(value: str, flag: str, default: int, parse: Any) -> int | None:
    """A --max-archive-* value: the default when absent, None (no limit) for 0."""
    if not value:
        return default
    try:
        limit = parse(value)
        if limit < 0:
            raise ValueError("must not be negative")
    except ValueError as err:
        raise StatusError(f'invalid argument "{value}" for "{flag}" flag: {err}', 125)
    return limit or None


def _int_flag(value: str, flag: str, default: int) -> int:
    """An int flag's value as pflag parses it (the daemon validates the range); the default when absent."""
    if not value:
        return default
    try:
        return int(value, 10)
    except ValueError:
        reason = f'strconv.ParseInt: parsing "{value}": invalid syntax'
        raise StatusError(f'invalid argument "{value}" for "{flag}" flag: {reason}', 125)


def run_daemon_command(ns: argparse.Namespace, cli: Any) -> int:
    config = DaemonConfig(
        hosts=list(ns.host) or [default_host()],
        data_root=Path(ns.data_root) if ns.data_root else default_data_root(),
        experimental=ns.experimental,
        debug=ns.debug,
        insecure_registries=list(ns.insecure_registry),
        registry_mirrors=list(ns.registry_mirror),
        registry_certs_dir=Path(ns.registry_certs_dir) if ns.registry_certs_dir else DEFAULT_CERTS_DIR,
        max_archive_size=_archive_limit(
            ns.max_archive_size, "--max-archive-size", DEFAULT_MAX_SIZE, ram_in_bytes
        ),
        max_archive_entries=_archive_limit(
            ns.max_archive_entries, "--max-archive-entries", DEFAULT_MAX_ENTRIES, int
        ),
        max_concurrent_downloads=_int_flag(
            ns.max_concurrent_downloads, "--max-concurrent-downloads", MAX_CONCURRENT_DOWNLOADS
        ),
        max_concurrent_uploads=_int_flag(
            ns.max_concurrent_uploads, "--max-concurrent-uploads", MAX_CONCURRENT_UPLOADS
        ),
        max_download_attempts=_int_flag(
            ns.max_download_attempts, "--max-download-attempts", MAX_DOWNLOAD_ATTEMPTS
        ),
    )
    return run_daemon(config)


DAEMON = Command(
    "daemon",
    "[OPTIONS]",
    "Run the minibuild daemon (the Engine API, version 1.40)",
    run_daemon_command,
    [
        Flag(
            ("--data-root",), f"Root directory of persistent state (default {default_data_root()})", "string"
        ),
        Flag(("-D", "--debug"), "Enable debug mode"),
        Flag(("--experimental",), "Enable experimental features (squash)"),
        Flag(("-H", "--host"), f"Daemon socket(s) to listen on (default {default_host()})", "list"),
        Flag(("--insecure-registry",), "Enable insecure registry communication", "list"),
        Flag(
            ("--max-archive-entries",),
            f"Most entries of an archive the daemon unpacks, 0 for no limit (default {DEFAULT_MAX_ENTRIES})",
            "string",
            type_word="int",
        ),
        Flag(
            ("--max-archive-size",),
            "Most file content an archive the daemon unpacks may hold, 0 for no limit "
            f"(default {DEFAULT_MAX_SIZE // 1024**3}GiB)",
            "string",
            type_word="bytes",
        ),
        Flag(
            ("--max-concurrent-downloads",),
            f"Set the max concurrent downloads for each pull (default {MAX_CONCURRENT_DOWNLOADS})",
            "string",
            type_word="int",
        ),
        Flag(
            ("--max-concurrent-uploads",),
            f"Set the max concurrent uploads for each push (default {MAX_CONCURRENT_UPLOADS})",
            "string",
            type_word="int",
        ),
        Flag(
            ("--max-download-attempts",),
            f"Set the max download attempts for each pull (default {MAX_DOWNLOAD_ATTEMPTS})",
            "string",
            type_word="int",
        ),
        Flag(
            ("--registry-certs-dir",),
            f"Per-registry CA roots and client certificates (default {DEFAULT_CERTS_DIR})",
            "string",
        ),
        Flag(("--registry-mirror",), "Preferred registry mirror", "list"),
    ],
)
