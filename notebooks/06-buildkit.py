# %% [markdown]
# # 06 · buildkit / The same build as a graph
#
# *Mirrors the article's part on **buildkit**: builder-next's `Build`, the frontend attrs it makes
# from the build options, and the solve.*
#
# With `version=2` (`DOCKER_BUILDKIT=1`), `Backend.Build` calls builder-next instead of the classic
# loop. It does not walk the Dockerfile: it hands a *solve request* to BuildKit's controller, whose
# Dockerfile frontend converts the file into a graph of operations (LLB), and a solver runs that graph:
# only what the target needs, independent branches at the same time, cached work skipped.
#
# **What you will learn**
#
# - `frontend_attrs`: how builder-next turns build options into the frontend's attributes;
# - the Dockerfile as a DAG (drawn with graphviz), and the vertices a target prunes away;
# - the progress stream (`moby.buildkit.trace` messages) decoded into a table, and shown as
#   `--progress plain` does;
# - the trace of a solve: demand-driven, a cached vertex never visits its inputs;
# - that both builders make the same image (files and config), if not the same ID;
# - `POST /build/cancel`, which BuildKit builds honour.
#
# Previous: [05 · builder v1](05-builder-v1.ipynb) ·
# Next: [07 · sequential vs parallel](07-sequential-vs-parallel.ipynb)

# %%
import asyncio
import base64
import hashlib
import inspect
import io
import json
import posixpath
import tarfile
from concurrent.futures import ThreadPoolExecutor

from _setup import start_daemon
from IPython.display import Image, display

from minibuild import trace
from minibuild.api.types import ImageBuildOptions
from minibuild.builder.next import llb
from minibuild.builder.next.builder import Builder as NextBuilder
from minibuild.builder.next.dockerfile2llb import ConvertOpt, dockerfile_to_llb
from minibuild.builder.next.graph import states_from_progress, to_dot
from minibuild.builder.next.progress import StatusResponse
from minibuild.builder.next.timeline import vertices_from_trace
from minibuild.cli.main import main as cli_main
from minibuild.client import APIClient
from minibuild.client.context import tar_single_dockerfile

daemon = start_daemon(globals().get("daemon"))
client = APIClient(daemon.host)

DOCKERFILE = """\
FROM busybox:local AS deps
RUN echo "dependencies" > /deps.txt

FROM busybox:local AS assets
RUN echo "assets" > /assets.txt

FROM busybox:local AS docs
RUN echo "documentation nobody ships" > /docs.txt

FROM busybox:local AS build
COPY --from=deps /deps.txt /work/
RUN cat /work/deps.txt > /work/app && echo built >> /work/app

FROM busybox:local
COPY --from=build /work/app /app
COPY --from=assets /assets.txt /assets.txt
CMD ["cat", "/app"]
"""
context = b"".join(tar_single_dockerfile(DOCKERFILE.encode()))


def build(version: str, **options) -> tuple[list[dict], trace.Recording]:
    """Build the Dockerfile above through the API; the stream's messages and the daemon's trace."""
    request = ImageBuildOptions(version=version, **options)
    with trace.recording() as rec, client.image_build(context, request) as response:
        messages = list(response.messages())
    return messages, rec


def run_async(coroutine):
    """Run a coroutine to completion from a cell (Jupyter's own event loop is already running)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def progress_of(messages: list[dict]) -> list[StatusResponse]:
    """The StatusResponses carried by a BuildKit build's `moby.buildkit.trace` messages."""
    return [
        StatusResponse.unmarshal(base64.b64decode(m["aux"]))
        for m in messages
        if m.get("id") == "moby.buildkit.trace"
    ]


print("daemon listening on", daemon.host)

