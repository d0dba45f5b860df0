"""LLB: the build graph as vertices with content digests (buildkit client/llb: state.go, exec.go,
fileop.go, source.go, marshal.go; solver/pb/ops.proto).

A `Vertex` is one operation — a source (an image, the build context), an exec (RUN), or a file op
(COPY, ADD, WORKDIR's mkdir) — and the vertices it reads. Its definition is canonical JSON of the op
and its inputs' digests; the sha256 of those bytes is the vertex digest, so two identical operations on
identical inputs are one vertex however many stages wrote them. Names and the no-cache flag are
metadata (BuildKit's OpMetadata): they do not change the digest.

`State` is what dockerfile2llb threads through a stage: the current output vertex (None for scratch)
and the values a RUN inherits (env, working directory, user, network), as llb.State carries them.

Where we simplify: BuildKit marshals ops as protobuf; canonical JSON gives the same property (a digest
that names the operation and its whole history) and reads well in a notebook.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

SCRATCH = None  # llb.Scratch(): a state with no output vertex


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces; equal values always give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(eq=False)
class Vertex:
    """One operation of the graph. `op` is its definition without inputs; `inputs` are vertices.

    The digest is computed once, from the marshalled definition (`marshal()`).
    """

    op: dict[str, Any]
    inputs: tuple[Vertex, ...] = ()
    name: str = ""
    ignore_cache: bool = False
    description: dict[str, str] = field(default_factory=dict)
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        self.digest = "sha256:" + hashlib.sha256(self.marshal()).hexdigest()

    def marshal(self) -> bytes:
        """The definition bytes: the op and its inputs' digests (pb.Op with Inputs)."""
        return canonical({"inputs": [i.digest for i in self.inputs], "op": self.op})

    @property
    def kind(self) -> str:
        return self.op["type"]

    def __repr__(self) -> str:
        return f"Vertex({self.digest[7:19]} {self.name or self.kind!r})"


# ---- constructors (llb.Image, llb.Local, ExecState, FileOp) ---------------------------------------------


def source(identifier: str, *, name: str, attrs: dict[str, str] | None = None, platform: str = "") -> Vertex:
    """A source op: `docker-image://docker.io/library/busybox:latest`, the build context, a URL."""
    op = {"type": "source", "identifier": identifier, "attrs": dict(sorted((attrs or {}).items()))}
    if platform:
        op["platform"] = platform
    return Vertex(op, (), name=name)


@dataclass(frozen=True)
class Mount:
    """An exec mount (pb.Mount). `source` None is a scratch mount; `selector` a path inside it."""

    dest: str
    source: State | None = None
    selector: str = ""
    readonly: bool = False
    type: str = "bind"  # bind | cache | tmpfs
    cache_id: str = ""
    sharing: str = ""  # cache: shared | private | locked
    size: int = 0  # tmpfs: bytes, 0 for the default
    mode: int | None = None  # cache: a new cache directory's mode and owner
    uid: int | None = None
    gid: int | None = None


@dataclass
class FileAction:
    """A chain of file actions applied in order to one tree (llb.FileAction: Copy, Mkdir, Mkfile, Rm).

    `actions` are canonical dicts; `sources` the states copies read from (the action's "input").
    """

    actions: list[dict[str, Any]] = field(default_factory=list)
    sources: list[State] = field(default_factory=list)

    def copy(self, src: State, src_path: str, dest: str, **info: Any) -> FileAction:
        """Copy `src_path` of `src` to `dest` (CopyInfo: follow_symlinks, dir_contents_only,
        attempt_unpack, create_dest_path, allow_wildcard, allow_empty_wildcard, chown, mode)."""
        self.sources.append(src)
        action = {"action": "copy", "source": len(self.sources) - 1, "src": src_path, "dest": dest}
        action.update({k: v for k, v in info.items() if v not in (None, False, "")})
        self.actions.append(action)
        return self

    def mkdir(self, path: str, mode: int, *, make_parents: bool = False, chown: str = "") -> FileAction:
        action = {"action": "mkdir", "path": path, "mode": mode, "make_parents": make_parents}
        if chown:
            action["chown"] = chown
        self.actions.append(action)
        return self

    def mkfile(self, path: str, mode: int, data: bytes, *, chown: str = "") -> FileAction:
        action = {"action": "mkfile", "path": path, "mode": mode, "data": data.hex()}
        if chown:
            action["chown"] = chown
        self.actions.append(action)
        return self


def copy(src: State, src_path: str, dest: str, **info: Any) -> FileAction:
    """llb.Copy: a new file action chain starting with one copy."""
    return FileAction().copy(src, src_path, dest, **info)


def mkdir(path: str, mode: int, **kw: Any) -> FileAction:
    return FileAction().mkdir(path, mode, **kw)


def mkfile(path: str, mode: int, data: bytes, **kw: Any) -> FileAction:
    return FileAction().mkfile(path, mode, data, **kw)


