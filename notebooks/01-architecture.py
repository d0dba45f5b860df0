# %% [markdown]
# # 01 · Docker 架构概览 / Architecture: a client and a daemon
#
# *Mirrors the article's first part, **Docker 架构概览**.*
#
# `docker` is only a client. Everything `docker build` does happens in a daemon, `dockerd`, which
# serves a REST API on a Unix socket (`/var/run/docker.sock`). minibuild rebuilds that daemon in
# Python and runs it right here, inside this notebook, on a socket of its own.
#
# **What you will learn**
#
# - that the API is plain HTTP/1.1 over a Unix socket, by speaking it byte by byte;
# - what `minibuild version` says next to `docker version`'s `API version: 1.40 (minimum version 1.12)`;
# - how client and daemon agree on an API version: a 1.12 client works, a 1.11 client is refused with
#   the daemon's own message;
# - the whole path of one build through the daemon, as a trace: the map for the notebooks that follow.
#
# Next: [02 · 镜像构建 API / the build API](02-build-api.ipynb)

# %% [markdown]
# ## Setup: an embedded daemon
#
# `start_daemon()` (in `_setup.py` beside the notebooks, which every notebook's setup uses) calls
# `embedded_daemon()`: it starts the real daemon (the same code as `minibuild daemon`) in a background
# thread, with a temporary data root and socket. Re-running this cell keeps the running daemon. The
# `busybox:local` image is made offline from this machine's static busybox, as the article's
# reference runs used a `docker import`ed busybox. `SOURCE_DATE_EPOCH` makes builds reproducible.

# %%
import inspect
import os
import shutil
import socket
import stat
import subprocess

from _setup import minibuild_cli, start_daemon

from minibuild import trace
from minibuild.api import server, versions
from minibuild.api.types import ImageBuildOptions
from minibuild.client import APIClient
from minibuild.client.client import APIError
from minibuild.client.context import tar_single_dockerfile

daemon = start_daemon(globals().get("daemon"))

minibuild = minibuild_cli(daemon)


print("daemon listening on", daemon.host)

# %% [markdown]
# ## The socket
#
# dockerd's socket is a file of type *socket*, mode `0660`, group `docker`: whoever can write to it can
# drive the daemon. Ours is the same kind of file.

# %%
st = os.stat(daemon.socket_path)
print("is a socket:", stat.S_ISSOCK(st.st_mode))
print("mode:", oct(stat.S_IMODE(st.st_mode)))

# %% [markdown]
# ## It is just HTTP
#
# The article's first experiment is `curl --unix-socket /var/run/docker.sock http://localhost/_ping`.
# Underneath, a client writes an HTTP request to the socket and reads the answer. Here it is by hand:
# connect, send four lines, print what comes back. The headers are dockerd's: `Api-Version`,
# `Docker-Experimental`, `Ostype`, `Server: Docker/<version> (linux)`.

# %%
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
    sock.connect(daemon.socket_path)
    sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
print(answer.decode())

# %% [markdown]
# ## `minibuild version` next to `docker version`
#
# On the article's machine (Docker 19.03), `docker version` ends with:
#
# ```
# Server: Docker Engine - Community
#  Engine:
#   Version:          19.03.x
#   API version:      1.40 (minimum version 1.12)
# ```
#
# Two numbers matter: the daemon speaks API **1.40**, and still serves clients as old as **1.12**.
# `minibuild version` asks our daemon's `GET /version` and prints it in the same layout (the Go version
# line names the Python that runs it).

# %%
minibuild("version")

# %% [markdown]
# ## Version negotiation
#
# Every request path may start with a version, `/v1.40/build`. A middleware checks it before any
# handler runs. moby's `api/server/middleware/version.go`:
#
# ```go
# if versions.LessThan(apiVersion, v.minVersion) {
#     return versionUnsupportedError{version: apiVersion, minVersion: v.minVersion}
# }
# if versions.GreaterThan(apiVersion, v.defaultVersion) {
#     return versionUnsupportedError{version: apiVersion, maxVersion: v.defaultVersion}
# }
# ```
#
# minibuild's check, the function the daemon runs for every request:

# %%
print(inspect.getsource(server.check_api_version))
print("default:", versions.DEFAULT_VERSION, " minimum:", versions.MIN_VERSION)

# %% [markdown]
# The client's half (moby `client/client.go`, `NegotiateAPIVersion`): ask `/_ping` without a version,
# read its `Api-Version` header, and use the lower of the daemon's version and its own.