# %% [markdown]
# ## `frontend_attrs`: options become a solve request
#
# builder-next's `Build` (moby `builder/builder-next/builder.go`) fills a map of strings for the
# Dockerfile frontend, one option at a time:
#
# ```go
# frontendAttrs := map[string]string{}
# if opt.Options.Target != "" {
#     frontendAttrs["target"] = opt.Options.Target
# }
# ...
# for k, v := range opt.Options.BuildArgs {
#     if v == nil {
#         continue
#     }
#     frontendAttrs["build-arg:"+k] = *v
# }
# for k, v := range opt.Options.Labels {
#     frontendAttrs["label:"+k] = v
# }
# if opt.Options.NoCache {
#     frontendAttrs["no-cache"] = ""
# }
# ...
# req := &controlapi.SolveRequest{
#     Ref:           id,
#     Exporter:      exporterName,
#     ExporterAttrs: exporterAttrs,
#     Frontend:      "dockerfile.v0",
#     FrontendAttrs: frontendAttrs,
#     Session:       opt.Options.SessionID,
# }
# ```
#
# minibuild's, the same part of `Builder.build`:

# %%
source = inspect.getsource(NextBuilder._build)
start, end = source.index("        frontend_attrs: dict"), source.index("        aux = AuxFormatter")
print(source[start:end])

# %% [markdown]
# What a build with a target, build args, labels and `--no-cache` asks of the frontend, as recorded
# by the trace at `Controller.Solve` (the `context` attribute names the request body, by a random ID):

# %%
options = {
    "target": "build",
    "build_args": {"VERSION": "1.2", "UNSET": None},
    "labels": {"team": "docs"},
    "no_cache": True,
    "tags": ["attrs:demo"],
}
_, rec = build("2", **options)
solve = rec.find("Controller.solve")[0]
for key, value in sorted(solve.details["frontend_attrs"].items()):
    shown = value.split("//")[0] + "//<build ref>" if key == "context" else value
    print(f"{key:>28} = {shown!r}")
print(f"{'exporter':>28} = {solve.details['exporter']!r}, attrs {solve.details['exporter_attrs']}")

# %% [markdown]
# `UNSET` (a `--build-arg` without a value) is dropped; `SOURCE_DATE_EPOCH` was added by minibuild
# from the daemon's environment (the notebook's: the daemon runs in it), where buildx would pass the
# client's as a build arg; the tag became the exporter's `name`, normalized.
#
# ## The Dockerfile as a graph
#
# The frontend's `Dockerfile2LLB` converts the Dockerfile into vertices: a source for each base image
# (and the context), an exec for each `RUN`, a file op for each `COPY`. Identical vertices have the
# same digest: the five `FROM busybox:local` are **one** vertex. Converted here directly, for the last
# stage:

# %%
context_state = llb.State(llb.source("context://notebook", name="[internal] load build context"))
full = run_async(dockerfile_to_llb(DOCKERFILE.encode(), ConvertOpt(build_context=context_state)))
definition = llb.marshal(full.state)
for vertex in definition:
    inputs = ", ".join(v.digest[7:19] for v in vertex.inputs) or "-"
    print(f"{vertex.digest[7:19]}  {vertex.kind:<6} {vertex.name:<48} inputs: {inputs}")
display(Image(to_dot(definition, title="the last stage's graph").pipe(format="png")))

# %% [markdown]
# The `docs` stage is not there: nothing the last stage needs reads from it. The frontend converts
# only the stages reachable from the target (`is_reachable`); the others never resolve their base,
# never appear in the graph, never run. With `--target build` even less is left:

# %%
opt = ConvertOpt(build_context=context_state, target="build")
pruned = llb.marshal(run_async(dockerfile_to_llb(DOCKERFILE.encode(), opt)).state)
names = {v.name for v in definition}
print("vertices for the last stage:   ", len(list(definition)))
print("vertices for --target build:   ", len(list(pruned)))
print("pruned away by --target build: ", sorted(names - {v.name for v in pruned}))

# %% [markdown]
# The classic builder, given the same `--target build`, still builds every stage before it, `docs`
# included (its loop only stops at the target). The steps each builder ran:

