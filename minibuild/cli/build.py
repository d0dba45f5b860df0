"""`minibuild build` (docker cli/command/image/build.go, build/context.go).

The client half of a build: check the tags, find the context and the Dockerfile, pack the context into
a tar (honouring .dockerignore, optionally compressed), stream it to `POST /build` while counting the
bytes (`Sending build context to Docker daemon  2.048kB`), then print the answer. Exit status: 0, the
failing RUN's exit code (`errorDetail.code`), or 1 for other errors (`Error response from daemon: …`
when the daemon refused the request).
"""

import argparse
import io
import os
import secrets
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

import requests

from minibuild.api.jsonmessage import JSONError, JSONMessage, JSONProgress, display_json_messages_to_stream
from minibuild.api.streamformatter import raw_format_progress, raw_format_status
from minibuild.api.types import BUILDER_BUILDKIT, BUILDER_V1, ImageBuildOptions
from minibuild.cli.command import Command, Flag, StatusError
from minibuild.cli.progress import display_buildkit_stream, resolve_progress_mode
from minibuild.client import context as buildcontext
from minibuild.distribution.credentials import CredentialHelperError
from minibuild.image import reference

_ACTION = "Sending build context to Docker daemon"
_UPDATE_EVERY = 512 * 1024  # progress.Reader: at most every 512 kB ...
_MIN_INTERVAL = 0.1  # ... and at most ten times a second


