"""COPY and ADD: which files, their cache hash, and how they land in the image
(moby builder/dockerfile/copy.go, copy_unix.go, internals_linux.go parseChownFlag, remote downloads).

`Copier.create_copy_instruction` turns the sources of a COPY/ADD into `CopyInfo`s: wildcards are
matched against the context (Go's filepath.Match: `*` never crosses `/`), each file gets its content
hash `file:<hex>`, each directory `dir:<hex of its files' hashes>`, URLs (ADD only) are downloaded.
The step's cache key is that hash. `perform_copy_for_info` then copies one source into the step's
root, with Docker's rules:

* a directory source copies its *contents* into the destination (created if missing);
* a file goes to `dest` itself, or into it when `dest` ends with `/` or is an existing directory;
* several sources need a destination ending with `/`;
* ADD extracts a local tar archive (any compression) into the destination, URLs never;
* files become root's (or `--chown`'s), except for `COPY --from` without `--chown`, which keeps owners.

Paths in the destination are resolved inside the root (follow_symlink_in_scope), so no symlink in the
image can lead a copy out of it.
"""

import hashlib
import os
import re
import shutil
import stat
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests

from minibuild import errdefs
from minibuild.api.streamformatter import JSONProgressOutput, Progress, StreamWriter
from minibuild.archive import ArchiveError, decompress_stream, follow_symlink_in_scope, untar
from minibuild.archive.tarstream import read_entries
from minibuild.builder.remotecontext import Source, full_path, get_with_status_error, rel_path
from minibuild.snapshot.copy import copy_file_data

UNNAMED_FILENAME = "__unnamed__"
_DOWNLOAD_CHUNK = 1 << 20


class CopyError(errdefs.System):
    """A COPY/ADD that cannot be done; the message is Docker's."""


@dataclass
class CopyInfo:
    """One source (or the destination): a path under a root, with its cache hash."""

    root: Path
    path: str
    hash: str = ""
    no_decompress: bool = False

    def full_path(self) -> Path:
        """The host path of `path`, every symlink resolved inside `root`."""
        return follow_symlink_in_scope(self.path.lstrip("/"), self.root)


@dataclass
class CopyInstruction:
    """A parsed COPY or ADD, ready for perform_copy."""

    cmd_name: str
    infos: list[CopyInfo]
    dest: str
    chown_str: str = ""
    chmod_str: str = ""
    allow_local_decompression: bool = False
    preserve_ownership: bool = False


SourceDownloader = Callable[[str], tuple[Source, str]]


def err_on_source_download(url: str) -> tuple[Source, str]:
    raise CopyError("source can't be a URL for COPY")


@dataclass
class Copier:
    """Reads a COPY/ADD's sources from `source` (the context, or a --from image's tree)."""

    source: Source | None
    path_cache: dict[str, str]
    download: SourceDownloader
    image_id: str = ""  # of a --from image: its path hashes are cached across builds
    tmp_sources: list[Source] = field(default_factory=list)

    def create_copy_instruction(self, sources: list[str], dest: str, cmd_name: str) -> CopyInstruction:
        try:
            infos = self.get_copy_infos_for_source_paths(sources, dest)
        except (errdefs.DockerError, ArchiveError, OSError) as err:
            raise CopyError(f"{cmd_name} failed: {_message(err)}") from None
        if len(infos) > 1 and not dest.endswith("/"):
            raise CopyError(
                f"When using {cmd_name} with more than one source file, "
                "the destination must be a directory and end with a /"
            )
        return CopyInstruction(cmd_name, infos, dest)

    def get_copy_infos_for_source_paths(self, sources: list[str], dest: str) -> list[CopyInfo]:
        infos: list[CopyInfo] = []
        for orig in sources:
            infos += self.get_copy_info_for_source_path(orig, dest)
        if not infos:
            raise CopyError("no source files were specified")
        return infos

    def get_copy_info_for_source_path(self, orig: str, dest: str) -> list[CopyInfo]:
        if not is_url(orig):
            return self.calc_copy_info(orig, allow_wildcards=True)
        remote, path = self.download(orig)
        self.tmp_sources.append(remote)
        if path == "":
            if dest.endswith("/"):
                raise CopyError(f"cannot determine filename for source {orig}")
            path = UNNAMED_FILENAME
        # Data from a URL is never extracted, even by ADD.
        return [CopyInfo(remote.root, path, remote.hash(path), no_decompress=True)]

    def calc_copy_info(self, orig_path: str, allow_wildcards: bool) -> list[CopyInfo]:
        if self.source is None:
            raise CopyError("missing build context")
        orig_path = orig_path.removeprefix("/").removeprefix("./")
        if allow_wildcards and contains_wildcards(orig_path):
            return self.copy_with_wildcards(orig_path)
        if self.image_id and (cached := self.path_cache.get(self.image_id + orig_path)):
            return [CopyInfo(self.source.root, orig_path, cached)]
        info = copy_info_for_file(self.source, orig_path, from_image=bool(self.image_id))
        if info is None:  # a directory: hash everything below it
            dir_hash = hash_string_slice("dir", walk_source(self.source, orig_path))
            info = CopyInfo(self.source.root, orig_path, dir_hash)
        if self.image_id:
            self.path_cache[self.image_id + orig_path] = info.hash
        return [info]

    def copy_with_wildcards(self, orig_path: str) -> list[CopyInfo]:
        assert self.source is not None
        infos: list[CopyInfo] = []
        for rel in walk(self.source.root):
            if path_match(orig_path, rel):
                infos += self.calc_copy_info(rel, allow_wildcards=False)  # the name may contain a *
        return infos

    def cleanup(self) -> None:
        for source in self.tmp_sources:
            source.close()
        self.tmp_sources.clear()