# %%
v1, _ = build("1", target="build", no_cache=True)
print("v1 steps:   ", [m["stream"].split(" : ")[1] for m in v1 if m.get("stream", "").startswith("Step")])
v2, _ = build("2", target="build", no_cache=True)
ran = [v.name for v in vertices_from_trace(progress_of(v2)) if v.started is not None]
print("v2 vertices:", [n for n in ran if not n.startswith(("[internal]", "exporting", "copy /context"))])

# %% [markdown]
# ## The progress stream, decoded
#
# A BuildKit build's answer is not `Step i/N` text: builder-next streams each `StatusResponse` (a
# protobuf message) base64-encoded in a `moby.buildkit.trace` aux message, and the image ID at the end
# as `moby.image.id`:

# %%
messages, rec = build("2", tags=["graph:v2"], no_cache=True)
first = messages[0]
print(f'{{"id": "{first["id"]}", "aux": "…"}}  (aux: base64 of a StatusResponse protobuf)')
print(json.dumps(messages[-2]))
print(json.dumps(messages[-1]))
print()
print("the first one, decoded:", StatusResponse.unmarshal(base64.b64decode(first["aux"])).vertexes[0].name)

# %% [markdown]
# Decoded, each message says which vertices changed (started, completed, cached, failed), and carries
# their output and sub-steps. The final state of each vertex, as a table (durations left out: they are
# this machine's):

# %%
progress = progress_of(messages)
print(f"{len(vertices_from_trace(progress))} vertices reported")
print()
print(f"{'vertex':<58} {'cached':<7} {'ran':<5} {'inputs':<7} error")
for vertex in vertices_from_trace(progress):
    ran = "yes" if vertex.started is not None and not vertex.cached else "no"
    name = vertex.name if len(vertex.name) <= 58 else vertex.name[:57] + "…"
    print(f"{name:<58} {vertex.cached!s:<7} {ran:<5} {len(vertex.inputs):<7} {vertex.error or '-'}")

# %% [markdown]
# The same graph, colored by what this build did (blue: ran, gray: cached), from the decoded progress:

# %%
states = states_from_progress(vertices_from_trace(progress))
display(Image(to_dot(definition, states=states, title="what the build ran").pipe(format="png")))

# %% [markdown]
# `minibuild build --progress plain` renders the same messages the way `docker buildx build
# --progress plain` does (it prints a vertex's header again when its updates come in separate
# messages):

# %%
# NBVAL_IGNORE_OUTPUT
# How the daemon batches progress events into messages depends on timing, and the lines follow it.
one_stage = "FROM busybox:local\nRUN echo hello from a step\nCOPY --from=busybox:local /bin/true /true\n"
(tmp := daemon.data_root / "plain-demo").mkdir(exist_ok=True)
(tmp / "Dockerfile").write_text(one_stage)
status = cli_main(["--host", daemon.host, "build", "--builder", "buildkit", "--progress", "plain", str(tmp)])

# %% [markdown]
# ## The trace of a solve
#
# The daemon's side of the graph build above. `Controller.Solve` first solves the context (two
# vertices), then the frontend converts the Dockerfile (`Dockerfile2LLB`), then the solver is asked for
# the **target** vertex only. Each vertex asks for its inputs (nested below it), so the solve is pulled
# from the end, not pushed from the start: a vertex nobody asks for is never visited.

# %%
print(rec)

# %% [markdown]
# Build it again. The target's cache key is found: it is loaded, and its inputs are never even asked
# for. (The classic builder, on a rebuild, still walks every step to check each one's cache.)

# %%
_, again = build("2", tags=["graph:v2"])
print(again)

# %% [markdown]
# ## The same image, either way
#
# Both builders, the same Dockerfile. The image IDs differ, because each builder writes its own
# history (BuildKit's entries say `buildkit.dockerfile.v0`), but the filesystem and the runtime
# config a container would get are the same.