# %%
print(inspect.getsource(APIClient.negotiate_api_version_ping))
client = APIClient(daemon.host)
client.negotiate_api_version()
print("negotiated:", client.version)

# %% [markdown]
# A client pinned to **1.12** (Docker 1.0's API) is served; **1.11** and **1.41** are refused by the
# middleware with dockerd's messages, before any handler runs.

# %%
for version in ("1.12", "1.11", "1.41"):
    pinned = APIClient(daemon.host, version=version)
    try:
        answer = pinned.server_version()
        print(f"{version}: served, daemon API {answer['ApiVersion']} (minimum {answer['MinAPIVersion']})")
    except APIError as err:
        print(f"{version}: HTTP {err.status_code}: {err.message}")
    finally:
        pinned.close()

# %% [markdown]
# dockerd answers the two differently, and so does minibuild: too old in plain text (the headers of
# Go's `http.Error`: `text/plain`, `nosniff`), too new as a JSON error. The raw answers:

# %%
for prefix in ("v1.11", "v1.41"):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(daemon.socket_path)
        sock.sendall(f"GET /{prefix}/version HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.decode().partition("\r\n\r\n")
    status_line = head.splitlines()[0]
    content_type = next(h for h in head.splitlines() if h.lower().startswith("content-type"))
    print(f"/{prefix}/version -> {status_line} | {content_type} | {body.strip()}")

# %% [markdown]
# ## The path of one build
#
# The rest of this series follows one `docker build` through the daemon. With tracing on, the daemon
# records every boundary the article names: the minibuild function, the moby function it mirrors
# (middle column), what it was given and, after `→`, what came of it. Here is a one-line Dockerfile
# sent by the client as a tar:

# %%
with trace.recording() as rec:
    body = b"".join(tar_single_dockerfile(b"FROM scratch\nLABEL hello=world\n"))
    with client.image_build(body, ImageBuildOptions(tags=["hello:v1"])) as response:
        for message in response.messages():
            print(message)
print()
print(rec)

# %% [markdown]
# Read the trace top down and you have the article's map:
#
# - **the client** (`docker build`, notebook 03) packed the context and sent `POST /v1.40/build`;
# - **the router** (`postBuild`, notebook 04) turned the query into build options and read the
#   registry credentials;
# - **the backend** (`Backend.Build`, notebook 04) checked the tags, **switched** on the builder
#   version and tagged the result;
# - **the classic builder** (notebook 05) ran its loop: one stage, one instruction after another;
# - the BuildKit-style builder (notebooks 06 and 07) would have taken the other branch of the switch.

# %% [markdown]
# ## Optional: the real `docker` CLI, and a real dockerd
#
# Where the `docker` CLI is installed it can talk to our daemon directly (it only needs a socket that
# speaks the API). Where a real dockerd is reachable, its versions are printed beside ours. Without
# either, each says so in one line.

# %%
# NBVAL_IGNORE_OUTPUT
# Output depends on what this machine has: a docker CLI, a running dockerd, or neither.
docker = shutil.which("docker")
if docker is None:
    print("no docker CLI on this machine: skipped")
else:
    fmt = "--format={{.Server.APIVersion}} (minimum version {{.Server.MinAPIVersion}})"
    ours = subprocess.run(
        [docker, "-H", daemon.host, "version", fmt], capture_output=True, text=True, timeout=30
    )
    print("docker CLI -> minibuild: API version", ours.stdout.strip() or ours.stderr.strip())
    real = subprocess.run([docker, "version", fmt], capture_output=True, text=True, timeout=30)
    if real.returncode == 0:
        print("docker CLI -> dockerd:   API version", real.stdout.strip())
    else:
        print("no dockerd reachable: skipped")

# %% [markdown]
# ## Summary
#
# - The docker CLI is a client; `dockerd` does the work behind a REST API on a Unix socket, and any
#   HTTP client (curl, requests, a raw socket) can drive it.
# - Paths carry an API version. The daemon serves 1.12 to 1.40 (dockerd 19.03's range) and refuses
#   the rest before any handler runs; clients negotiate down to the daemon's version.
# - A build crosses router → backend → builder; the trace above is the map for notebooks 02–07.
#
# Next: [02 · 镜像构建 API / the build API](02-build-api.ipynb)

# %%
client.close()
daemon.stop()