def _message(err: BaseException) -> str:
    return err.message if isinstance(err, errdefs.DockerError) else str(err)


def copy_info_for_file(source: Source, path: str, *, from_image: bool = False) -> CopyInfo | None:
    """The CopyInfo of a file; None for a directory; Docker's error for a missing path, which blames
    the context (and .dockerignore) only when the source is the context, not a --from image."""
    try:
        st = os.stat(full_path(source, path))
    except FileNotFoundError:
        missing = f"stat {path}: file does not exist"
        if from_image:
            raise CopyError(missing) from None
        raise CopyError(f"file not found in build context or excluded by .dockerignore: {missing}") from None
    if stat.S_ISDIR(st.st_mode):
        return None
    return CopyInfo(source.root, path, "file:" + source.hash(path))


def walk_source(source: Source, orig_path: str) -> list[str]:
    """The sorted hashes of everything below a directory source."""
    top = full_path(source, orig_path)
    hashes = source.hashes(rel_path(source.root, top / rel) for rel in walk(top))
    return sorted(h for h in hashes if h is not None)  # Docker skips what it cannot hash


def hash_string_slice(prefix: str, items: list[str]) -> str:
    return prefix + ":" + hashlib.sha256(",".join(items).encode()).hexdigest()


def get_source_hash_from_infos(infos: list[CopyInfo]) -> str:
    """One source: its own hash (backwards compatible); several: a hash of them all."""
    if len(infos) == 1:
        return infos[0].hash
    return hash_string_slice("multi", [info.hash for info in infos])


def walk(top: Path) -> Iterator[str]:
    """Paths below `top`, relative to it, depth first in lexical order, never following symlinks
    (Go's filepath.Walk)."""

    def visit(directory: Path, prefix: str) -> Iterator[str]:
        try:
            names = sorted(os.listdir(directory), key=os.fsencode)
        except NotADirectoryError:
            return
        for name in names:
            rel = prefix + name
            yield rel
            path = directory / name
            if stat.S_ISDIR(os.lstat(path).st_mode):
                yield from visit(path, rel + "/")

    yield from visit(top, "")


def contains_wildcards(name: str) -> bool:
    """Whether a source has `*`, `?` or `[` not escaped by a backslash."""
    i = 0
    while i < len(name):
        if name[i] == "\\":
            i += 1
        elif name[i] in "*?[":
            return True
        i += 1
    return False


def path_match(pattern: str, name: str) -> bool:
    """Go's filepath.Match; a malformed pattern matches nothing (Docker ignores the error)."""
    regex = _match_regex(pattern)
    return regex is not None and regex.fullmatch(name) is not None


