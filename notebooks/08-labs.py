# %% [markdown]
# # 08 · labs / Classroom exercises
#
# *Exercises on the whole article, from the build API (镜像构建 API) to the two builders. Each one runs
# against the real daemon and checks your answer.*
#
# Five exercises. Each has an **answer cell** (below its statement) and a **check cell** that builds
# with your answer and says `✓` or explains what is wrong. This copy has worked answers filled in, so
# every check passes; to practise, replace an answer with your own and re-run its check.
#
# **What you will learn**, by doing:
#
# 1. order a Dockerfile so the build cache survives a change to the source;
# 2. make the BuildKit-style build at least 3× faster than builder v1, with the same image contents;
# 3. craft the requests that make the daemon answer given errors;
# 4. read a build: predict its `Step i/N` count, and find in a trace who refused a request;
# 5. build the `X-Registry-Config` header by hand, from a `config.json`.
#
# Previous: [07 · sequential vs parallel](07-sequential-vs-parallel.ipynb) · Back to the start:
# [01 · Docker 架构概览](01-architecture.ipynb)

# %%
import base64
import hashlib
import inspect
import io
import json
import math
import posixpath
import re
import tarfile
import time
import urllib.parse

import requests_unixsocket
from _setup import start_daemon

from minibuild import trace
from minibuild.api.router.build import get_auth_configs
from minibuild.api.types import ImageBuildOptions
from minibuild.builder.next.timeline import critical_path, timeline, vertices_from_trace
from minibuild.client import APIClient

daemon = start_daemon(globals().get("daemon"))
client = APIClient(daemon.host)
session = requests_unixsocket.Session()
base_url = "http+unix://" + urllib.parse.quote(daemon.socket_path, safe="")
print("daemon listening on", daemon.host)

# %% [markdown]
# ## The checking tools
#
# Helpers the checks use: make a context tar, build it, and compare two images by what is in them
# (their files, layers applied in order, and their runtime config), not by ID.


# %%
def context_tar(files: dict[str, str]) -> bytes:
    """A build context as the docker CLI sends it: a tar of these files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build(files: dict[str, str], **options) -> tuple[list[dict], trace.Recording, float]:
    """Build through the API: the messages, the daemon's trace, and the wall-clock seconds it took."""
    started = time.monotonic()
    with trace.recording() as rec, client.image_build(context_tar(files), ImageBuildOptions(**options)) as r:
        messages = list(r.messages())
    return messages, rec, time.monotonic() - started


def post(query: dict, dockerfile: str, headers: dict | None = None):
    """A raw POST /v1.40/build with this query and a context holding only this Dockerfile."""
    body = context_tar({"Dockerfile": dockerfile})
    return session.post(base_url + "/v1.40/build", params=query, data=body, headers=headers)


def failed(messages: list[dict]) -> str:
    return next((m["error"] for m in messages if "error" in m), "")