# %%
def flatten(image: str) -> tuple[dict[str, tuple], dict]:
    """The image's files (layers applied in order, whiteouts honoured) and its config, via docker save."""
    saved = client.image_save([image])
    data = b"".join(saved.iter_bytes())
    saved.close()
    files: dict[str, tuple] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        config = json.load(archive.extractfile(manifest["Config"]))
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as tar:
                for member in tar.getmembers():
                    path = "/" + member.name.strip("/")
                    parent, base = posixpath.split(path)
                    if base.startswith(".wh."):  # a whiteout: delete (the opaque one: empty the dir)
                        gone = parent if base == ".wh..wh..opq" else posixpath.join(parent, base[4:])
                        files = {p: f for p, f in files.items() if not p.startswith(gone + "/")}
                        if base != ".wh..wh..opq":
                            files.pop(gone, None)
                        continue
                    content = member.linkname
                    if member.isfile():
                        content = hashlib.sha256(tar.extractfile(member).read()).hexdigest()[:12]
                    files[path] = (member.type, oct(member.mode), member.uid, member.gid, content)
    return files, config


for version in ("1", "2"):
    with client.image_build(context, ImageBuildOptions(version=version, tags=[f"same:v{version}"])) as r:
        list(r.messages())
v1_files, v1_config = flatten("same:v1")
v2_files, v2_config = flatten("same:v2")
runtime = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes")
print("same files:         ", v1_files == v2_files)
print("same runtime config:", all(v1_config["config"].get(k) == v2_config["config"].get(k) for k in runtime))
print("same image ID:      ", client.image_inspect("same:v1")["Id"] == client.image_inspect("same:v2")["Id"])
print("the files the build added:", sorted(p for p in v1_files if p in ("/app", "/assets.txt")))
for name, config in (("v1", v1_config), ("v2", v2_config)):
    print(f"{name} history:")
    for entry in config["history"][1:]:
        print("   ", entry.get("created_by", ""), "|", entry.get("comment", ""))

# %% [markdown]
# ## Cancelling with `POST /build/cancel`
#
# A BuildKit build can be cancelled by ID (`docker buildx` does it on Ctrl-C): the client sends
# `buildid` with the build, and `POST /build/cancel?id=…` on another connection. builder-next
# cancels the build job's context; the stream ends with `context canceled`.

# %%
slow = b"".join(tar_single_dockerfile(b"FROM busybox:local\nRUN echo started && sleep 5 && echo never\n"))
canceller = APIClient(daemon.host)
with client.image_build(slow, ImageBuildOptions(version="2", build_id="notebook-06", no_cache=True)) as r:
    cancel_messages = []
    for message in r.messages():
        cancel_messages.append(message)
        if message.get("id") == "moby.buildkit.trace":
            sr = StatusResponse.unmarshal(base64.b64decode(message["aux"]))
            if any(log.data.startswith(b"started") for log in sr.logs):  # the RUN is running: cancel it
                canceller.build_cancel("notebook-06")
canceller.close()
print("last message:", cancel_messages[-1])
for vertex in vertices_from_trace(progress_of(cancel_messages)):
    if vertex.name.startswith("[2/2] RUN"):
        print(f"{vertex.name}: error {vertex.error!r}")

# %% [markdown]
# ## Summary
#
# - builder-next's `Build` turns options into `frontend_attrs` (`target`, `build-arg:*`, `label:*`,
#   `no-cache`, …) and a solve request for the `dockerfile.v0` frontend and the `moby` exporter.
# - The frontend converts only what the target needs into a graph; identical vertices are one.
# - The solver pulls from the target: inputs are solved only when a vertex needs them and its cache
#   misses; independent inputs are solved at the same time.
# - Progress travels as protobuf `StatusResponse`s inside `moby.buildkit.trace` messages.
# - Same files and config as the classic builder; different history, so a different ID.
#
# Next: [07 · sequential vs parallel, measured](07-sequential-vs-parallel.ipynb)

# %%
client.close()
daemon.stop()
