"""The build context: the request body unpacked, the Dockerfile found and parsed
(moby builder/remotecontext: detect.go, archive.go, tarsum.go, lazycontext.go, remote.go).

`detect(config, context_dir)` turns what the client sent into a `Source` and the parsed Dockerfile:

* the body is a tar (gzip, bzip2 or xz compressed, or not): it is unpacked into a fresh directory
  under the data root, safely (nothing can land outside it), and removed by `close()`;
* `remote=<url>` downloads the context instead: a tar, or a bare Dockerfile served as text/plain;
* the Dockerfile is `dockerfile=` (default `Dockerfile`, then `dockerfile`), resolved inside the
  context; Docker's errors: "Cannot locate specified Dockerfile: X", "the Dockerfile (X) cannot be
  empty", "forbidden path outside the build context: X ()";
* when `.dockerignore` lists the Dockerfile or itself, those are removed from the context (the only
  thing the daemon does with .dockerignore: filtering is the client's job).

`Source.hash(path)` is the cache key of a file for COPY/ADD: a sha256 over its tar header fields
(name, mode, owner, size, type, link target; not the time) and its content, tarsum's version 1
(minibuild.archive.tarsum). An unpacked context's files are hashed while they are written.
"""

import errno
import os
import re
import shutil
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import requests

from minibuild import errdefs
from minibuild.api.backend import BuildConfig
from minibuild.archive import ArchiveError, decompress_stream, follow_symlink_in_scope, untar
from minibuild.archive.tarsum import TarSum, file_hash
from minibuild.dockerfile import DockerfileError, ParseError, Result, parse
from minibuild.dockerfile.dockerignore import DockerignoreError, excluded, read_ignore_file

DEFAULT_DOCKERFILE_NAME = "Dockerfile"
CLIENT_SESSION_REMOTE = "client-session"
_MAX_PREAMBLE = 512
_ACCEPTABLE_REMOTE_MIME = re.compile(
    r"(?:application/(?:(?:x-)?tar|octet-stream|(?:(?:x-)?(?:gzip|bzip2?|xz)))|text/plain)"
)
_hashers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="context-hash")


class Source:
    """builder.Source: a directory of files, with lazily computed content hashes (lazycontext.go).

    An `owned` directory (an unpacked context, a download) is removed by `close()`.
    """

    def __init__(self, root: Path, *, owned: bool = False, tarsum: TarSum | None = None) -> None:
        self.root = Path(root)
        self.owned = owned
        self.tarsum = tarsum  # the hashes computed while the context was unpacked
        self.sums: dict[str, str] = {}

    def hash(self, path: str) -> str:
        """The tarsum-style hash of `path` (symlinks followed inside the root)."""
        target = full_path(self, path)
        rel = rel_path(self.root, target)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return rel  # Docker's answer for a dangling symlink: the path itself
        if rel not in self.sums:
            known = self.tarsum.lookup(rel, st) if self.tarsum is not None else None
            self.sums[rel] = known or file_hash(target, rel, st)
        return self.sums[rel]

    def hashes(self, paths: Iterable[str]) -> list[str | None]:
        """`hash` of each path, None where it cannot be hashed; files are read and hashed two at a
        time (hashlib and file reads release the GIL, so both cores work)."""

        def one(path: str) -> str | None:
            try:
                return self.hash(path)
            except (OSError, errdefs.DockerError):
                return None

        return list(_hashers.map(one, paths))

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.root, ignore_errors=True)


def full_path(source: Source, path: str) -> Path:
    """`path` in the context as a host path, symlinks resolved inside it (remotecontext.FullPath)."""
    root = os.path.abspath(source.root)
    joined = os.path.normpath(root + "/" + path)  # filepath.Join: an absolute path stays inside
    if joined != root and not joined.startswith(root + "/"):
        raise errdefs.System(f"forbidden path outside the build context: {path} ()")
    try:
        return follow_symlink_in_scope(joined, Path(root))
    except ArchiveError:
        raise errdefs.System(f"forbidden path outside the build context: {path} ()") from None


def rel_path(root: Path, path: Path) -> str:
    """`path` relative to `root`, with forward slashes (remotecontext.Rel)."""
    return os.path.relpath(path, root)


def from_archive(stream: BinaryIO, root: Path) -> Source:
    """Unpack a (maybe compressed) tar into the new directory `root`, hashing its files on the way
    (FromArchive, MakeTarSumContext)."""
    root.mkdir(mode=0o700, parents=True)
    tarsum = TarSum(root)
    source = Source(root, owned=True, tarsum=tarsum)
    try:
        try:
            untar(decompress_stream(stream), root, whiteouts="keep", observe=tarsum)
        finally:
            tarsum.close()
    except ArchiveError as err:
        source.close()
        raise errdefs.System(str(err)) from None
    except BaseException:
        source.close()
        raise
    return source


def detect(config: BuildConfig, context_dir: Path) -> tuple[Source | None, Result]:
    """The context (unpacked into the new directory `context_dir`) and the parsed Dockerfile (Detect)."""
    remote_url = config.options.remote_context
    dockerfile_path = config.options.dockerfile or DEFAULT_DOCKERFILE_NAME
    if remote_url == "":
        with open(config.source, "rb") as body:
            return with_dockerfile_from_context(from_archive(body, context_dir), dockerfile_path)
    if remote_url == CLIENT_SESSION_REMOTE:
        raise errdefs.InvalidParameter(
            "experimental session with v1 builder is no longer supported, use builder version v2 "
            "(BuildKit) instead"
        )
    if is_git_url(remote_url):
        # minibuild does not run git: it refuses with a reason instead of half-supporting it.
        raise errdefs.InvalidParameter(
            f"cannot build from git repository {remote_url}: minibuild does not clone git contexts; "
            "clone it and send the directory as the context"
        )
    if remote_url.startswith(("http://", "https://")):
        return new_url_remote(remote_url, dockerfile_path, context_dir)
    raise errdefs.System(f"remoteURL ({remote_url}) could not be recognized as URL")