def _match_regex(pattern: str) -> re.Pattern[str] | None:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 == len(pattern):
                return None
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i += 1
            negate = i < len(pattern) and pattern[i] == "^"
            i += negate
            ranges = []
            while True:
                if i >= len(pattern):
                    return None
                if pattern[i] == "]" and ranges:
                    break
                lo, i = _class_char(pattern, i)
                if lo is None:
                    return None
                hi = lo
                if i < len(pattern) and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                    if hi is None:
                        return None
                ranges.append(re.escape(lo) + ("-" + re.escape(hi) if hi != lo else ""))
            out.append("[" + ("^" if negate else "") + "".join(ranges) + ("/" if negate else "") + "]")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _class_char(pattern: str, i: int) -> tuple[str | None, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        return None, i
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            return None, i
    return pattern[i], i + 1


def is_url(text: str) -> bool:
    """urlutil.IsURL: http:// or https://."""
    return text.startswith(("http://", "https://"))


# --- remote sources (ADD <url>) -------------------------------------------------------------------------


def new_remote_source_downloader(
    output: JSONProgressOutput, stdout: StreamWriter, tmp_dir: Path
) -> SourceDownloader:
    def download(url: str) -> tuple[Source, str]:
        return download_source(output, stdout, url, tmp_dir)

    return download


def download_source(
    output: JSONProgressOutput, stdout: StreamWriter, url: str, tmp_dir: Path
) -> tuple[Source, str]:
    """Download `url` into a fresh directory: (its Source, the file name, "" when none can be told).

    The file gets mode 0600 and the Last-Modified time (else the zero time), as Docker writes it.
    """
    response = get_with_status_error(url)
    with response:
        filename = filename_for_download(urllib.parse.urlsplit(url).path, response.headers)
        directory = Path(tempfile.mkdtemp(prefix="docker-remote", dir=tmp_dir))
        try:
            target = directory / (filename or UNNAMED_FILENAME)
            total = int(response.headers.get("Content-Length") or 0)
            current = reported = 0
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                for chunk in response.iter_content(_DOWNLOAD_CHUNK):
                    f.write(chunk)
                    current += len(chunk)
                    if current - reported >= 512 * 1024:
                        output.write_progress(Progress(action="Downloading", current=current, total=total))
                        reported = current
            done = Progress(action="Downloading", current=current, total=total, last_update=True)
            output.write_progress(done)
            stdout.write("\n")
            mtime = _last_modified(response.headers.get("Last-Modified", ""))
            os.utime(target, (mtime, mtime))
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    return Source(directory, owned=True), filename


def filename_for_download(path: str, headers: requests.structures.CaseInsensitiveDict) -> str:
    """The URL path's last element, else Content-Disposition's filename, else ""."""
    if path and not path.endswith("/"):
        return os.path.basename(path)
    disposition = headers.get("Content-Disposition", "")
    if disposition:
        message = Message()
        message["Content-Disposition"] = disposition
        name = message.get_param("filename", header="Content-Disposition")
        if isinstance(name, str) and name and not name.endswith("/"):
            return os.path.basename(name)
    return ""


def _last_modified(value: str) -> float:
    """Last-Modified as Unix seconds; Go's zero time (year 1) cannot be a file time: use the epoch."""
    if value:
        try:
            return parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            pass
    return 0.0


# --- copying into the step's root -----------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int


def root_pair() -> Identity:
    """idMapping.RootPair(): the host IDs that are root in the image (the daemon's own when rootless,
    where a user namespace maps only them)."""
    return Identity(0, 0) if os.geteuid() == 0 else Identity(os.getuid(), os.getgid())


def to_host(identity: Identity) -> Identity:
    """idMapping.ToHost: an image's uid/gid as the host writes them."""
    if os.geteuid() == 0:
        return identity
    if identity == Identity(0, 0):
        return root_pair()
    missing = identity.uid if identity.uid != 0 else identity.gid
    raise CopyError(
        f"unable to convert uid/gid to host mapping: Container ID {missing} cannot be mapped to a host ID"
    )


def perform_copy_for_info(
    dest: CopyInfo,
    source: CopyInfo,
    *,
    decompress: bool,
    identity: Identity | None,
    chmod: int | None,
) -> None:
    """Copy one source to the destination with Docker's directory and archive rules."""
    src_path = source.full_path()
    dest_path = dest.full_path()
    try:
        src = os.stat(src_path)
    except FileNotFoundError:
        raise CopyError(f"source path not found: stat {source.path}: no such file or directory") from None
    if stat.S_ISDIR(src.st_mode):
        copy_directory(src_path, dest_path, identity, chmod)
        return
    if decompress and not source.no_decompress and is_archive_path(src_path):
        untar_path(src_path, dest_path)
        return
    if dest.path.endswith("/") or dest_path.is_dir():
        # the source's own name (not its symlink target's) names the file
        dest_path = dest_path / os.path.basename(source.path.rstrip("/"))
    copy_file(src_path, dest_path, identity, chmod)


def untar_path(src: Path, dest: Path) -> None:
    """ADD of a local archive: its entries merged into `dest`, owners and modes as the archive says.

    Straight into the step's tree, even when that is reached through /proc/<pid>/root: untar takes
    its destination as given and resolves every entry inside it, as dockerd's untar chrooted in
    `dest` does (a symlink already in `dest` is followed within it, never out of it).
    """
    with open(src, "rb") as f:
        untar(f, dest, whiteouts="keep")


def is_archive_path(path: Path) -> bool:
    """Whether a file is a tar archive (any compression) with at least one entry."""
    try:
        with open(path, "rb") as f:
            next(read_entries(decompress_stream(f)))
            return True
    except (OSError, ArchiveError, StopIteration, EOFError, ValueError):
        return False


def mkdir_all_and_chown_new(path: Path, mode: int, identity: Identity | None) -> None:
    """mkdir -p; only directories it creates are chowned (idtools.MkdirAllAndChownNew)."""
    missing = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        os.mkdir(directory, mode)
        if identity is not None:
            os.lchown(directory, identity.uid, identity.gid)


def copy_file(src: Path, dst: Path, identity: Identity | None, chmod: int | None) -> None:
    mkdir_all_and_chown_new(dst.parent, 0o755, identity)
    st = os.stat(src)
    _remove_unless_both_dirs(dst, is_dir=False)
    _copy_regular(src, dst, st)
    _apply_metadata(dst, st)
    if identity is not None:
        os.lchown(dst, identity.uid, identity.gid)
    if chmod is not None:
        os.chmod(dst, chmod)


def copy_directory(src: Path, dst: Path, identity: Identity | None, chmod: int | None) -> None:
    """The directory's contents into `dst` (CopyWithTar), then owners fixed (fixPermissions)."""
    dest_existed = dst.is_dir()
    mkdir_all_and_chown_new(dst, 0o755, root_pair())
    links: dict[tuple[int, int], Path] = {}
    dirs: list[tuple[Path, os.stat_result]] = []
    for rel in walk(src):
        source, target = src / rel, dst / rel
        st = os.lstat(source)
        _remove_unless_both_dirs(target, is_dir=stat.S_ISDIR(st.st_mode))
        if stat.S_ISDIR(st.st_mode):
            if not target.is_dir():
                os.mkdir(target, 0o700)
            dirs.append((target, st))  # metadata after the contents, as untar does
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
            os.link(links[(st.st_dev, st.st_ino)], target)
            continue
        if stat.S_ISREG(st.st_mode):
            _copy_regular(source, target, st)
            links.setdefault((st.st_dev, st.st_ino), target)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            if os.geteuid() != 0 and not stat.S_ISFIFO(st.st_mode):
                continue  # device nodes need real root, as for any untar
            os.mknod(target, st.st_mode, st.st_rdev)
        else:
            continue  # sockets are not copied (tar cannot hold them)
        _apply_metadata(target, st)
    for target, st in reversed(dirs):
        _apply_metadata(target, st)
    if identity is not None or chmod is not None:
        fix_permissions(src, dst, identity, chmod, skip_root=dest_existed)


def fix_permissions(
    src: Path, dst: Path, identity: Identity | None, chmod: int | None, *, skip_root: bool
) -> None:
    """Chown (and chmod) what the copy created: walk the source, change the same paths in `dst`.

    A destination directory that existed before is left alone.
    """
    paths = [] if skip_root else [dst]
    paths += [dst / rel for rel in walk(src)]
    for path in paths:
        if identity is not None:
            os.lchown(path, identity.uid, identity.gid)
        if chmod is not None and not path.is_symlink():
            os.chmod(path, chmod)


def _remove_unless_both_dirs(path: Path, *, is_dir: bool) -> None:
    """What untar does before writing an entry: replace anything but a directory meeting a directory."""
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(existing.st_mode):
        if not is_dir:
            shutil.rmtree(path)
    else:
        os.unlink(path)


def _copy_regular(src: Path, dst: Path, st: os.stat_result) -> None:
    fd_in = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            copy_file_data(fd_in, fd_out)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _apply_metadata(path: Path, st: os.stat_result) -> None:
    """Owner, mode and times of the source entry (as root; owners are fixed later if asked)."""
    if os.geteuid() == 0:
        os.lchown(path, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def parse_chmod(value: str) -> int:
    """--chmod: an octal mode (minibuild's classic builder accepts it as BuildKit does)."""
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise CopyError(f"invalid chmod parameter: {value}")
    return mode


def parse_chown_flag(chown: str, root: Path) -> Identity:
    """`user[:group]` as names (looked up in the image's /etc/passwd and /etc/group) or numbers."""
    prefix = "unable to convert uid/gid chown string to host mapping: "
    parts = chown.split(":")
    if len(parts) > 2:
        raise CopyError(f"{prefix}invalid chown string format: {chown}")
    user, group = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    try:
        uid = _lookup_id(user, follow_symlink_in_scope("etc/passwd", root), "user")
    except CopyError as err:
        raise CopyError(f"{prefix}can't find uid for user {user}: {err}") from None
    try:
        gid = _lookup_id(group, follow_symlink_in_scope("etc/group", root), "group")
    except CopyError as err:
        raise CopyError(f"{prefix}can't find gid for group {group}: {err}") from None
    try:
        return to_host(Identity(uid, gid))
    except CopyError as err:
        raise CopyError(f"{prefix}{err}") from None


def _lookup_id(name: str, database: Path, kind: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        text = database.read_text(errors="surrogateescape")
    except FileNotFoundError:
        raise CopyError(f"open /etc/{database.name}: no such file or directory") from None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    raise CopyError(f"no such {kind}: {name}")
