"""The build context: a directory packed into a tar stream (docker cli/command/image/build/context.go,
moby pkg/archive TarWithOptions).

`get_context_from_local_dir` resolves the context directory and the Dockerfile the way the docker CLI
does (`-f` is relative to the current directory; `dockerfile` is tried when `Dockerfile` is missing).
`tar_context` yields the tar in chunks, never holding a file in memory: files matched by
.dockerignore are left out (the Dockerfile and .dockerignore always go), entries carry uid/gid 0 and
empty owner names, modes and mtimes (whole seconds) are kept, hard links are sent once and then as
links, and the stream ends with two zero blocks like Go's tar writer. `compress` wraps it in gzip
(`--compress`), bzip2 or xz. A Dockerfile from stdin or from outside the context travels as
`.dockerfile.<random>`, named in .dockerignore so the daemon drops it after reading it.
"""

import bz2
import lzma
import os
import secrets
import stat
import tarfile
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from minibuild.dockerfile.dockerignore import DockerignoreError, read_ignore_file, walk_context

DEFAULT_DOCKERFILE_NAME = "Dockerfile"
COMPRESSIONS = ("identity", "gzip", "bzip2", "xz")
_BLOCK = 512
_CHUNK = 1 << 16


class ContextError(Exception):
    """The context cannot be prepared; str() is the docker CLI's wording."""


def resolve_and_validate_context_path(given: str) -> Path:
    """ResolveAndValidateContextPath: an absolute, symlink-free path to an existing directory."""
    try:
        root = Path(os.path.realpath(given, strict=True))
    except OSError as err:
        raise ContextError(f"unable to evaluate symlinks in context path: {_go_os_error(err, given)}")
    if not root.is_dir():
        raise ContextError(f"context must be a directory: {root}")
    return root


def _go_os_error(err: OSError, path: str) -> str:
    reason = {2: "no such file or directory", 13: "permission denied", 20: "not a directory"}.get(
        err.errno or 0, (err.strerror or str(err)).lower()
    )
    return f"lstat {os.path.abspath(path)}: {reason}"


def get_dockerfile_rel_path(context_dir: Path, given: str) -> str:
    """getDockerfileRelPath: the Dockerfile's path relative to the context (may start with `../`)."""
    if given == "-":
        return given
    dockerfile = given
    if not dockerfile:
        dockerfile = str(context_dir / DEFAULT_DOCKERFILE_NAME)
        lower = context_dir / DEFAULT_DOCKERFILE_NAME.lower()
        if not os.path.lexists(dockerfile) and os.path.lexists(lower):
            dockerfile = str(lower)
    if not os.path.isabs(dockerfile):
        dockerfile = str(context_dir / dockerfile)
    try:
        resolved = os.path.realpath(dockerfile, strict=True)
    except OSError as err:
        raise ContextError(f"unable to evaluate symlinks in Dockerfile path: {_go_os_error(err, dockerfile)}")
    return os.path.relpath(resolved, context_dir)


def get_context_from_local_dir(local_dir: str, dockerfile_name: str) -> tuple[Path, str]:
    """GetContextFromLocalDir: (context directory, Dockerfile path relative to it)."""
    context_dir = resolve_and_validate_context_path(local_dir)
    if dockerfile_name and dockerfile_name != "-":
        dockerfile_name = os.path.abspath(dockerfile_name)  # -f is relative to the current directory
    return context_dir, get_dockerfile_rel_path(context_dir, dockerfile_name)


def read_dockerignore(context_dir: Path) -> list[str]:
    """ReadDockerignore: the patterns of <context>/.dockerignore, or none."""
    try:
        content = (context_dir / ".dockerignore").read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise ContextError(f"error reading .dockerignore: {err}")
    try:
        return read_ignore_file(content)
    except DockerignoreError as err:
        raise ContextError(f"error reading .dockerignore: {err}")


