# %% [markdown]
# # 03 · Docker CLI 构建镜像 / The client side of a build
#
# *Mirrors the article's part **Docker CLI 构建镜像**: `ImageBuild`, `imageBuildOptionsToQuery`,
# `postRaw`.*
#
# `docker build .` packs the directory into a tar, turns its flags into `types.ImageBuildOptions`, and
# hands both to the Go client library's `ImageBuild`. minibuild's client mirrors that library
# function by function. This notebook follows one call down to the socket and back.
#
# **What you will learn**
#
# - `image_build` (moby `ImageBuild`): options → query, credentials → header, then `post_raw`;
# - `image_build_options_to_query` (`imageBuildOptionsToQuery`): every option as a query parameter,
#   zero values included, as the 1.40-era client sends them;
# - the two headers every build carries, and `post_raw` (`postRaw`), the plain HTTP POST under it all;
# - reading the answer message by message as it streams, and what the CLI prints from it;
# - how the client learns the daemon's OS from the `Server` header (`getDockerOS`).
#
# Previous: [02 · 镜像构建 API](02-build-api.ipynb) ·
# Next: [04 · 构建的核心：Dockerd](04-dockerd-router-and-backend.ipynb)

# %%
import inspect
import io
import json
import os
import shutil
import subprocess
import time
from contextlib import redirect_stderr, redirect_stdout

from _setup import context_dir, minibuild_cli, remove_scratch, start_daemon

from minibuild import trace
from minibuild.api.jsonmessage import JSONError, decode_stream, display_json_messages_stream
from minibuild.api.types import ImageBuildOptions
from minibuild.cli.main import main as cli_main
from minibuild.client import APIClient
from minibuild.client.client import encode_query
from minibuild.client.context import tar_context
from minibuild.client.image_build import (
    BuildAPIMixin,
    encode_auth_configs,
    get_docker_os,
    image_build_options_to_query,
)

daemon = start_daemon(globals().get("daemon"))
client = APIClient(daemon.host)

minibuild = minibuild_cli(daemon)


app = context_dir(
    {
        "Dockerfile": "FROM busybox:local AS base\nCOPY greeting.txt /\n"
        "FROM base AS final\nRUN cat /greeting.txt && echo built > /proof\n",
        "greeting.txt": "hello from the context\n",
    }
)
print("daemon listening on", daemon.host)

# %% [markdown]
# ## `ImageBuild`
#
# moby's `client/image_build.go` (Docker 19.03), the lines the article walks through:
#
# ```go
# func (cli *Client) ImageBuild(ctx context.Context, buildContext io.Reader,
#     options types.ImageBuildOptions) (types.ImageBuildResponse, error) {
#     query, err := cli.imageBuildOptionsToQuery(options)
#     ...
#     headers := http.Header(make(map[string][]string))
#     buf, err := json.Marshal(options.AuthConfigs)
#     headers.Add("X-Registry-Config", base64.URLEncoding.EncodeToString(buf))
#     headers.Set("Content-Type", "application/x-tar")
#
#     serverResp, err := cli.postRaw(ctx, "/build", query, buildContext, headers)
#     ...
#     osType := getDockerOS(serverResp.header.Get("Server"))
#     return types.ImageBuildResponse{Body: serverResp.body, OSType: osType}, nil
# }
# ```
#
# minibuild's `image_build`, the same four moves:

# %%
print(inspect.getsource(BuildAPIMixin.image_build))

# %% [markdown]
# ## `imageBuildOptionsToQuery`
#
# Every field of the options becomes a query parameter. Strings and numbers are always sent, even
# empty or zero (`cpushares=0`, `target=`); booleans only when true (`nocache=1`), except `rm`, which
# is always sent because the daemon's default for a missing `rm` is *true*; maps and lists as JSON.
#
# ```go
# if options.NoCache {
#     query.Set("nocache", "1")
# }
# if options.Remove {
#     query.Set("rm", "1")
# } else {
#     query.Set("rm", "0")
# }
# ...
# buildArgsJSON, err := json.Marshal(options.BuildArgs)
# query.Set("buildargs", string(buildArgsJSON))
# ```

# %%
print(inspect.getsource(image_build_options_to_query))

