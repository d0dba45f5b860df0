"""`--progress plain` and `--progress tty` renderers of BuildKit traces."""

import base64
import io
import time

from minibuild.builder.next.progress import StatusResponse, Vertex, VertexLog, VertexStatus
from minibuild.builder.next.progressui import PlainPrinter, TTYDisplay
from minibuild.cli import progress as cli_progress

CTX, FROM, RUN, EXPORT = "sha256:c", "sha256:f", "sha256:r", "sha256:e"


def build_trace(*, fail: bool = False) -> list[StatusResponse]:
    run_name = "[2/2] RUN echo hi && exit 3" if fail else "[2/2] RUN echo hi"
    out = [
        StatusResponse([Vertex(CTX, [], "[internal] load remote build context", started=100.0)]),
        StatusResponse(
            [Vertex(CTX, [], "[internal] load remote build context", started=100.0, completed=100.02)]
        ),
        StatusResponse(
            [Vertex(FROM, [], "[1/2] FROM docker.io/library/busybox:local"), Vertex(RUN, [FROM], run_name)]
        ),
        StatusResponse(
            [Vertex(FROM, [], "[1/2] FROM docker.io/library/busybox:local", 101.0, 101.0, cached=True)]
        ),
        StatusResponse([Vertex(RUN, [FROM], run_name, started=101.0)]),
        StatusResponse(logs=[VertexLog(RUN, 1, b"hi\npart", 101.25)]),
        StatusResponse(logs=[VertexLog(RUN, 2, b"ial\n", 101.5)]),
    ]
    if fail:
        error = "executor failed running [/bin/sh -c echo hi && exit 3]: exit code: 3"
        out.append(StatusResponse([Vertex(RUN, [FROM], run_name, 101.0, 101.6, error=error)]))
        return out
    out += [
        StatusResponse([Vertex(RUN, [FROM], run_name, started=101.0, completed=102.34)]),
        StatusResponse([Vertex(EXPORT, [], "exporting to image", started=102.4)]),
        StatusResponse(statuses=[VertexStatus("exporting layers", EXPORT, timestamp=102.4, started=102.4)]),
        StatusResponse(
            statuses=[
                VertexStatus("exporting layers", EXPORT, timestamp=102.6, started=102.4, completed=102.6)
            ]
        ),
        StatusResponse([Vertex(EXPORT, [], "exporting to image", started=102.4, completed=102.6)]),
    ]
    return out


def test_plain_output_reads_like_buildkits():
    out = io.StringIO()
    printer = PlainPrinter(out)
    for sr in build_trace():
        printer.write_trace(sr.marshal())
    printer.close()
    assert out.getvalue() == (
        "\n#1 [internal] load remote build context\n"
        "#1 DONE 0.0s\n"
        "\n#2 [1/2] FROM docker.io/library/busybox:local\n"
        "#2 CACHED\n"
        "\n#3 [2/2] RUN echo hi\n"
        "#3 0.250 hi\n"
        "#3 0.500 partial\n"
        "#3 DONE 1.3s\n"
        "\n#4 exporting to image\n"
        "#4 exporting layers\n"
        "#4 exporting layers 0.2s done\n"
        "#4 DONE 0.2s\n"
    )


def test_plain_output_of_a_failure_repeats_the_last_lines():
    out = io.StringIO()
    printer = PlainPrinter(out)
    for sr in build_trace(fail=True):
        printer.write(sr)
    printer.close()
    text = out.getvalue()
    assert "#3 ERROR: executor failed running [/bin/sh -c echo hi && exit 3]: exit code: 3\n" in text
    assert text.endswith("------\n > [2/2] RUN echo hi && exit 3:\n#3 hi\n#3 partial\n------\n")


