# %% [markdown]
# # 05 · builder v1 / The classic builder's loop
#
# *Mirrors the article's part on **builder v1**: `dispatchDockerfileWithCancellation` and its loop.*
#
# Before BuildKit, `docker build` was a for-loop: parse the Dockerfile into stages, then for every
# stage, in order, every instruction, one after another. Each instruction runs in a container (or just
# changes the config) and is committed as an image: the ` ---> <id>` lines of the output.
#
# **What you will learn**
#
# - the Dockerfile as the parser sees it (an AST), then as typed instructions grouped in stages;
# - `dispatch_dockerfile_with_cancellation`, step by step: each `Step i/N`, its `dispatch`, its
#   ` ---> id`, the stage committed at the end;
# - the build cache on a second run, and what invalidates it;
# - the warning for a `--build-arg` nothing used;
# - cancelling a build mid-way, the way `docker build` is cancelled: the client hangs up.
#
# Previous: [04 · 构建的核心：Dockerd](04-dockerd-router-and-backend.ipynb) ·
# Next: [06 · buildkit](06-buildkit.ipynb)

# %%
import inspect
import os
import time
from pathlib import Path

from _setup import context_dir, minibuild_cli, remove_scratch, start_daemon

from minibuild import trace
from minibuild.api.types import ImageBuildOptions
from minibuild.builder.dockerfile.buildargs import BuildArgs
from minibuild.builder.dockerfile.builder import Builder
from minibuild.builder.dockerfile.evaluator import dispatch
from minibuild.client import APIClient
from minibuild.client.context import tar_context
from minibuild.dockerfile import parse, parse_instructions

daemon = start_daemon(globals().get("daemon"))
client = APIClient(daemon.host)

minibuild = minibuild_cli(daemon)


DOCKERFILE = """\
ARG BASE=busybox:local
FROM ${BASE} AS compile
WORKDIR /src
COPY main.c .
RUN echo "compiled from $(wc -c < main.c) bytes" > /src/app \\
 && echo compiling
FROM ${BASE}
LABEL org.example.stage=final
COPY --from=compile /src/app /usr/local/bin/app
CMD ["cat", "/usr/local/bin/app"]
"""
app = context_dir({"Dockerfile": DOCKERFILE, "main.c": "int main(void) { return 0; }\n"})
print("daemon listening on", daemon.host)

# %% [markdown]
# ## The Dockerfile, parsed
#
# The parser (BuildKit's `frontend/dockerfile/parser`, shared by both builders) turns the text into an
# AST: one node per instruction, continuation lines joined, arguments split as each keyword wants.
# `Node.Dump()`'s S-expression form, the one upstream's parser tests compare:

# %%
result = parse(DOCKERFILE.encode())
print(result.ast.dump())
print()
for node in result.ast.children:
    print(f"lines {node.start_line}-{node.end_line}: {node.original}")

# %% [markdown]
# Then `instructions.Parse` types them and groups them into **stages**, one per `FROM`. The `ARG`
# before the first `FROM` is a *meta arg*: it belongs to no stage and can be used in `FROM` lines.

# %%
stages, meta_args = parse_instructions(result.ast)
print("meta args:", [str(arg) for arg in meta_args])
for index, stage in enumerate(stages):
    print(f"stage {index} name={stage.name!r} base={stage.base_name!r}")
    for command in stage.commands:
        print(f"    {type(command).__name__:<18} {command}")

# %% [markdown]
# ## `dispatchDockerfileWithCancellation`
#
# moby `builder/dockerfile/builder.go` (19.03), the loop at the heart of the classic builder:
#
# ```go
# totalCommands := len(metaArgs) + len(parseResult)
# for _, stage := range parseResult {
#     totalCommands += len(stage.Commands)
# }
# ...
# for _, stage := range parseResult {
#     dispatchRequest = newDispatchRequest(b, escapeToken, source, buildArgs, stagesResults)
#     currentCommandIndex = printCommand(b.Stdout, currentCommandIndex, totalCommands, stage.SourceCode)
#     if err := initializeStage(dispatchRequest, &stage); err != nil {
#         return nil, err
#     }
#     dispatchRequest.state.updateRunConfig()
#     fmt.Fprintf(b.Stdout, " ---> %s\n", stringid.TruncateID(dispatchRequest.state.imageID))
#     for _, cmd := range stage.Commands {
#         select {
#         case <-b.clientCtx.Done():
#             fmt.Fprint(b.Stdout, "Build cancelled\n")
#             return nil, errors.New("Build cancelled")
#         default:
#             // Not cancelled yet, keep going...
#         }
#         currentCommandIndex = printCommand(b.Stdout, currentCommandIndex, totalCommands, cmd)
#         if err := dispatch(dispatchRequest, cmd); err != nil {
#             return nil, err
#         }
#         dispatchRequest.state.updateRunConfig()
#         fmt.Fprintf(b.Stdout, " ---> %s\n", stringid.TruncateID(dispatchRequest.state.imageID))
#     }
#     ...
#     if err := commitStage(dispatchRequest.state, stagesResults); err != nil {
#         return nil, err
#     }
# }
# buildArgs.WarnOnUnusedBuildArgs(b.Stdout)
# ```
#
# Every stage, every instruction, strictly in order: nothing here could run two things at once, and
# nothing skips a stage the final image does not need. minibuild's:

