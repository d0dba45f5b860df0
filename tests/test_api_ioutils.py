"""Spooling request bodies (minibuild.api.ioutils): the chunks reach the file whole and in order,
however the kernel cuts the writes."""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.api import ioutils


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(1, 500))
def test_write_all_survives_short_writes(tmp_path_factory, chunks, most):
    real_writev = os.writev
    path = tmp_path_factory.mktemp("spool") / "body"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def short_writev(fd, buffers):  # the kernel may write less than asked
        data = b"".join(bytes(b) for b in buffers)[:most]
        return real_writev(fd, [data]) if data else 0

    try:
        os.writev = short_writev
        ioutils._write_all(fd, chunks)
    finally:
        os.writev = real_writev
        os.close(fd)
    assert path.read_bytes() == b"".join(chunks)