# ---- State (llb.State) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """A point in the graph plus what a RUN there inherits. Immutable: every change is a new State."""

    output: Vertex | None = SCRATCH
    env: tuple[tuple[str, str], ...] = ()
    dir: str = "/"
    user: str = ""
    network: str = "default"
    platform: str = ""

    def add_env(self, key: str, value: str) -> State:
        kept = tuple((k, v) for k, v in self.env if k != key)
        return replace(self, env=(*kept, (key, value)))

    def env_list(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.env]

    def get_env(self, key: str) -> str | None:
        return next((v for k, v in self.env if k == key), None)

    def with_dir(self, path: str) -> State:
        return replace(self, dir=path)

    def with_user(self, user: str) -> State:
        return replace(self, user=user)

    def with_network(self, mode: str) -> State:
        return replace(self, network=mode or "default")

    def with_output(self, vertex: Vertex | None) -> State:
        return replace(self, output=vertex)

    def run(
        self,
        args: Sequence[str],
        *,
        name: str,
        env: Sequence[str] | None = None,
        mounts: Sequence[Mount] = (),
        extra_hosts: Sequence[str] = (),
        ulimits: Sequence[str] = (),
        shm_size: int = 0,
        proxy_env: dict[str, str] | None = None,
        ignore_cache: bool = False,
        description: dict[str, str] | None = None,
    ) -> State:
        """ExecState.Root(): run `args` on this state's root; the result is the changed root."""
        inputs: list[Vertex] = []

        def input_index(state: State | None) -> int:
            if state is None or state.output is None:
                return -1
            for i, existing in enumerate(inputs):
                if existing.digest == state.output.digest:
                    return i
            inputs.append(state.output)
            return len(inputs) - 1

        pb_mounts = [{"dest": "/", "input": input_index(self), "output": 0}]
        for m in mounts:
            entry: dict[str, Any] = {"dest": m.dest, "type": m.type}
            if m.type == "bind":
                entry.update(input=input_index(m.source), selector=m.selector, readonly=m.readonly)
            elif m.type == "cache":
                entry.update(cache_id=m.cache_id, sharing=m.sharing or "shared")
                entry.update(
                    {k: v for k, v in (("mode", m.mode), ("uid", m.uid), ("gid", m.gid)) if v is not None}
                )
            elif m.type == "tmpfs" and m.size:
                entry["size"] = m.size
            pb_mounts.append(entry)
        op = {
            "type": "exec",
            "args": list(args),
            "env": list(env if env is not None else self.env_list()),
            "cwd": self.dir,
            "user": self.user,
            "network": self.network,
            "extra_hosts": list(extra_hosts),
            "mounts": pb_mounts,
        }
        if ulimits:  # name=soft:hard, as ExecOp.Meta.Ulimit
            op["ulimit"] = list(ulimits)
        if shm_size:
            op["shm_size"] = shm_size
        if proxy_env:  # ExecOp.Meta.ProxyEnv: the proxy build args, which need no ARG
            op["proxy_env"] = dict(proxy_env)
        if self.platform:
            op["platform"] = self.platform
        vertex = Vertex(
            op, tuple(inputs), name=name, ignore_cache=ignore_cache, description=dict(description or {})
        )
        return self.with_output(vertex)

    def file(
        self,
        action: FileAction,
        *,
        name: str,
        ignore_cache: bool = False,
        description: dict[str, str] | None = None,
    ) -> State:
        """FileOp: apply `action` to this state's tree (scratch included)."""
        inputs: list[Vertex] = []
        base = -1
        if self.output is not None:
            inputs.append(self.output)
            base = 0
        actions = []
        for a in action.actions:
            a = dict(a)
            if a["action"] == "copy":
                src_state = action.sources[a.pop("source")]
                if src_state.output is None:
                    a["input"] = -1
                else:
                    digests = [v.digest for v in inputs]
                    if src_state.output.digest not in digests:
                        inputs.append(src_state.output)
                        digests.append(src_state.output.digest)
                    a["input"] = digests.index(src_state.output.digest)
            actions.append(a)
        op = {"type": "file", "base": base, "actions": actions}
        if self.platform:
            op["platform"] = self.platform
        vertex = Vertex(
            op, tuple(inputs), name=name, ignore_cache=ignore_cache, description=dict(description or {})
        )
        return self.with_output(vertex)


# ---- Definition (llb.Definition: the marshalled graph) ---------------------------------------------------


@dataclass
class Definition:
    """The graph of a target, each vertex once (by digest), inputs before the vertices that use them."""

    vertices: list[Vertex]
    target: Vertex | None

    def __iter__(self) -> Iterator[Vertex]:
        return iter(self.vertices)

    def __len__(self) -> int:
        return len(self.vertices)

    def by_digest(self) -> dict[str, Vertex]:
        return {v.digest: v for v in self.vertices}

    def to_bytes(self) -> bytes:
        """One marshalled op per line, then the metadata (names), as a Definition's Def and Metadata."""
        lines = [v.marshal() for v in self.vertices]
        metadata = {v.digest: {"name": v.name, "ignore_cache": v.ignore_cache} for v in self.vertices}
        return b"\n".join([*lines, canonical(metadata)]) + b"\n"


def marshal(target: Vertex | State | None) -> Definition:
    """The definition of everything `target` depends on; identical vertices collapse into one.

    When two vertices share a digest the first one met keeps its name, as BuildKit keeps the first
    metadata it sees.
    """
    if isinstance(target, State):
        target = target.output
    seen: dict[str, Vertex] = {}
    order: list[Vertex] = []
    if target is None:
        return Definition([], None)
    stack: list[tuple[Vertex, bool]] = [(target, False)]
    while stack:  # iterative post-order: graphs of thousands of vertices stay within recursion limits
        vertex, expanded = stack.pop()
        if vertex.digest in seen and not expanded:
            continue
        if expanded:
            if vertex.digest not in seen:
                seen[vertex.digest] = vertex
                order.append(vertex)
            continue
        stack.append((vertex, True))
        for child in reversed(vertex.inputs):
            if child.digest not in seen:
                stack.append((child, False))
    canonical = {v.digest: v for v in order}
    # Point every vertex's inputs at the canonical instance of each digest.
    for v in order:
        v.inputs = tuple(canonical[i.digest] for i in v.inputs)
    return Definition(order, canonical[target.digest])