def contents(image: str) -> tuple[dict, dict]:
    """An image's files (layers applied, whiteouts honoured) and runtime config, via docker save."""
    saved = client.image_save([image])
    data = b"".join(saved.iter_bytes())
    saved.close()
    files: dict[str, tuple] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        config = json.load(archive.extractfile(manifest["Config"]))["config"]
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as tar:
                for member in tar.getmembers():
                    path = "/" + member.name.strip("/")
                    parent, base = posixpath.split(path)
                    if base.startswith(".wh."):
                        gone = parent if base == ".wh..wh..opq" else posixpath.join(parent, base[4:])
                        files = {p: f for p, f in files.items() if not p.startswith(gone + "/")}
                        files.pop(gone if base != ".wh..wh..opq" else "", None)
                        continue
                    digest = member.linkname
                    if member.isfile():
                        digest = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
                    files[path] = (member.type, member.mode, member.uid, member.gid, digest)
    runtime = {k: config.get(k) for k in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels")}
    return files, runtime


def same_contents(image_a: str, image_b: str) -> list[str]:
    """What differs between two images' contents (empty: the same)."""
    (files_a, config_a), (files_b, config_b) = contents(image_a), contents(image_b)
    problems = [f"{path} differs or is missing" for path in sorted(set(files_a) ^ set(files_b))]
    problems += [f"{p} differs" for p in sorted(set(files_a) & set(files_b)) if files_a[p] != files_b[p]]
    problems += [
        f"config {k}: {config_a[k]!r} != {config_b[k]!r}" for k in config_a if config_a[k] != config_b[k]
    ]
    return problems


print("checking tools ready")

# %% [markdown]
# ## Exercise 1 · Keep the cache when the source changes
#
# This Dockerfile installs slow dependencies *after* copying the application, so every edit of
# `app.sh` invalidates the `COPY`, and with it the slow `RUN` after it (notebook 05):
#
# ```dockerfile
# FROM busybox:local
# WORKDIR /app
# COPY app.sh /app/app.sh
# RUN sleep 1 && echo "dependencies installed" > /deps.txt
# CMD ["sh", "/app/app.sh"]
# ```
#
# **Your task:** write a Dockerfile that builds the same image (same files, same config), but whose
# slow `RUN` is still `Using cache` after `app.sh` changes.

# %%
ORIGINAL_1 = """\
FROM busybox:local
WORKDIR /app
COPY app.sh /app/app.sh
RUN sleep 1 && echo "dependencies installed" > /deps.txt
CMD ["sh", "/app/app.sh"]
"""

# Your answer (a worked answer is filled in):
ANSWER_1 = """\
FROM busybox:local
WORKDIR /app
RUN sleep 1 && echo "dependencies installed" > /deps.txt
COPY app.sh /app/app.sh
CMD ["sh", "/app/app.sh"]
"""


# %%
def check_exercise_1(dockerfile: str) -> None:
    app_v1, app_v2 = "echo version 1\n", "echo version 2\n"
    build({"Dockerfile": ORIGINAL_1, "app.sh": app_v1}, tags=["lab1:original"])
    messages, _, _ = build({"Dockerfile": dockerfile, "app.sh": app_v1}, tags=["lab1:answer"])
    assert not failed(messages), f"your Dockerfile does not build: {failed(messages)}"
    problems = same_contents("lab1:original", "lab1:answer")
    assert not problems, "not the same image as the original: " + "; ".join(problems[:5])
    messages, _, _ = build({"Dockerfile": dockerfile, "app.sh": app_v2}, tags=["lab1:answer"])
    text = "".join(m.get("stream", "") for m in messages)
    slow = [step for step in text.split("Step ")[1:] if "sleep 1" in step.splitlines()[0]]
    assert slow, "the slow RUN step is gone: keep it, the image needs /deps.txt"
    assert "Using cache" in slow[0], "after changing app.sh, the slow RUN ran again: it is not cached"
    print("✓ Exercise 1 passed: same image, and the slow step stays cached when app.sh changes")


check_exercise_1(ANSWER_1)

# %% [markdown]
# ## Exercise 2 · At least 3× faster with BuildKit, same image
#
# Eight slow steps, each independent of the others, written one after another:
#
# ```dockerfile
# FROM busybox:local
# RUN sleep 1 && echo 1 > /part1
# RUN sleep 1 && echo 2 > /part2
# ...
# RUN sleep 1 && echo 8 > /part8
# ```
#
# Built by builder v1 it takes eight seconds and more; built by the BuildKit-style builder, just as long:
# each `RUN` depends on the one before (it runs on its result), so the graph is a chain.
#
# **Your task:** rewrite it so that the BuildKit-style build (`version=2`, no cache) can take at most a
# third of the time builder v1 takes for the original, and the image has exactly the same files and
# config. (Notebook 07 shows what lets the solver run steps at once.)
#
# The check does not race two stopwatches (on a busy machine a race is luck). It reads your build's
# trace and takes its critical path (notebook 07): the longest chain of steps that had to wait for each
# other, each step counted in whole seconds it ran (a `sleep 1` counts 1, a quick `COPY` 0). No
# scheduler can beat that chain, however many cores it has; builder v1 runs every step in a row.

# %%
ORIGINAL_2 = "FROM busybox:local\n" + "".join(f"RUN sleep 1 && echo {i} > /part{i}\n" for i in range(1, 9))

# Your answer (a worked answer is filled in): one stage per part, gathered at the end.
ANSWER_2 = "".join(
    f"FROM busybox:local AS part{i}\nRUN sleep 1 && echo {i} > /part{i}\n" for i in range(1, 9)
)
ANSWER_2 += "FROM busybox:local\n" + "".join(f"COPY --from=part{i} /part{i} /part{i}\n" for i in range(1, 9))
print(ANSWER_2)


# %%
def check_exercise_2(dockerfile: str) -> None:
    messages, _, sequential = build({"Dockerfile": ORIGINAL_2}, no_cache=True, tags=["lab2:original"])
    assert not failed(messages), failed(messages)
    messages, _, _ = build({"Dockerfile": dockerfile}, version="2", no_cache=True, tags=["lab2:answer"])
    assert not failed(messages), f"your Dockerfile does not build: {failed(messages)}"
    problems = same_contents("lab2:original", "lab2:answer")
    assert not problems, "not the same image as the original: " + "; ".join(problems[:5])
    trace_messages = [base64.b64decode(m["aux"]) for m in messages if m.get("id") == "moby.buildkit.trace"]
    entries = timeline(vertices_from_trace(trace_messages))
    for entry in entries:  # each step in the whole seconds it ran: what the sleeps cost, not the noise
        entry.end = entry.start + math.floor(entry.duration)
    chain, path = critical_path(entries)
    assert chain * 3 <= math.floor(sequential), (
        f"builder v1 ran the original in about {math.floor(sequential)} s; your build's longest chain of "
        f"dependent steps takes {chain:.0f} s ({' → '.join(e.name for e in path if e.duration)}): "
        "not a third yet"
    )
    print("✓ Exercise 2 passed: same image, and no step waits on more than a third of the original's work")


check_exercise_2(ANSWER_2)

# %% [markdown]
# ## Exercise 3 · Make the daemon say it
#
# For each answer below, write the request (query parameters and Dockerfile) that makes the daemon give
# exactly that answer. The reference is dockerd's observed behaviour (notebooks 02 and 04).
#
# | | status | answer |
# |---|---|---|
# | a | 400 | `failed to reach build target release in Dockerfile` |
# | b | 500 | `forbidden path outside the build context: ../Dockerfile ()` |
# | c | 200 | a build stream whose last message is an `errorDetail` with `"code": 7` |
# | d | 400 | `error reading build args: json: cannot unmarshal number into Go value of type string` |

# %%
# Your answers (worked answers are filled in): the query parameters and the Dockerfile of each request.
ANSWER_3 = {
    "a": ({"target": "release"}, "FROM busybox:local AS build\nRUN true\n"),
    "b": ({"dockerfile": "../Dockerfile"}, "FROM busybox:local\n"),
    "c": ({}, "FROM busybox:local\nRUN exit 7\n"),
    "d": ({"buildargs": '{"VERSION": 1}'}, "FROM busybox:local\n"),
}


# %%
def check_exercise_3(answers: dict) -> None:
    expected = {
        "a": (400, "failed to reach build target release in Dockerfile"),
        "b": (500, "forbidden path outside the build context: ../Dockerfile ()"),
        "d": (400, "error reading build args: json: cannot unmarshal number into Go value of type string"),
    }
    for part in "abcd":
        query, dockerfile = answers[part]
        answer = post(query, dockerfile)
        if part == "c":
            messages = [json.loads(line) for line in answer.content.splitlines() if line.strip()]
            assert answer.status_code == 200, f"c: status {answer.status_code}, expected 200 and a stream"
            detail = messages[-1].get("errorDetail", {})
            assert detail.get("code") == 7, (
                f"c: the last message is {messages[-1]}, not an errorDetail with code 7"
            )
        else:
            message = answer.json().get("message", "")
            assert (answer.status_code, message) == expected[part], (
                f"{part}: got {answer.status_code} {message!r}, expected {expected[part]}"
            )
        print(f"✓ 3{part}")
    print("✓ Exercise 3 passed: four requests, four exact answers")


check_exercise_3(ANSWER_3)

# %% [markdown]
# ## Exercise 4 · Read the build
#
# **4a.** How many steps does builder v1 announce (`Step i/N`: what is N?) for this Dockerfile, built
# with `--target test`? (Notebook 05: meta `ARG`s count, `FROM`s count, and the loop stops at the
# target.)
#
# ```dockerfile
# ARG BASE=busybox:local
# ARG VERSION=1
# FROM ${BASE} AS build
# RUN echo compiling > /app
# FROM build AS test
# RUN echo testing
# FROM ${BASE} AS release
# COPY --from=build /app /app
# ```
#
# **4b.** A request with `buildargs={"a":` (cut short) is refused. Which **moby** function refuses it?
# Answer with its Go name; the check finds the answer in the daemon's trace of that request.
#
# **4c.** Rebuild notebook 06's kind of build with the BuildKit-style builder when everything is
# cached: how many vertices does the solver visit (`Job._solve` calls), the context included?

# %%
DOCKERFILE_4 = """\
ARG BASE=busybox:local
ARG VERSION=1
FROM ${BASE} AS build
RUN echo compiling > /app
FROM build AS test
RUN echo testing
FROM ${BASE} AS release
COPY --from=build /app /app
"""

# Your answers (worked answers are filled in):
ANSWER_4A = 6  # 2 meta ARGs, FROM and RUN of `build`, FROM and RUN of `test`; `release` is after the target
ANSWER_4B = "newImageBuildOptions"
ANSWER_4C = (
    2  # the context (`copy /context /`) and the target, which is cached: its inputs are never asked for
)


# %%
def check_exercise_4(steps: int, refuser: str, visited: int) -> None:
    messages, _, _ = build({"Dockerfile": DOCKERFILE_4}, target="test")
    announced = {
        int(m) for m in re.findall(r"Step \d+/(\d+) :", "".join(x.get("stream", "") for x in messages))
    }
    assert announced == {steps}, f"4a: the build announced N = {announced}, you said {steps}"
    print("✓ 4a")

    with trace.recording() as rec:
        post({"buildargs": '{"a":'}, "FROM scratch\n")
    refusals = [e for e in trace.tree_order(rec.events) if e.error]
    first = max(refusals, key=lambda e: e.depth)  # the deepest failed call is where the error started
    assert refuser == first.mirrors, f"4b: the trace says {first.mirrors} refused it, not {refuser}"
    print("✓ 4b:", first.outcome)

    build({"Dockerfile": DOCKERFILE_4}, version="2", target="release")
    _, rec, _ = build({"Dockerfile": DOCKERFILE_4}, version="2", target="release")
    solved = len(rec.find("Job._solve"))
    assert visited == solved, (
        f"4c: the solver visited {solved} vertices on the cached rebuild, you said {visited}"
    )
    print("✓ 4c")
    print("✓ Exercise 4 passed")


check_exercise_4(ANSWER_4A, ANSWER_4B, ANSWER_4C)

# %% [markdown]
# ## Exercise 5 · `X-Registry-Config` by hand
#
# The docker CLI sends every credential of `~/.docker/config.json` with each build, in the
# `X-Registry-Config` header (notebook 02). Write `encode_registry_config(config_json)` **without**
# minibuild's encoder: from a `config.json`-shaped dict (each `auth` is base64 of `user:password`),
# return the header's value, as the CLI makes it.
#
# The check hands your header to the daemon's own decoder (`getAuthConfigs`) and then sends it with a
# real build: the trace must show the daemon found credentials for both registries.

# %%
CONFIG_5 = {
    "auths": {
        "registry.example.com": {"auth": base64.b64encode(b"alice:s3cret").decode()},
        "127.0.0.1:5000": {"auth": base64.b64encode(b"ci-bot:t0ken").decode()},
    }
}


# Your answer (a worked answer is filled in):
def encode_registry_config(config_json: dict) -> str:
    auths = {}
    for server, entry in config_json["auths"].items():
        username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        auths[server] = {"username": username, "password": password, "serveraddress": server}
    return base64.urlsafe_b64encode(json.dumps(auths).encode()).decode()


# %%
def check_exercise_5(encode) -> None:
    header = encode(CONFIG_5)
    decoded = get_auth_configs({"X-Registry-Config": header})
    want = {"registry.example.com": ("alice", "s3cret"), "127.0.0.1:5000": ("ci-bot", "t0ken")}
    got = {server: (auth.username, auth.password) for server, auth in decoded.items()}
    assert got == want, f"the daemon decodes your header as {got}, expected {want}"
    with trace.recording() as rec:
        headers = {"X-Registry-Config": header, "Content-Type": "application/x-tar"}
        post({}, "FROM scratch\nLABEL l=5\n", headers)
    (event,) = rec.find("get_auth_configs")
    assert event.outcome == f"credentials for {sorted(want)}", f"the daemon's trace says: {event.outcome}"
    print("✓ Exercise 5 passed:", event.outcome)


print(inspect.getsource(encode_registry_config))
check_exercise_5(encode_registry_config)

# %% [markdown]
# ## Summary
#
# - Order a Dockerfile from what changes least to what changes most: the cache survives edits.
# - Write independent work as independent stages: the BuildKit-style solver runs them at once.
# - The daemon's answers are precise: which parameter, which status, HTTP error or in-stream error.
# - `Step i/N` counts meta ARGs and every stage up to the target; a cached BuildKit target is all the
#   solver looks at; `newImageBuildOptions` is where a bad query stops.
# - `X-Registry-Config` is base64url JSON of every credential in `config.json`: protect the socket.
#
# Back to the start: [01 · Docker 架构概览](01-architecture.ipynb)

# %%
session.close()
client.close()
daemon.stop()
