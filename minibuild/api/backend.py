"""What the build router hands to the build backend (moby api/types/backend/build.go).

`BuildConfig` is one build request: the context (the request body, already on disk), the parsed
options and the writers for the output stream. Cancellation is asyncio's: the router runs
`Backend.build` inside the request's task, and a client that disconnects (or `/build/cancel`, for
BuildKit builds) cancels that task — the Python form of the article's `clientCtx.Done()`. A builder
cleans up in `finally`/`except asyncio.CancelledError` and lets the CancelledError propagate.
"""

from dataclasses import dataclass
from pathlib import Path

from minibuild.api.streamformatter import AuxFormatter, JSONProgressOutput, Sink, StreamWriter
from minibuild.api.types import ImageBuildOptions


@dataclass
class ProgressWriter:
    """The build's output stream (backend.ProgressWriter); every write is one flushed message.

    output            the raw sink (already formatted messages)
    stdout_formatter  `{"stream":…}` text: step headers, ` ---> <id>`, RUN stdout
    stderr_formatter  RUN stderr, wrapped in bright red
    aux_formatter     `{"aux":{"ID":…}}` image ids; None for clients older than API 1.30
    progress_output   progress bars (downloading a remote context, pulling a base image)

    Writers are synchronous and may be called from any thread; they never block on the client.
    """

    output: Sink
    stdout_formatter: StreamWriter
    stderr_formatter: StreamWriter
    aux_formatter: AuxFormatter | None
    progress_output: JSONProgressOutput


@dataclass
class BuildConfig:
    """One build (backend.BuildConfig).

    source  the request body streamed to a file under the data root: a tar, maybe gzip/bzip2/xz
            compressed (sniff it with minibuild.archive.decompress_stream); possibly empty. The router
            deletes it after the build.
    """

    source: Path
    options: ImageBuildOptions
    progress_writer: ProgressWriter