# %%
print(inspect.getsource(Builder.dispatch_dockerfile_with_cancellation))

# %% [markdown]
# `dispatch` runs one instruction: it expands the instruction's variables, then switches on its type.
# In Go a type switch (`switch c := cmd.(type) { case *instructions.EnvCommand: return dispatchEnv(d,
# c) ... }`); here an `if/elif` chain with the syntax of each instruction on the right:

# %%
print(inspect.getsource(dispatch))

# %% [markdown]
# ## Step by step
#
# The build, through the daemon, with tracing on. Below, each step of the output under the call of
# the loop that printed it (●): `initializeStage` for a `FROM`, `dispatch` for the rest, `commitStage`
# at each stage's end. The `ARG` before the first `FROM` counts as step 1 but is processed before the
# stages. What comes after the loop (`Successfully built`, the tags) is the backend's.


# %%
def build(context: Path, **options) -> tuple[list[dict], trace.Recording]:
    """Build `context` through the API; the stream's messages and the trace of the daemon."""
    body = b"".join(tar_context(context)[1])
    with trace.recording() as rec, client.image_build(body, ImageBuildOptions(**options)) as response:
        messages = list(response.messages())
    return messages, rec


def split_steps(messages: list[dict]) -> tuple[list[str], str]:
    """The stream's text cut into steps (`Step i/N …` up to its ` ---> id`), and what follows the last."""
    text = "".join(m.get("stream", "") for m in messages)
    steps = ["Step " + chunk for chunk in text.split("Step ")[1:]]
    if not steps:
        return [], text
    lines = steps[-1].splitlines(keepends=True)
    end = max(i for i, line in enumerate(lines) if line.startswith(" ---> ")) + 1
    steps[-1], tail = "".join(lines[:end]), "".join(lines[end:])
    return steps, tail


def steps_beside_trace(messages: list[dict], rec: trace.Recording) -> None:
    """Each `Step i/N` of the output under the loop's call that printed it; stage ends; then the rest."""
    steps, tail = split_steps(messages)
    loop = rec.find("Builder.dispatch_dockerfile_with_cancellation")[0]
    calls = [e for e in trace.tree_order(rec.events) if e.parent == loop.seq]
    meta = len(steps) - sum(1 for c in calls if c.function != "commit_stage")
    for step in steps[:meta]:  # ARGs before the first FROM: printed and processed before the loop
        print("● (before the loop: a meta ARG)")
        print("".join("    " + line for line in step.splitlines(keepends=True)), end="")
    remaining = iter(steps[meta:])
    for call in calls:
        print(f"● {call.function} [{call.mirrors}]  {call.summary}  → {call.outcome}")
        if call.function != "commit_stage":
            print("".join("    " + line for line in next(remaining).splitlines(keepends=True)), end="")
    print("after the loop, Backend.Build:")
    print("".join("    " + line for line in tail.splitlines(keepends=True)), end="")


messages, rec = build(app, tags=["app:v1"])
steps_beside_trace(messages, rec)

# %% [markdown]
# Every message of the stream, as the daemon sent it: the `Step` line and its newline are two
# messages, as dockerd writes them; an `aux` message carries each stage's image ID:

# %%
for message in messages[:12]:
    print(message)
print("...")

# %% [markdown]
# ## The cache, on a second run
#
# Same context, same Dockerfile: every step finds an image made from the same parent by the same
# instruction (for `COPY`, with the same file contents) and says `Using cache`. Nothing runs.

# %%
again, rec_again = build(app, tags=["app:v1"])
print("".join(m.get("stream", "") for m in again))
print("same image:", [m for m in messages if "aux" in m][-1] == [m for m in again if "aux" in m][-1])

# %% [markdown]
# Change the source file and the cache holds up to the `COPY` that reads it; from there on every step
# of that stage runs again, and so does every later step that depends on it:

# %%
(app / "main.c").write_text("int main(void) { return 42; }\n")
changed, _ = build(app, tags=["app:v2"])
for step in split_steps(changed)[0]:
    if step.splitlines()[0].split(" : ")[1].startswith(("FROM", "ARG")):
        verdict = ""
    else:
        verdict = "cached" if "Using cache" in step else "RAN AGAIN"
    print(f"{step.splitlines()[0]:<88} {verdict}".rstrip())

# %% [markdown]
# ## An unused build arg
#
# A `--build-arg` that no `ARG` declares is reported at the end of the build, by
# `buildArgs.WarnOnUnusedBuildArgs`, and otherwise ignored:

# %%
print(inspect.getsource(BuildArgs.warn_on_unused_build_args))
minibuild("build", "--build-arg", "BASE=busybox:local", "--build-arg", "UNUSED=1", "-t", "app:v2", str(app))

# %% [markdown]
# ## Cancelling a build mid-way
#
# `docker build` is cancelled with Ctrl-C: the CLI closes the connection. dockerd's request context is
# then done (`router.WithCancel`), and the loop stops (`case <-b.clientCtx.Done()`), or the running
# step is killed. In minibuild the request's asyncio task is cancelled when the client hangs up: the
# `RUN` in progress is stopped and its container removed, and the cancellation goes up through every
# caller. Here the client reads until the long step has started, then hangs up:

# %%
slow_dockerfile = "FROM busybox:local\nRUN echo first > /first\nRUN echo sleeping && sleep 5 && echo never\n"
slow = context_dir({"Dockerfile": slow_dockerfile})
impatient = APIClient(daemon.host)
with trace.recording() as rec:
    response = impatient.image_build(b"".join(tar_context(slow)[1]), ImageBuildOptions(tags=["cancelled:v1"]))
    for message in response.messages():
        print(message)
        if message.get("stream") == "sleeping\n":
            break  # the long step is running: hang up, as Ctrl-C does
    response.close()
    impatient.close()
    deadline = time.monotonic() + 30
    while rec.events[0].end is None and time.monotonic() < deadline:  # until the daemon has unwound
        time.sleep(0.05)
print()
print(rec)

# %% [markdown]
# The `RUN` did not get to finish its `sleep 5`, and no image was tagged. The steps before it were
# committed as usual and stay in the cache (the untagged image): a rebuild starts from there.

# %%
sleeping = rec.find("dispatch")[-1]
print(f"{sleeping.summary}: {sleeping.outcome}")  # cancelled inside its sleep, not finished
print("tagged cancelled:v1:", any("cancelled:v1" in (i["RepoTags"] or []) for i in client.image_list()))

# %% [markdown]
# (`POST /build/cancel` does not stop a classic build: dockerd honours it only for BuildKit builds, as
# minibuild does; notebook 06 uses it.)
#
# ## Optional: beside a real dockerd
#
# Where a real Docker daemon is reachable (`DOCKER_HOST`, else `/var/run/docker.sock`), the same
# request goes to both and the two classic-builder streams are printed side by side. The Dockerfile
# starts `FROM scratch`, so dockerd needs no image and no network. Without a dockerd, one line says so.

# %%
# NBVAL_IGNORE_OUTPUT
# Output depends on whether a real dockerd is reachable from this machine.
docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
scratch = context_dir({"Dockerfile": "FROM scratch\nCOPY main.c /\nLABEL step=two\n", "main.c": "int x;\n"})
real = APIClient(docker_host, version="1.40")
try:
    real.ping()
except Exception as err:
    print(f"no dockerd reachable at {docker_host}: skipped ({type(err).__name__})")
else:
    body = b"".join(tar_context(scratch)[1])
    streams = []
    for api in (real, client):
        with api.image_build(body, ImageBuildOptions(version="1", no_cache=True)) as response:
            streams.append("".join(m.get("stream", "") for m in response.messages()).splitlines())
    print(f"{'dockerd':<46} | minibuild")
    for theirs, ours in zip(*streams, strict=False):
        print(f"{theirs:<46} | {ours}")
finally:
    real.close()

# %% [markdown]
# ## Summary
#
# - The Dockerfile is parsed once into an AST, then into typed instructions grouped in stages.
# - `dispatch_dockerfile_with_cancellation` is a for-loop over every stage and every instruction:
#   `Step i/N`, `dispatch`, ` ---> id`; a stage ends with `commitStage`. Strictly sequential, and
#   stages the target does not need are built anyway.
# - Each step is cached as an image; a change invalidates its step and everything after it.
# - Unused `--build-arg`s are reported; a client that hangs up cancels the build.
#
# Next: [06 · buildkit / the same build as a graph](06-buildkit.ipynb)

# %%
client.close()
daemon.stop()
remove_scratch()
