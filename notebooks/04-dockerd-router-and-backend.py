# %% [markdown]
# # 04 · 构建的核心：Dockerd / The router and the backend
#
# *Mirrors the article's part **构建的核心：Dockerd**: `initRoutes`, `postBuild`, and `Backend.Build`
# with its tagger, the builder switch, squash, `Successfully built` and the tagging.*
#
# A request for `POST /v1.40/build` reaches dockerd's router, which finds its handler, `postBuild`.
# The handler turns the request into build options and calls the build backend, which picks a builder,
# runs it, and names the result.
#
# **What you will learn**
#
# - the route table (`initRoutes` of each router) and how a path finds its handler;
# - `postBuild`'s steps, and its rule for errors: an HTTP error before the first output, an in-stream
#   error after;
# - `Backend.Build`: the tagger refusing a bad tag before any work, the switch on `version`, squash
#   (the layers before and after), `Successfully built`, `Successfully tagged`.
#
# Previous: [03 · Docker CLI 构建镜像](03-cli-image-build.ipynb) ·
# Next: [05 · builder v1](05-builder-v1.ipynb)

# %%
import inspect
import io
import json
import tarfile
import urllib.parse

import requests_unixsocket
from _setup import start_daemon

from minibuild import trace
from minibuild.api.router.build import BuildRouter, new_image_build_options
from minibuild.api.types import ImageBuildOptions
from minibuild.backend.build import Backend
from minibuild.backend.tag import new_tagger
from minibuild.client import APIClient
from minibuild.client.context import tar_single_dockerfile

daemon = start_daemon(globals().get("daemon"))
client = APIClient(daemon.host)
session = requests_unixsocket.Session()
base_url = "http+unix://" + urllib.parse.quote(daemon.socket_path, safe="")


def dockerfile_tar(dockerfile: str) -> bytes:
    """A context holding only a Dockerfile, as `docker build - < Dockerfile` sends it."""
    return b"".join(tar_single_dockerfile(dockerfile.encode()))


def post_build(query: dict, body: bytes) -> tuple[int, list[dict]]:
    """POST /v1.40/build with a raw query: the status and the decoded messages (or error body)."""
    answer = session.post(base_url + "/v1.40/build", params=query, data=body)
    return answer.status_code, [json.loads(line) for line in answer.content.splitlines() if line.strip()]


def image_count() -> int:
    return len(client.image_list(all=True))


print("daemon listening on", daemon.host)

# %% [markdown]
# ## The route table: `initRoutes`
#
# Each router of dockerd lists its routes in `initRoutes`; the server registers every route twice,
# with and without the `/v{version}` prefix. The build router, moby
# `api/server/router/build/build.go`:
#
# ```go
# func (r *buildRouter) initRoutes() {
#     r.routes = []router.Route{
#         router.NewPostRoute("/build", r.postBuild, router.WithCancel),
#         router.NewPostRoute("/build/prune", r.postPrune, router.WithCancel),
#         router.NewPostRoute("/build/cancel", r.postCancel),
#     }
# }
# ```

# %%
print(inspect.getsource(BuildRouter.init_routes))
for router in daemon.daemon.create_server().routers:
    for route in router.init_routes():
        print(f"{route.method:<6} {route.path:<28} -> {route.handler.__qualname__}")

# %% [markdown]
# `router.WithCancel` is what lets a client cancel a build by hanging up: the request's context is
# cancelled when the connection closes. In minibuild the handler runs in an asyncio task that aiohttp
# cancels when the client goes away (notebook 05 shows it).

# %% [markdown]
# ## `postBuild`
#
# moby `api/server/router/build/build_routes.go`, the steps (abridged):
#
# ```go
# buildOptions, err := newImageBuildOptions(ctx, r)
# if err != nil {
#     return errf(err)
# }
# buildOptions.AuthConfigs = getAuthConfigs(r.Header)
#
# if buildOptions.Squash && !br.daemon.HasExperimental() {
#     return errdefs.InvalidParameter(errors.New("squash is only supported with experimental mode"))
# }
# ...
# imgID, err := br.backend.Build(ctx, backend.BuildConfig{
#     Source:         body,
#     Options:        buildOptions,
#     ProgressWriter: buildProgressWriter(out, wantAux, createProgressReader),
# })
# if err != nil {
#     return errf(err)
# }
# ```
#
# and `errf`, the rule for errors: if nothing has been written yet, return the error (an HTTP error
# status); once output has been flushed, the status is already `200`, so the error is written as the
# stream's last message. minibuild's handler:

