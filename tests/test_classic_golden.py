"""The classic builder against dockerd's own transcripts (reference §4 and §5, in tests/golden/).

Every case is sent to a real minibuild daemon over its Unix socket, exactly as a client would, and the
answer must be dockerd's message for message once IDs are normalized (see tests/golden/README.md).
"""

import os

import pytest
from golden.harness import case_names, context_tar, expected_messages, load_case, normalize, post_build

from minibuild.api.daemon import embedded_daemon
from minibuild.image.busybox import create_busybox_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here"),
]


@pytest.fixture
def daemon(tmp_path):
    with embedded_daemon(tmp_path / "root") as d:
        create_busybox_image(d.daemon.image_service, "busybox:local", source_date_epoch=0)
        yield d


def build(daemon, name: str) -> list[dict]:
    case = load_case(name)
    status, messages = post_build(daemon.socket_path, case.get("query", {}), context_tar(name))
    assert status == 200, messages
    return messages


@pytest.mark.parametrize("name", case_names())
def test_stream_matches_dockerd(daemon, name):
    """The message sequence of each case, after the builds it depends on (their IDs must carry over)."""
    expected, actual = [], []
    for before in load_case(name).get("before", []):
        expected += expected_messages(before)
        actual += build(daemon, before)
    expected += expected_messages(name)
    actual += build(daemon, name)
    assert normalize(actual) == normalize(expected)


def test_normalize_keeps_repeated_ids_and_merges_run_output():
    messages = [
        {"stream": " ---> 0123456789ab\n"},
        {"stream": " ---> Running in aaaaaaaaaaaa\n"},
        {"stream": "out1\n"},
        {"stream": "\x1b[91merr\n\x1b[0m"},
        {"stream": "out2"},
        {"stream": "Removing intermediate container aaaaaaaaaaaa\n"},
        {"aux": {"ID": "sha256:0123456789ab" + "f" * 52}},
    ]
    assert normalize(messages) == [
        {"stream": " ---> <ID1>\n"},
        {"stream": " ---> Running in <ID2>\n"},
        {"stdout": "out1\nout2"},
        {"stderr": "err\n"},
        {"stream": "Removing intermediate container <ID2>\n"},
        {"aux": {"ID": "sha256:<ID1>"}},
    ]