def _tar_header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _regular_entry(name: str, data: bytes, mode: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, mtime
    info.uname = info.gname = ""
    padding = (-len(data)) % _BLOCK
    return _tar_header(info) + data + b"\0" * padding


class _ExtraFiles:
    """A Dockerfile added to the context (stdin, or outside the context directory)."""

    def __init__(self, dockerfile: bytes) -> None:
        self.name = ".dockerfile." + secrets.token_hex(10)
        self.dockerfile = dockerfile
        self.mtime = int(time.time())

    def dockerignore(self, existing: bytes | None) -> bytes:
        # AddDockerfileToBuildContext: name the added file in .dockerignore, so the daemon removes it.
        return (existing if existing is not None else b".dockerignore") + b"\n" + self.name.encode() + b"\n"


def tar_context(
    context_dir: Path,
    rel_dockerfile: str = DEFAULT_DOCKERFILE_NAME,
    excludes: list[str] | None = None,
    *,
    dockerfile_content: bytes | None = None,
) -> tuple[str, Iterator[bytes]]:
    """(the Dockerfile's name in the context, the tar chunks).

    `dockerfile_content` is a Dockerfile that is not in the directory (stdin, or outside the context):
    it is added under a random name, which is returned.
    """
    extra = _ExtraFiles(dockerfile_content) if dockerfile_content is not None else None
    always = [".dockerignore"] if extra else [rel_dockerfile.replace(os.sep, "/"), ".dockerignore"]
    try:
        paths = list(walk_context(context_dir, excludes or [], always))
    except (OSError, DockerignoreError) as err:
        raise ContextError(f"error checking context: '{err}'.")
    _check_readable(context_dir, paths)
    name = extra.name if extra else rel_dockerfile.replace(os.sep, "/")
    return name, _tar_stream(context_dir, paths, extra)


def _check_readable(context_dir: Path, paths: list[str]) -> None:
    """ValidateContextDirectory: fail before sending anything if a file cannot be read."""
    for rel in paths:
        full = context_dir / rel
        try:
            st = full.lstat()
        except OSError:
            raise ContextError(f"error checking context: 'can't stat '{full}''.")
        if stat.S_ISREG(st.st_mode) and not os.access(full, os.R_OK):
            raise ContextError(f"error checking context: 'no permission to read from '{full}''.")
        if stat.S_ISSOCK(st.st_mode):
            raise ContextError(f"error checking context: 'archive/tar: sockets not supported: {full}'.")


def _tar_stream(context_dir: Path, paths: list[str], extra: _ExtraFiles | None) -> Iterator[bytes]:
    seen_inodes: dict[tuple[int, int], str] = {}
    has_dockerignore = False
    for rel in paths:
        full = context_dir / rel
        st = full.lstat()
        if extra is not None and rel == ".dockerignore":
            has_dockerignore = True
            yield _regular_entry(
                rel, extra.dockerignore(full.read_bytes()), stat.S_IMODE(st.st_mode), extra.mtime
            )
            continue
        info = tarfile.TarInfo(rel + "/" if stat.S_ISDIR(st.st_mode) else rel)
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)  # moby truncates to whole seconds
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        key = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
        elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and key in seen_inodes:
            info.type, info.linkname = tarfile.LNKTYPE, seen_inodes[key]
        elif stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                seen_inodes[key] = rel
            info.size = st.st_size
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
        else:
            continue  # sockets were refused by _check_readable
        yield _tar_header(info)
        if info.type == tarfile.REGTYPE and info.size:
            yield from _file_blocks(full, info.size)
    if extra is not None:
        yield _regular_entry(extra.name, extra.dockerfile, 0o600, extra.mtime)
        if not has_dockerignore:
            yield _regular_entry(".dockerignore", extra.dockerignore(None), 0o600, extra.mtime)
    yield b"\0" * (2 * _BLOCK)


def _file_blocks(path: Path, size: int) -> Iterator[bytes]:
    """A file's content, exactly `size` bytes (as the header said), padded to a block."""
    sent = 0
    with open(path, "rb") as f:
        while sent < size:
            chunk = f.read(min(_CHUNK, size - sent))
            if not chunk:
                raise ContextError(f"error checking context: '{path} changed size while being read'.")
            sent += len(chunk)
            yield chunk
    yield b"\0" * ((-size) % _BLOCK)


def tar_single_dockerfile(content: bytes) -> Iterator[bytes]:
    """`docker build -` with a Dockerfile on stdin: a tar whose only member is `Dockerfile`."""
    yield _regular_entry(DEFAULT_DOCKERFILE_NAME, content, 0o600, int(time.time()))
    yield b"\0" * (2 * _BLOCK)


def _gzip_header() -> bytes:
    # Go's gzip.Writer: no name, mtime 0, OS unknown (255).
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def compress(chunks: Iterable[bytes], compression: str) -> Iterator[bytes]:
    """The stream compressed with `identity`, `gzip` (level 6, like --compress), `bzip2` or `xz`."""
    if compression == "identity":
        yield from chunks
        return
    if compression == "gzip":
        deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        crc, size = 0, 0
        yield _gzip_header()
        for chunk in chunks:
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
            if out := deflate.compress(chunk):
                yield out
        yield deflate.flush() + crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
        return
    if compression == "bzip2":
        compressor: bz2.BZ2Compressor | lzma.LZMACompressor = bz2.BZ2Compressor(9)
    elif compression == "xz":
        compressor = lzma.LZMACompressor(lzma.FORMAT_XZ)
    else:
        raise ContextError(f"unsupported compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


def is_archive(head: bytes) -> bool:
    """IsArchive: compressed (by magic) or a tar header with a valid checksum."""
    if head.startswith((b"\x1f\x8b\x08", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")):
        return True
    if len(head) < _BLOCK:
        return False
    try:
        tarfile.TarInfo.frombuf(head[:_BLOCK], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True