# %%
print(inspect.getsource(BuildRouter.post_build))

# %% [markdown]
# `newImageBuildOptions` parses the query with dockerd's exact refusals. Each of these requests is
# refused before the build starts, so it is an ordinary HTTP error:

# %%
print(inspect.getsource(new_image_build_options)[:1200] + "    ...\n")
hello = dockerfile_tar("FROM busybox:local AS base\nRUN echo hi\n")
refusals = [
    {"buildargs": "{not json"},
    {"labels": '["a"]'},
    {"version": "3"},
    {"platform": "bogus"},
    {"isolation": "bogus"},
    {"shmsize": "abc"},
    {"squash": "1"},
    {"target": "nope"},
    {"dockerfile": "../Dockerfile"},
]
for query in refusals:
    status, messages = post_build(query, hello)
    print(f"{urllib.parse.urlencode(query):<24} -> {status} {messages[0]['message']}")

# %% [markdown]
# A failure *during* the build comes after `Step 1/2` has been streamed: the status is `200`, and the
# error is the last message, with the exit code of the failed `RUN`:

# %%
status, messages = post_build({}, dockerfile_tar("FROM busybox:local\nRUN exit 3\n"))
print(status)
for message in messages:
    print(json.dumps(message))

# %% [markdown]
# ## `Backend.Build`
#
# moby `api/server/backend/build/backend.go` (Docker 19.03), whole:
#
# ```go
# func (b *Backend) Build(ctx context.Context, config backend.BuildConfig) (string, error) {
#     options := config.Options
#     useBuildKit := options.Version == types.BuilderBuildKit
#
#     tagger, err := NewTagger(b.imageComponent, config.ProgressWriter.StdoutFormatter, options.Tags)
#     if err != nil {
#         return "", err
#     }
#
#     var build *builder.Result
#     if useBuildKit {
#         build, err = b.buildkit.Build(ctx, config)
#     } else {
#         build, err = b.builder.Build(ctx, config)
#     }
#     ...
#     var imageID = build.ImageID
#     if options.Squash {
#         if imageID, err = squashBuild(build, b.imageComponent); err != nil {
#             return "", err
#         }
#         ...
#     }
#     if !useBuildKit {
#         stdout := config.ProgressWriter.StdoutFormatter
#         fmt.Fprintf(stdout, "Successfully built %s\n", stringid.TruncateID(imageID))
#     }
#     err = tagger.TagImages(image.ID(imageID))
#     return imageID, err
# }
# ```
#
# minibuild's (the `trace.point` lines are the walkthrough tracing's, and cost nothing when it is off):

# %%
print(inspect.getsource(Backend.build))

# %% [markdown]
# ### The tagger first
#
# `NewTagger` parses every `-t` before anything is built. One bad tag among good ones, and a
# Dockerfile whose `RUN` would take a while: the request fails at once, nothing runs, no image is
# made, and the trace stops inside `Backend.Build`, before the switch.

# %%
print(inspect.getsource(new_tagger))
before = image_count()
slow = dockerfile_tar("FROM busybox:local\nRUN sleep 5 && echo never > /x\n")
with trace.recording() as rec:
    status, messages = post_build({"t": ["good:v1", "Bad-Tag"]}, slow)
print(status, messages)
print("images before and after:", before, image_count())
print()
print(rec)

# %% [markdown]
# ### The switch on `version`
#
# The same Dockerfile with `version=1` and `version=2`. The backend's trace is the same down to the
# switch; then one branch calls the classic builder's `BuildManager.Build`, the other builder-next's
# `Builder.Build`. Only the classic branch writes `Successfully built` (`if !useBuildKit`); the
# BuildKit one reports the image as a `moby.image.id` aux message instead.

