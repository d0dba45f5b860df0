"""Progress events and the StatusResponse protobuf of `moby.buildkit.trace` messages (reference §9.2)."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.builder.next.progress import (
    ProgressWriter,
    ProtobufError,
    StatusResponse,
    Vertex,
    VertexLog,
    VertexStatus,
)

DIGEST = "sha256:" + "ab" * 32


def test_decodes_the_first_trace_dockerd_sends():
    """The bytes the reference shows for the first trace of a build, assembled by hand from §9.2."""
    name = b"[internal] load remote build context"
    body = b"\x0a\x47" + DIGEST.encode() + b"\x1a\x24" + name
    data = b"\x0a\x6f" + body
    assert len(body) == 0x6F
    sr = StatusResponse.unmarshal(data)
    assert sr.vertexes == [Vertex(DIGEST, [], name.decode())]
    assert sr.marshal() == data  # and we encode it byte for byte as dockerd does


def varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def test_decodes_times_logs_statuses_and_skips_unknown_fields():
    ts = b"\x08\x80\xe3\xc3\xa9\x06\x10\x95\x9a\xef\x3a"  # seconds 1697706368, nanos 123456789
    vertex = (
        b"\x0a\x47" + DIGEST.encode()
        + b"\x12\x47" + DIGEST.replace("ab", "cd").encode()
        + b"\x1a\x05[1/2]"
        + b"\x20\x01"  # cached
        + b"\x2a\x0b" + ts + b"\x32\x0b" + ts
        + b"\x3a\x04boom"
        + b"\x42\x02xx"  # progressGroup (newer BuildKit): skipped
    )  # fmt: skip
    status = b"\x0a\x10exporting layers" + b"\x12\x47" + DIGEST.encode() + b"\x32\x0b" + ts + b"\x3a\x0b" + ts
    log = b"\x0a\x47" + DIGEST.encode() + b"\x12\x0b" + ts + b"\x18\x02" + b"\x22\x04err\n"
    data = b"\x0a" + varint(len(vertex)) + vertex + b"\x12" + varint(len(status)) + status
    data += b"\x1a" + varint(len(log)) + log + b"\x60\x05"  # field 12, a varint nobody knows
    sr = StatusResponse.unmarshal(data)
    (v,) = sr.vertexes
    assert v.inputs == [DIGEST.replace("ab", "cd")] and v.name == "[1/2]" and v.cached and v.error == "boom"
    assert v.started == pytest.approx(1697706368.123456789) and v.completed == v.started
    (s,) = sr.statuses
    assert (
        s.id == "exporting layers" and s.vertex == DIGEST and s.started == v.started and s.completed is None
    )
    (entry,) = sr.logs
    assert entry.stream == 2 and entry.data == b"err\n" and entry.timestamp == v.started


def test_rejects_damaged_bytes():
    for data in (b"\x0a", b"\x0a\x05ab", b"\x08", b"\x0b", b"\x00\x01", b"\x0a\x02\x08\xff"):
        with pytest.raises(ProtobufError):
            StatusResponse.unmarshal(data)


times = st.one_of(st.none(), st.integers(0, 4_000_000_000).map(lambda ns: ns / 1000))
text = st.text(max_size=40)
vertices = st.builds(
    Vertex,
    digest=text,
    inputs=st.lists(text, max_size=3),
    name=text,
    started=times,
    completed=times,
    cached=st.booleans(),
    error=text,
)
statuses = st.builds(
    VertexStatus,
    id=text,
    vertex=text,
    name=text,
    current=st.integers(-(2**63), 2**63 - 1),
    total=st.integers(0, 2**40),
    timestamp=times,
    started=times,
    completed=times,
)
logs = st.builds(
    VertexLog, vertex=text, stream=st.sampled_from([1, 2]), data=st.binary(max_size=64), timestamp=times
)


@settings(deadline=None, max_examples=200)
@given(
    st.builds(
        StatusResponse,
        vertexes=st.lists(vertices, max_size=3),
        statuses=st.lists(statuses, max_size=3),
        logs=st.lists(logs, max_size=3),
    )
)
def test_round_trip(sr):
    decoded = StatusResponse.unmarshal(sr.marshal())
    for a, b in zip(decoded.vertexes, sr.vertexes, strict=True):
        assert (a.digest, a.inputs, a.name, a.cached, a.error) == (
            b.digest,
            b.inputs,
            b.name,
            b.cached,
            b.error,
        )
        for x, y in ((a.started, b.started), (a.completed, b.completed)):
            assert x == pytest.approx(y, abs=1e-6) if y is not None else x is None
    for a, b in zip(decoded.statuses, sr.statuses, strict=True):
        assert (a.id, a.vertex, a.name, a.current, a.total) == (b.id, b.vertex, b.name, b.current, b.total)
    for a, b in zip(decoded.logs, sr.logs, strict=True):
        assert (a.vertex, a.stream, a.data) == (b.vertex, b.stream, b.data)


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_protobuf_error(data):
    try:
        StatusResponse.unmarshal(data)
    except ProtobufError:
        pass


def test_writer_batches_what_arrived_while_a_reader_waited():
    async def main():
        clock = iter(range(100))
        writer = ProgressWriter(clock=lambda: float(next(clock)))
        writer.announce([Vertex("a", [], "A"), Vertex("b", ["a"], "B")])
        writer.start("a")
        writer.log("a", 1, b"out")
        writer.complete("a")
        batches = []

        async def read():
            async for sr in writer.responses():
                batches.append(sr)

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(0)
        writer.complete("b", cached=True)
        writer.close()
        await reader
        return writer, batches

    writer, batches = asyncio.run(main())
    first = batches[0]
    # "a" was updated three times before the reader came: one message, its latest state, inputs kept.
    assert [v.digest for v in first.vertexes] == ["a", "b"]
    assert first.vertexes[0].started == 0.0 and first.vertexes[0].completed == 2.0  # the log took tick 1
    assert [entry.data for entry in first.logs] == [b"out"]
    assert batches[-1].vertexes[0].cached and batches[-1].vertexes[0].inputs == ["a"]
    assert writer.vertices["b"].started == writer.vertices["b"].completed  # a cache hit takes no time
