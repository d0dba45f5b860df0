"""The JSON message stream: exact bytes of each message kind, progress bars, and the CLI's display."""

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.api.jsonmessage import (
    JSONError,
    JSONMessage,
    JSONProgress,
    decode_stream,
    display_json_messages_stream,
)
from minibuild.api.streamformatter import (
    AuxFormatter,
    BufferSink,
    JSONProgressOutput,
    Progress,
    format_error,
    format_status,
    new_stderr_writer,
    new_stdout_writer,
    raw_format_progress,
)
from minibuild.api.units import human_size, human_size_with_precision


def test_stdout_message_is_compact_go_json_with_crlf():
    sink = BufferSink()
    new_stdout_writer(sink).write(b" ---> 88bb996bd2ac\n")
    assert sink.getvalue() == b'{"stream":" ---\\u003e 88bb996bd2ac\\n"}\r\n'


def test_each_write_is_one_message():
    sink = BufferSink()
    out = new_stdout_writer(sink)
    out.write("Step 1/3 : FROM busybox:local")
    out.write("\n")
    assert sink.getvalue() == b'{"stream":"Step 1/3 : FROM busybox:local"}\r\n{"stream":"\\n"}\r\n'


def test_stderr_is_wrapped_per_piece():
    sink = BufferSink()
    new_stderr_writer(sink).write(b"golden-err1\nerr-no-newline")
    assert sink.getvalue() == b'{"stream":"\\u001b[91mgolden-err1\\nerr-no-newline\\u001b[0m"}\r\n'


def test_invalid_utf8_becomes_replacement_character():
    sink = BufferSink()
    new_stdout_writer(sink).write(b"a\xffb")
    assert json.loads(sink.getvalue())["stream"] == "a\ufffdb"


def test_aux_message():
    sink = BufferSink()
    AuxFormatter(sink).emit("", {"ID": "sha256:" + "a" * 64})
    assert sink.getvalue() == b'{"aux":{"ID":"sha256:' + b"a" * 64 + b'"}}\r\n'
    sink = BufferSink()
    AuxFormatter(sink).emit("moby.buildkit.trace", "CgA=")
    assert sink.getvalue() == b'{"id":"moby.buildkit.trace","aux":"CgA="}\r\n'


def test_error_key_order_with_and_without_code():
    msg = "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    assert format_error(JSONError(msg, 3)) == (
        b'{"errorDetail":{"code":3,"message":"' + msg.encode() + b'"},"error":"' + msg.encode() + b'"}\r\n'
    )
    assert format_error(ValueError("COPY failed: x & y")) == (
        b'{"errorDetail":{"message":"COPY failed: x \\u0026 y"},"error":"COPY failed: x \\u0026 y"}\r\n'
    )


def test_status_message():
    assert format_status("", "sha256:abc") == b'{"status":"sha256:abc"}\r\n'
    assert (
        format_status("ce15bf14c37b", "Loading layer")
        == b'{"status":"Loading layer","id":"ce15bf14c37b"}\r\n'
    )


def test_progress_message_matches_dockerd_load_output():
    sink = BufferSink()
    JSONProgressOutput(sink).write_progress(
        Progress(id="ce15bf14c37b", action="Loading layer", current=1536, total=1536)
    )
    assert sink.getvalue() == (
        b'{"status":"Loading layer","progressDetail":{"current":1536,"total":1536},'
        b'"progress":"[==================================================\\u003e]  1.536kB/1.536kB",'
        b'"id":"ce15bf14c37b"}\r\n'
    )


def test_progress_bar_shapes():
    assert JSONProgress(0, 0).string() == ""
    assert JSONProgress(2048, 0).string() == " 2.048kB"
    assert JSONProgress(500, 1000).string().startswith("[" + "=" * 25 + ">" + " " * 25 + "] ")
    assert JSONProgress(500, 1000).string(width=80) == "    500B/1kB"
    assert JSONProgress(3, 10, units="items").string(width=80) == "3/10 items"
    assert JSONProgress(500, 1000, start=100).string(width=80, now=110) == "    500B/1kB 10s"


def test_human_size():
    assert [human_size(s) for s in (0, 200, 1000, 2048, 1536, 1982271, 10**12)] == [
        "0B", "200B", "1kB", "2.048kB", "1.536kB", "1.982MB", "1TB",
    ]  # fmt: skip
    assert human_size_with_precision(1982271, 3) == "1.98MB"


def test_raw_progress_is_the_cli_line():
    assert raw_format_progress("Sending build context to Docker daemon", JSONProgress(2048)) == (
        b"Sending build context to Docker daemon  2.048kB\r"
    )


@settings(deadline=None)  # no per-example time limit: the machine may be loaded
@given(st.text(), st.integers(0, 255))
def test_message_round_trip(text, code):
    for msg in (
        JSONMessage(stream=text),
        JSONMessage(status=text, id="x"),
        JSONMessage(error=JSONError(text, code)),
    ):
        (decoded,) = list(decode_stream([msg.to_json()]))
        assert JSONMessage.from_dict(decoded).to_dict() == msg.to_dict()


@settings(deadline=None)  # no per-example time limit: the machine may be loaded
@given(st.lists(st.text(max_size=20), max_size=8), st.integers(1, 7))
def test_decode_stream_any_chunking(texts, cut):
    data = b"".join(JSONMessage(stream=t).to_json() for t in texts)
    pieces = [data[i : i + cut] for i in range(0, len(data), cut)]
    # An empty stream field is omitted, as Go's omitempty does: that message decodes as {}.
    assert [m.get("stream", "") for m in decode_stream(pieces)] == texts


def test_decode_stream_truncated_raises():
    try:
        list(decode_stream([b'{"stream":"a"}\r\n{"stre']))
    except JSONError as err:
        assert str(err) == "unexpected EOF"
    else:
        raise AssertionError("expected an error")


def test_display_prints_streams_and_raises_errors():
    out = io.StringIO()
    aux = []
    stream = [
        {"stream": "Step 1/1 : FROM scratch"},
        {"stream": "\n"},
        {"aux": {"ID": "sha256:x"}},
        {"status": "pulled"},
        {"errorDetail": {"code": 4, "message": "boom"}, "error": "boom"},
        {"stream": "never shown"},
    ]
    try:
        display_json_messages_stream(stream, out, False, lambda m: aux.append(m.aux))
    except JSONError as err:
        assert (err.message, err.code) == ("boom", 4)
    assert out.getvalue() == "Step 1/1 : FROM scratch\npulled\n"
    assert aux == [{"ID": "sha256:x"}]


def test_display_hides_progress_bars_when_not_a_terminal():
    out = io.StringIO()
    bar = {"status": "Loading layer", "progressDetail": {"current": 1, "total": 2}, "id": "abc"}
    display_json_messages_stream([bar, {"stream": "Loaded image: a:b\n"}], out, False)
    assert out.getvalue() == "Loaded image: a:b\n"
    out = io.StringIO()
    display_json_messages_stream([bar], out, True)
    assert "Loading layer" in out.getvalue() and "\x1b[2K" in out.getvalue()