def is_git_url(text: str) -> bool:
    """urlutil.IsGitURL."""
    if text.startswith(("http://", "https://")) and re.search(r"\.git(?:#.+)?$", text):
        return True
    return text.startswith(("git://", "github.com/", "git@"))


def new_url_remote(url: str, dockerfile_path: str, context_dir: Path) -> tuple[Source | None, Result]:
    """A context from a URL: a tar, or a Dockerfile served as text/plain (then there is no context)."""
    try:
        response = get_with_status_error(url)
    except errdefs.DockerError as err:
        raise type(err)(f"error downloading remote context {url}: {err.message}") from None
    with response:
        raw = response.raw
        raw.decode_content = True
        preamble = raw.read(_MAX_PREAMBLE)
        if not preamble:
            raise errdefs.System(f"error downloading remote context {url}: empty response")
        declared = response.headers.get("Content-Type", "").split(";")[0].strip()
        content_type = declared
        if not declared or declared == "application/octet-stream":
            content_type = "text/plain" if _looks_like_text(preamble) else "application/octet-stream"
        if not _ACCEPTABLE_REMOTE_MIME.fullmatch(content_type):
            raise errdefs.System(
                f'error downloading remote context {url}: unsupported Content-Type "{declared}"'
            )
        body = _Prefixed(preamble, raw)
        if content_type == "text/plain":
            return None, read_and_parse_dockerfile(dockerfile_path, body.read())
        return with_dockerfile_from_context(from_archive(body, context_dir), dockerfile_path)


def get_with_status_error(url: str) -> requests.Response:
    """GET `url`; Docker's errors for a failed request or a status >= 400 (GetWithStatusError)."""
    try:
        response = requests.get(url, stream=True, timeout=(30, 300))
    except requests.ConnectionError as err:
        raise errdefs.System(f'Get "{url}": {_connection_reason(url, err)}') from None
    except requests.RequestException as err:
        raise errdefs.System(f'Get "{url}": {err}') from None
    if response.status_code < 400:
        return response
    message = f"failed to GET {url} with status {response.status_code} {response.reason}"
    try:
        message += ": " + response.text.strip()
    except requests.RequestException:
        message += ": error reading body"
    finally:
        response.close()
    kind = {404: errdefs.NotFound, 400: errdefs.InvalidParameter, 401: errdefs.Unauthorized,
            403: errdefs.Forbidden}.get(response.status_code, errdefs.Unknown)  # fmt: skip
    raise kind(message)


def _connection_reason(url: str, err: requests.ConnectionError) -> str:
    """Go's wording for a refused connection; requests' own text otherwise."""
    pending: list[BaseException] = [err]
    seen: set[int] = set()
    while pending:
        cause = pending.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            parts = urllib.parse.urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
            return f"dial tcp {host}:{port}: connect: connection refused"
        linked = (cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args)
        pending += [c for c in linked if isinstance(c, BaseException)]
    return str(err)


def _looks_like_text(data: bytes) -> bool:
    """http.DetectContentType's text test, enough for a Dockerfile: no binary control bytes."""
    return not any(b < 0x20 and b not in (0x09, 0x0A, 0x0C, 0x0D, 0x1B) for b in data)


class _Prefixed:
    """A stream that first returns bytes already read."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def read(self, size: int = -1) -> bytes:
        if self.head:
            if size < 0:
                data, self.head = self.head + self.rest.read(), b""
                return data
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.rest.read() if size < 0 else self.rest.read(size)


def with_dockerfile_from_context(source: Source, dockerfile_path: str) -> tuple[Source, Result]:
    """Find, read and parse the Dockerfile of a context; the context is closed on any error."""
    try:
        try:
            path = full_path(source, dockerfile_path)
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            if dockerfile_path == DEFAULT_DOCKERFILE_NAME:
                lowercase = dockerfile_path.lower()
                if full_path(source, lowercase).is_file():
                    return with_dockerfile_from_context(source, lowercase)
            raise errdefs.System(f"Cannot locate specified Dockerfile: {dockerfile_path}") from None
        result = read_and_parse_dockerfile(dockerfile_path, data)
        remove_dockerfile(source, dockerfile_path)
        return source, result
    except BaseException:
        source.close()
        raise


def read_and_parse_dockerfile(name: str, data: bytes) -> Result:
    if not data:
        raise errdefs.InvalidParameter(f"the Dockerfile ({name}) cannot be empty")
    try:
        return parse(data)
    except DockerfileError as err:
        if isinstance(err, ParseError):
            raise errdefs.InvalidParameter(f"failed to parse {name}: {err}") from None
        raise errdefs.InvalidParameter(str(err)) from None


def remove_dockerfile(source: Source, *files: str) -> None:
    """Remove the Dockerfile and .dockerignore from the context when .dockerignore lists them."""
    try:
        ignore = full_path(source, ".dockerignore").read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return
    try:
        patterns = read_ignore_file(ignore)
    except DockerignoreError as err:
        raise errdefs.InvalidParameter(str(err)) from None
    for name in (".dockerignore", *files):
        if excluded(name, patterns):
            target = full_path(source, name)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