def builder_version(flag: str, env: dict[str, str]) -> str:
    """--builder, else DOCKER_BUILDKIT (a Go boolean), else the classic builder."""
    if flag:
        return BUILDER_BUILDKIT if flag == "buildkit" else BUILDER_V1
    value = env.get("DOCKER_BUILDKIT", "")
    if not value:
        return BUILDER_V1
    truth = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
    falsity = {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
    if value in truth:
        return BUILDER_BUILDKIT
    if value in falsity:
        return BUILDER_V1
    raise StatusError(
        f'DOCKER_BUILDKIT environment variable expects boolean value: strconv.ParseBool: parsing "{value}": '
        "invalid syntax",
        1,
    )


def convert_kv_strings_to_map_with_nil(values: list[str], env: dict[str, str]) -> dict[str, str | None]:
    """--build-arg: `K=V`; a bare `K` takes K from the environment, or stays null (reported if unused)."""
    out: dict[str, str | None] = {}
    for item in values:
        key, eq, value = item.partition("=")
        out[key] = value if eq else env.get(key)
    return out


def convert_kv_strings_to_map(values: list[str]) -> dict[str, str]:
    """--label: `K=V`, or a bare `K` with an empty value."""
    return {k: v for k, _, v in (item.partition("=") for item in values)}


class _UploadProgress:
    """progress.NewProgressReader over the context chunks: counts what has been handed to the socket.

    Every update goes to `out` (stdout, or the quiet buffer) when `live` (stdout is a terminal), each
    line ended by CR so the next draws over it; otherwise only the last one, when the body ends
    (the docker CLI's lastProgressOutput).
    """

    def __init__(self, chunks: Iterable[bytes], out: TextIO, live: bool, clock: Any) -> None:
        self.chunks, self.out, self.live, self.clock = chunks, out, live, clock
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        last_update, last_time = 0, 0.0
        for chunk in self.chunks:
            self.sent += len(chunk)
            yield chunk
            if self.live and self.sent - last_update > _UPDATE_EVERY:
                now = self.clock()
                if now - last_time >= _MIN_INTERVAL:
                    self.out.write(raw_format_progress(_ACTION, JSONProgress(self.sent)).decode())
                    self.out.flush()
                    last_update, last_time = self.sent, now
        # The last update, then the raw formatter's newline: "…  2.048kB\r\r\n", as the CLI prints it.
        self.out.write(
            (raw_format_progress(_ACTION, JSONProgress(self.sent)) + raw_format_status("")).decode()
        )
        self.out.flush()


def _stdin_context(stdin: Any, dockerfile_name: str) -> tuple[Iterable[bytes], str]:
    """GetContextFromReader: stdin is a (maybe compressed) tar, or else a Dockerfile."""
    raw = stdin.buffer if hasattr(stdin, "buffer") else stdin
    head = raw.read(512)
    if buildcontext.is_archive(head):

        def rest() -> Iterator[bytes]:
            yield head
            while chunk := raw.read(1 << 16):
                yield chunk

        return rest(), dockerfile_name
    if dockerfile_name == "-":
        raise StatusError("unable to prepare context: build context is not an archive", 1)
    content = head + raw.read()
    return buildcontext.tar_single_dockerfile(content), buildcontext.DEFAULT_DOCKERFILE_NAME


def _url_context(url: str, dockerfile_name: str) -> tuple[Iterable[bytes], str]:
    """GetContextFromURL: download; an archive is the context, anything else is the Dockerfile."""
    try:
        resp = requests.get(url, stream=True, timeout=60)
        resp.raise_for_status()
    except requests.RequestException as err:
        raise StatusError(f"unable to prepare context: unable to download remote context {url}: {err}", 1)
    chunks = resp.iter_content(1 << 16)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= 512:
            break
    if buildcontext.is_archive(head):

        def rest() -> Iterator[bytes]:
            yield head
            yield from chunks

        return rest(), dockerfile_name or buildcontext.DEFAULT_DOCKERFILE_NAME
    content = head + b"".join(chunks)
    return buildcontext.tar_single_dockerfile(content), buildcontext.DEFAULT_DOCKERFILE_NAME


def _is_git_url(spec: str) -> bool:
    return spec.startswith(("git://", "github.com/", "git@")) or (spec.startswith("http") and ".git" in spec)


def prepare_context(ns: argparse.Namespace, stdin: Any) -> tuple[Iterable[bytes], str]:
    """(tar chunks, the Dockerfile's name in the context) for the PATH | URL | - argument."""
    specified = ns.args[0]
    if specified == "-":
        if ns.file == "-":
            raise StatusError("invalid argument: can't use stdin for both build context and dockerfile", 1)
        return _stdin_context(stdin, ns.file)
    try:
        if os.path.isdir(specified):
            context_dir, rel = buildcontext.get_context_from_local_dir(specified, ns.file)
            dockerfile_content = None
            if ns.file == "-":
                raw = stdin.buffer if hasattr(stdin, "buffer") else stdin
                dockerfile_content = raw.read()
            elif rel.startswith(".." + os.sep):
                # A Dockerfile outside the context travels inside it, under a random name.
                with open(os.path.join(context_dir, rel), "rb") as f:
                    dockerfile_content = f.read()
            excludes = buildcontext.read_dockerignore(context_dir)
            name, chunks = buildcontext.tar_context(
                context_dir, rel, excludes, dockerfile_content=dockerfile_content
            )
            return chunks, name
    except buildcontext.ContextError as err:
        message = str(err)
        if not message.startswith("error checking context"):
            message = f"unable to prepare context: {message}"
        raise StatusError(message, 1)
    if _is_git_url(specified):
        raise StatusError(f"unable to prepare context: minibuild does not clone git contexts: {specified}", 1)
    if specified.startswith(("http://", "https://")):
        return _url_context(specified, ns.file)
    raise StatusError(f'unable to prepare context: path "{specified}" not found', 1)


def validate_tags(tags: list[str]) -> None:
    """validateTag: every -t must be a valid reference (checked before any request)."""
    for tag in tags:
        try:
            reference.parse_normalized_named(tag)
        except reference.InvalidReference as err:
            raise StatusError(
                f'invalid argument "{tag}" for "-t, --tag" flag: {err}\nSee \'minibuild build --help\'.', 125
            )


def build_auth_configs(cli: Any) -> dict[str, Any]:
    """X-Registry-Config's content: GetAllCredentials (config file, credsStore, credHelpers); a failing
    credential helper leaves no credentials at all, the error ignored as the docker CLI ignores it."""
    try:
        return cli.credentials()
    except CredentialHelperError:
        return {}


def run_build(ns: argparse.Namespace, cli: Any) -> int:
    env = cli.env
    version = builder_version(ns.builder, env)
    validate_tags(ns.tag)
    if ns.compress and not ns.compression:
        ns.compression = "gzip"
    compression = ns.compression or "identity"
    if ns.iidfile:
        try:
            os.remove(ns.iidfile)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise StatusError(f"Removing image ID file: {err}", 1)

    progress_buffer = io.StringIO() if ns.quiet else cli.stdout
    build_buffer = io.StringIO() if ns.quiet else cli.stdout
    chunks, dockerfile = prepare_context(ns, cli.stdin)
    live = cli.stdout.isatty()  # checked even when quiet, as the docker CLI does: then drawn in the buffer
    body = _UploadProgress(buildcontext.compress(chunks, compression), progress_buffer, live, cli.clock)

    options = ImageBuildOptions(
        tags=list(ns.tag),
        suppress_output=ns.quiet,
        no_cache=ns.no_cache,
        remove=ns.rm,
        force_remove=ns.force_rm,
        pull_parent=ns.pull,
        dockerfile=dockerfile,
        build_args=convert_kv_strings_to_map_with_nil(ns.build_arg, env),
        labels=convert_kv_strings_to_map(ns.label),
        target=ns.target,
        network_mode=ns.network,
        platform=ns.platform or env.get("DOCKER_DEFAULT_PLATFORM", ""),
        squash=ns.squash,
        cache_from=list(ns.cache_from),
        extra_hosts=list(ns.add_host),
        version=version,
        build_id=secrets.token_hex(32) if version == BUILDER_BUILDKIT else "",
        auth_configs=build_auth_configs(cli),
    )
    client = cli.client()
    image_id = ""

    def on_aux(jm: JSONMessage) -> None:
        nonlocal image_id
        if isinstance(jm.aux, dict) and "ID" in jm.aux:
            image_id = str(jm.aux["ID"])

    def set_image_id(value: str) -> None:
        nonlocal image_id
        image_id = value

    try:
        response = client.image_build(iter(body), options)
    except Exception:
        if ns.quiet:
            cli.stderr.write(progress_buffer.getvalue())
        raise
    try:
        if version == BUILDER_BUILDKIT and not ns.quiet:
            mode = resolve_progress_mode(ns.progress, cli.stderr)
            display_buildkit_stream(response.messages(), build_buffer, cli.stderr, mode, set_image_id)
        else:
            display_json_messages_to_stream(response.messages(), build_buffer, on_aux)
    except JSONError as err:
        if ns.quiet:
            cli.stderr.write(progress_buffer.getvalue() + build_buffer.getvalue())
        raise StatusError(err.message, err.code or 1)
    except KeyboardInterrupt:
        if options.build_id:
            client.build_cancel(options.build_id)
        raise
    finally:
        response.close()

    if ns.quiet:
        image_id = build_buffer.getvalue()
        cli.stdout.write(image_id)
        image_id = image_id.strip()
    if ns.iidfile:
        if not image_id:
            raise StatusError(f"Server did not provide an image ID. Cannot write {ns.iidfile}", 1)
        with open(ns.iidfile, "w") as f:
            f.write(image_id)
    return 0


BUILD = Command(
    "build",
    "[OPTIONS] PATH | URL | -",
    "Build an image from a Dockerfile",
    run_build,
    [
        Flag(("--add-host",), "Add a custom host-to-IP mapping (host:ip)", "list"),
        Flag(("--build-arg",), "Set build-time variables", "list"),
        Flag(
            ("--builder",),
            "Builder to use: v1 (classic) or buildkit (default from DOCKER_BUILDKIT)",
            "string",
            choices=("", "v1", "buildkit"),
        ),
        Flag(("--cache-from",), "Images to consider as cache sources", "list", type_word="strings"),
        Flag(("--compress",), "Compress the build context using gzip"),
        Flag(
            ("--compression",),
            "Compression of the build context: identity, gzip, bzip2 or xz",
            "string",
            choices=("", *buildcontext.COMPRESSIONS),
        ),
        Flag(("-f", "--file"), "Name of the Dockerfile (Default is 'PATH/Dockerfile')", "string"),
        Flag(("--force-rm",), "Always remove intermediate containers"),
        Flag(("--iidfile",), "Write the image ID to the file", "string"),
        Flag(("--label",), "Set metadata for an image", "list"),
        Flag(
            ("--network",),
            "Set the networking mode for the RUN instructions during build",
            "string",
            default="default",
        ),
        Flag(("--no-cache",), "Do not use cache when building the image"),
        Flag(("--platform",), "Set platform if server is multi-platform capable", "string"),
        Flag(
            ("--progress",),
            "Set type of progress output (auto, plain, tty). Use plain to show container output",
            "string",
            default="auto",
            choices=("auto", "plain", "tty"),
        ),
        Flag(("--pull",), "Always attempt to pull a newer version of the image"),
        Flag(("-q", "--quiet"), "Suppress the build output and print image ID on success"),
        Flag(("--rm",), "Remove intermediate containers after a successful build", default=True),
        Flag(("--squash",), "Squash newly built layers into a single new layer"),
        Flag(("-t", "--tag"), "Name and optionally a tag in the 'name:tag' format", "list"),
        Flag(("--target",), "Set the target build stage to build.", "string"),
    ],  # fmt: skip
    args=(1, 1),
)