def test_plain_marks_a_step_left_unfinished_and_cancellations():
    out = io.StringIO()
    printer = PlainPrinter(out)
    printer.write(StatusResponse([Vertex("a", [], "A", started=1.0), Vertex("b", [], "B", started=1.0)]))
    printer.write(StatusResponse([Vertex("a", [], "A", 1.0, 2.0, error="context canceled")]))
    assert out.getvalue() == "\n#1 A\n#1 ...\n\n#2 B\n#2 ...\n\n#1 A\n#1 CANCELED\n"


def test_tty_frames():
    now = [102.5]
    out = io.StringIO()
    display = TTYDisplay(out, clock=lambda: now[0], width=60, tick=None)
    display.start = 100.0
    for sr in build_trace()[:7]:
        display.trace.update(sr)
    frame = display.frame()
    assert frame[0] == "[+] Building 2.5s (2/3)"
    assert frame[1].startswith(" => [internal] load remote build context") and frame[1].endswith(" 0.0s")
    assert frame[2].startswith(" => CACHED [1/2] FROM docker.io/library/busybox:local")
    assert frame[3].startswith(" => [2/2] RUN echo hi") and frame[3].endswith("1.5s")  # still running
    assert frame[4:] == [" => => # hi", " => => # partial"]
    assert all(len(line) <= 60 for line in frame)
    for sr in build_trace()[7:]:
        display.trace.update(sr)
    display.close()
    text = out.getvalue()
    assert "FINISHED" in text.splitlines()[0] and " => => exporting layers" in text
    # A redraw goes back over the previous frame.
    display.draw()
    assert f"\x1b[{display.lines_drawn}A" in out.getvalue()


def test_the_cli_draws_traces_with_progressui():
    trace = {
        "id": "moby.buildkit.trace",
        "aux": base64.b64encode(build_trace()[0].marshal()).decode(),
    }
    err = io.StringIO()
    seen = []
    cli_progress.display_buildkit_stream([trace], io.StringIO(), err, "plain", seen.append)
    assert "#1 [internal] load remote build context" in err.getvalue()


def test_tty_redraws_while_nothing_happens():
    out = io.StringIO()
    display = TTYDisplay(out, width=60, tick=0.01)
    display.write(StatusResponse([Vertex(RUN, [], "[1/1] RUN sleep 1", started=display.clock())]))
    deadline = time.monotonic() + 30
    while out.getvalue().count("[+] Building") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    display.close()
    assert out.getvalue().count("[+] Building") >= 3


def test_a_pull_prints_its_layers_as_buildkit_does():
    """A FROM vertex's statuses: the resolution, each blob's bytes (decimal units), its extraction."""
    blob = "sha256:" + "ab" * 32
    out = io.StringIO()
    printer = PlainPrinter(out)
    printer.write(StatusResponse([Vertex(FROM, [], "[1/2] FROM r/x:v1@sha256:cd", started=10.0)]))
    for status in (
        VertexStatus("resolve r/x:v1@sha256:cd", FROM, timestamp=10.0, started=10.0, completed=10.0),
        VertexStatus(blob, FROM, current=0, total=2_150_000, timestamp=10.1, started=10.1),
        VertexStatus(
            blob, FROM, current=2_150_000, total=2_150_000, timestamp=10.4, started=10.1, completed=10.4
        ),
        VertexStatus("extracting " + blob, FROM, timestamp=10.4, started=10.4),
        VertexStatus("extracting " + blob, FROM, timestamp=10.6, started=10.4, completed=10.6),
        VertexStatus("small", FROM, current=512, total=999, timestamp=10.6, started=10.6),
    ):
        printer.write(StatusResponse(statuses=[status]))
    assert out.getvalue().splitlines()[1:] == [
        "#1 [1/2] FROM r/x:v1@sha256:cd",
        "#1 resolve r/x:v1@sha256:cd done",
        f"#1 {blob} 0B / 2.15MB",
        f"#1 {blob} 2.15MB / 2.15MB 0.3s done",
        f"#1 extracting {blob}",
        f"#1 extracting {blob} 0.2s done",
        "#1 small 512B / 999B",
    ]
