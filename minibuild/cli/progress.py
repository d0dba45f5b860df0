"""How `minibuild build` shows a build's answer (docker cli/command/image/build.go; BuildKit's progressui).

Classic builds (`--builder v1`) print the stream as the docker CLI does (`display_json_messages_stream`).
BuildKit-style builds (`--builder buildkit`, the raw API's `version=2`) send their progress as traces:
`{"id":"moby.buildkit.trace","aux":"<base64 StatusResponse protobuf>"}`. Drawing those is a
`TraceRenderer`'s job, chosen by `--progress plain|tty`; renderers are registered here by the module
that decodes the protobuf (`register_trace_renderer`). Without one, the build still runs and its
stream text, image id and errors are shown, and a one-line notice says the traces were not drawn.
"""

import base64
import binascii
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TextIO

from minibuild.api.jsonmessage import JSONMessage, display

TRACE_ID = "moby.buildkit.trace"
IMAGE_ID = "moby.image.id"


class TraceRenderer(Protocol):
    """Draws BuildKit progress; `write_trace` gets each trace's decoded protobuf bytes, in order."""

    def write_trace(self, trace: bytes) -> None: ...

    def close(self) -> None: ...


TraceRendererFactory = Callable[[TextIO], TraceRenderer]
_RENDERERS: dict[str, TraceRendererFactory] = {}


def register_trace_renderer(mode: str, factory: TraceRendererFactory) -> None:
    """Install the renderer for `--progress plain` or `--progress tty`."""
    if mode not in ("plain", "tty"):
        raise ValueError(f"unknown progress mode {mode!r}: use plain or tty")
    _RENDERERS[mode] = factory


def resolve_progress_mode(mode: str, err: TextIO) -> str:
    """`auto` is tty when stderr is a terminal, plain otherwise (as buildx decides)."""
    if mode == "auto":
        return "tty" if err.isatty() else "plain"
    return mode


def display_buildkit_stream(
    messages: Iterable[dict[str, Any]],
    out: TextIO,
    err: TextIO,
    mode: str,
    on_image_id: Callable[[str], None],
) -> None:
    """Show a `version=2` build: traces to the renderer (stderr), text to `out`; errors are raised."""
    factory = _RENDERERS.get(mode)
    renderer = factory(err) if factory is not None else None
    skipped = 0
    try:
        for raw in messages:
            jm = JSONMessage.from_dict(raw)
            if jm.aux is not None:
                if jm.id == TRACE_ID:
                    if renderer is None:
                        skipped += 1
                        continue
                    try:
                        renderer.write_trace(base64.b64decode(jm.aux))
                    except (binascii.Error, TypeError):
                        err.write("failed to decode a progress trace from the daemon\n")
                elif jm.id == IMAGE_ID and isinstance(jm.aux, dict):
                    on_image_id(str(jm.aux.get("ID", "")))
                continue
            display(jm, out, out.isatty())
            out.flush()
    finally:
        if renderer is not None:
            renderer.close()
        if skipped:
            err.write(f"({skipped} BuildKit progress traces not shown: no renderer for --progress {mode})\n")