# %%
two_stages = dockerfile_tar(
    "FROM busybox:local AS build\nRUN echo compiled > /artifact\n"
    "FROM busybox:local\nCOPY --from=build /artifact /artifact\n"
)
for version in ("1", "2"):
    with trace.recording() as rec:
        status, messages = post_build({"version": version, "t": f"switch:v{version}"}, two_stages)
    backend = rec.find("Backend.build")[0]
    children = [e for e in rec.events if e.parent == backend.seq]
    print(f"version={version}: status {status}, {len(messages)} messages")
    for event in children:
        print(f"   {event.function:<20} {event.mirrors:<28} {event.summary}")
    texts = [m["stream"].strip() for m in messages if "stream" in m]
    print("   last stream messages:", texts[-2:])
    print("   aux ids:", [m.get("id", "(stage image)") for m in messages if "aux" in m][-2:])
    print()

# %% [markdown]
# ### Squash
#
# `--squash` merges the layers a build added into one. The daemon must run in experimental mode:

# %%
layers = dockerfile_tar(
    "FROM busybox:local\nRUN echo one > /one\nRUN echo two > /two\nRUN rm /one && echo three > /three\n"
)
print(post_build({"squash": "1"}, layers))

# %% [markdown]
# A second daemon, experimental, builds the same Dockerfile without and with `squash`. Without, the
# image has busybox's layer plus one per `RUN`. With, busybox's layer plus one: `/one`, made and
# removed within the build, is in no layer at all, and no whiteout is needed for it.

# %%
experimental = start_daemon(globals().get("experimental"), experimental=True)
exp_client = APIClient(experimental.host)


def layer_contents(image: str) -> list[list[str]]:
    """The files of each layer of `image`, read from `docker save`'s archive."""
    saved = exp_client.image_save([image])
    data = b"".join(saved.iter_bytes())
    saved.close()
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as layer_tar:
                members = layer_tar.getnames()
            out.append(["(the busybox rootfs)"] if "bin/busybox" in members else members)
    return out


for squash in (False, True):
    options = ImageBuildOptions(squash=squash, tags=[f"layers:{'squashed' if squash else 'plain'}"])
    with trace.recording() as rec, exp_client.image_build(layers, options) as response:
        texts = [m["stream"].strip() for m in response.messages() if "stream" in m]
    print(f"squash={squash}: {texts[-2]}")
    for index, files in enumerate(layer_contents(options.tags[0])):
        print(f"   layer {index}: {files}")
    print("  ", [f"{e.function} {e.outcome}" for e in rec.find("Backend.squash_build")])

# %% [markdown]
# ### `Successfully built`, then the tags
#
# Last, the tagger writes one `Successfully tagged` per tag, normalized (`:latest` added) and without
# duplicates, in the order given. An empty `t=` is skipped: the image is built but not tagged.

# %%
status, messages = post_build({"t": ["web", "web:v2", "", "web:latest"]}, hello)
for message in messages[-4:]:
    print(json.dumps(message))
print()
for image in client.image_list():
    if any(tag.startswith("web") for tag in image["RepoTags"] or []):
        print(image["Id"][:19], sorted(image["RepoTags"]))

# %% [markdown]
# ## Summary
#
# - dockerd's routers declare their routes in `initRoutes`; `POST /build` → `postBuild`.
# - `postBuild` = `newImageBuildOptions` (with dockerd's refusals) + `getAuthConfigs` + `Backend.Build`;
#   errors before the first output are HTTP errors, errors after it end the stream.
# - `Backend.Build`: the tagger validates every tag first, then `if useBuildKit` switches between the
#   two builders, then squash (experimental), `Successfully built` (classic builder only), and the tags.
#
# Next: [05 · builder v1 / the classic builder's loop](05-builder-v1.ipynb)

# %%
exp_client.close()
experimental.stop()
client.close()
session.close()
daemon.stop()
