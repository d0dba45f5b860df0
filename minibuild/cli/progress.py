"""How `minibuild build` shows a build's answer (docker cli/command/image/build.go; BuildKit's progressui).

Classic builds (`--builder v1`) print the stream as the docker CLI does (`display_json_messages_stream`).
BuildKit-style builds (`--builder buildkit`, the raw API's `version=2`) send their progress as traces:
`{"id":"moby.buildkit.trace","aux":"<base64 StatusResponse protobuf>"}`, drawn by BuildKit's progressui
(`minibuild.builder.next.progressui`), chosen by `--progress plain|tty`.
"""

import base64
import binascii
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from minibuild.api.jsonmessage import JSONMessage, display

TRACE_ID = "moby.buildkit.trace"
IMAGE_ID = "moby.image.id"


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
    from minibuild.builder.next.progressui import PlainPrinter, TTYDisplay  # the protobuf lives there

    renderer = (TTYDisplay if mode == "tty" else PlainPrinter)(err)
    try:
        for raw in messages:
            jm = JSONMessage.from_dict(raw)
            if jm.aux is not None:
                if jm.id == TRACE_ID:
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
        renderer.close()