# %% [markdown]
# Options as `docker build -t app:v1 --build-arg VERSION=1 --no-cache --target final .` makes them:

# %%
options = ImageBuildOptions(
    tags=["app:v1"], build_args={"VERSION": "1"}, no_cache=True, target="final", dockerfile="Dockerfile"
)
query = image_build_options_to_query(options, client.version)
for key, value in sorted(query.items()):
    print(f"{key:>13} = {value!r}")
print()
print("/v1.40/build?" + encode_query(query))

# %% [markdown]
# ## The headers
#
# `X-Registry-Config` is **always** sent, even without credentials: `{}` encodes as `e30=`, exactly
# what dockerd saw from the docker CLI. `Content-Type` is `application/x-tar`.

# %%
print("X-Registry-Config:", encode_auth_configs(options))
print("Content-Type: application/x-tar")

# %% [markdown]
# ## `postRaw`
#
# Under every call of the client library is one small function (moby `client/request.go`):
#
# ```go
# func (cli *Client) postRaw(ctx context.Context, path string, query url.Values, body io.Reader,
#     headers map[string][]string) (serverResponse, error) {
#     return cli.sendRequest(ctx, "POST", path, query, body, headers)
# }
# ```
#
# minibuild's, and the request helper it calls (version prefix, query encoding, errors):

# %%
print(inspect.getsource(client.post_raw))
print(inspect.getsource(client._send))

# %% [markdown]
# Calling it by hand does what `image_build` does. The context is the tar the CLI would send; the
# answer's status and headers come first, before any build output:

# %%
_, chunks = tar_context(app)
body = b"".join(chunks)
headers = {"X-Registry-Config": encode_auth_configs(options), "Content-Type": "application/x-tar"}
resp = client.post_raw("/build", query, body, headers)
print("status:", resp.status_code)
for name in ("Content-Type", "Transfer-Encoding", "Api-Version", "Docker-Experimental", "Ostype", "Server"):
    print(f"{name}: {resp.headers.get(name)}")
raw_chunks = list(resp.iter_bytes())  # the body, chunk by chunk as it arrived (read in the next cell)
resp.close()

# %% [markdown]
# ## Reading the stream, message by message
#
# The body is chunked, one JSON message per chunk, each ending in `\r\n`. Raw, the first chunks:

# %%
for chunk in raw_chunks[:6]:
    print(repr(chunk))
print(f"... {len(raw_chunks)} chunks in all")

# %% [markdown]
# A client decodes successive JSON values from the bytes as they come (Go's `json.Decoder`), so a
# message split across chunks, or two in one chunk, decode the same. `decode_stream`:

# %%
print(inspect.getsource(decode_stream))
messages = list(decode_stream(raw_chunks))
for message in messages:
    print(json.dumps(message))

# %% [markdown]
# They arrive while the build runs, not at its end. With a step that takes a second, the first
# message reaches the client well before the last:

# %%
slow = context_dir({"Dockerfile": "FROM busybox:local\nRUN sleep 1 && echo slow step done\n"})
arrivals = []
with client.image_build(b"".join(tar_context(slow)[1]), ImageBuildOptions(no_cache=True)) as response:
    for message in response.messages():
        arrivals.append((time.monotonic(), message))
first, last = arrivals[0][0], arrivals[-1][0]
print(f"{len(arrivals)} messages; the first arrived more than 0.5 s before the last: {last - first > 0.5}")
print("first:", arrivals[0][1])
print("last: ", arrivals[-1][1])

# %% [markdown]
# What `docker build` prints is these messages rendered by `jsonmessage.DisplayJSONMessagesStream`:
# `stream` text as is, `aux` messages (the image ID) handed to a callback instead of printed, an
# `error` raised, which becomes the command's exit status.

# %%
built_ids = []
display_json_messages_stream(messages, io.StringIO(), False, lambda jm: built_ids.append(jm.aux["ID"]))
text = io.StringIO()
display_json_messages_stream(messages, text, False)
print(text.getvalue())
print("aux callback got:", built_ids)

# %% [markdown]
# A failing `RUN` ends the stream with an error message carrying the exit code; the CLI raises it and
# exits with that code:

# %%
failing = context_dir({"Dockerfile": "FROM busybox:local\nRUN echo about to fail && exit 3\n"})
with client.image_build(b"".join(tar_context(failing)[1])) as response:
    messages = list(response.messages())
print(json.dumps(messages[-1]))
try:
    display_json_messages_stream(messages, io.StringIO(), False)
except JSONError as err:
    print(f"JSONError: {err.message!r}, code {err.code}")
minibuild("build", str(failing))

# %% [markdown]
# ## The daemon's OS, from the `Server` header
#
# The response carries `Server: Docker/<version> (<os>)`. The client keeps the part in parentheses as
# `ImageBuildResponse.OSType` (the CLI uses it to warn about Windows file modes). moby:
#
# ```go
# var headerRegexp = regexp.MustCompile(`\ADocker/.+\s\((.+)\)\z`)
#
# func getDockerOS(serverHeader string) string {
#     var osType string
#     matches := headerRegexp.FindStringSubmatch(serverHeader)
#     if len(matches) > 0 {
#         osType = matches[1]
#     }
#     return osType
# }
# ```

# %%
print(inspect.getsource(get_docker_os))
for header in (resp.headers["Server"], "Docker/19.03.12 (linux)", "Docker/20.10.7 (windows)", "nginx/1.25"):
    print(f"{header!r:>34} -> {get_docker_os(header)!r}")
with client.image_build(b"".join(tar_context(app)[1]), ImageBuildOptions(tags=["app:v1"])) as response:
    print("ImageBuildResponse.os_type:", repr(response.os_type))

# %% [markdown]
# ## The whole command
#
# `minibuild build` is the CLI on top of all this: it validates the tags, packs and streams the context
# (counting it: `Sending build context to Docker daemon`), calls `image_build`, and renders the stream.
# The trace shows what arrived at the daemon:

# %%
with trace.recording() as rec:
    minibuild("build", "-t", "app:v1", "--build-arg", "VERSION=1", "--target", "final", str(app))
print()
print(rec.render())

# %% [markdown]
# ## Optional: what the real docker CLI sends
#
# Where the `docker` binary exists it can build against our daemon (classic builder:
# `DOCKER_BUILDKIT=0`). Its query, as the daemon received it, beside minibuild's for the same flags.

# %%
# NBVAL_IGNORE_OUTPUT
# Output depends on whether this machine has a docker CLI (and on its version).
docker = shutil.which("docker")
if docker is None:
    print("no docker CLI on this machine: skipped")
else:
    env = {**os.environ, "DOCKER_BUILDKIT": "0", "DOCKER_HOST": daemon.host}
    argv = [docker, "build", "-t", "app:v1", "--target", "final", str(app)]
    with trace.recording() as theirs:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    with trace.recording() as ours, redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        cli_main(["--host", daemon.host, "build", "-t", "app:v1", "--target", "final", str(app)])
    sent = theirs.find("BuildRouter.post_build")
    if not sent:
        print("the docker CLI sent no build request:", done.stderr.strip()[:300])
    else:
        q_theirs = dict(sent[0].details["query"])
        q_ours = dict(ours.find("BuildRouter.post_build")[0].details["query"])
        for key in sorted(set(q_theirs) | set(q_ours)):
            mark = "" if q_theirs.get(key) == q_ours.get(key) else "   <- differs"
            print(f"{key:>13}: docker={q_theirs.get(key)!r:<16} minibuild={q_ours.get(key)!r}{mark}")

# %% [markdown]
# ## Summary
#
# - `image_build` = `image_build_options_to_query` + two headers (`X-Registry-Config`, always;
#   `Content-Type: application/x-tar`) + `post_raw("/build", …)` with the tar as the body.
# - The query carries every option, zero values included; `rm` always, since its default is true.
# - The answer is a chunked stream of JSON messages, decoded as they arrive; `aux` carries the image
#   ID, an `errorDetail` ends a failed build and becomes the exit status.
# - `OSType` comes from the `Server` header, `Docker/<version> (<os>)`.
#
# Next: [04 · 构建的核心：Dockerd / the router and the backend](04-dockerd-router-and-backend.ipynb)

# %%
client.close()
daemon.stop()
remove_scratch()
