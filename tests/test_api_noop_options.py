"""Build options minibuild accepts but does not apply (router/build.py's NOT_ENFORCED_OPTIONS).

Each is parsed and carried in the options as dockerd parses it, never misread; a real build with all
of them set succeeds, and its RUN steps show that the limits were not applied, as the table says.
"""

import base64
import json
import os
import urllib.parse

import pytest
from aiohttp.test_utils import make_mocked_request
from api_doubles import tar_of

from minibuild.api.daemon import embedded_daemon
from minibuild.api.router.build import NOT_ENFORCED_OPTIONS, new_image_build_options
from minibuild.api.server import API_VERSION_KEY
from minibuild.api.types import BUILDER_BUILDKIT, BUILDER_V1, ImageBuildOptions, Ulimit
from minibuild.builder.next.progress import StatusResponse
from minibuild.image.busybox import create_busybox_image

NOFILE = 77  # a --ulimit nofile nobody has by default
SHM = 1 << 20  # 1 MiB asked for /dev/shm
QUERY = {
    "memory": ("4194304", "memory", 4194304),
    "memswap": ("8388608", "memory_swap", 8388608),
    "cpushares": ("512", "cpu_shares", 512),
    "cpuperiod": ("100000", "cpu_period", 100000),
    "cpuquota": ("50000", "cpu_quota", 50000),
    "cpusetcpus": ("0", "cpu_set_cpus", "0"),
    "cpusetmems": ("0", "cpu_set_mems", "0"),
    "cgroupparent": ("minibuild-test", "cgroup_parent", "minibuild-test"),
    "shmsize": (str(SHM), "shm_size", SHM),
    "ulimits": (
        json.dumps([{"Name": "nofile", "Hard": NOFILE, "Soft": NOFILE}]),
        "ulimits",
        [Ulimit("nofile", NOFILE, NOFILE)],
    ),
    "session": ("a-session-id", "session_id", "a-session-id"),
}


def test_every_option_of_the_table_is_parsed_and_carried():
    assert sorted(QUERY) == sorted(NOT_ENFORCED_OPTIONS)
    query = "&".join(f"{k}={urllib.parse.quote(v)}" for k, (v, _, _) in QUERY.items())
    request = make_mocked_request("POST", "/build?" + query)
    request[API_VERSION_KEY] = "1.40"
    options = new_image_build_options(request)
    defaults = ImageBuildOptions()
    for name, (_, field, expected) in QUERY.items():
        assert getattr(options, field) == expected != getattr(defaults, field), name


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with embedded_daemon(tmp_path_factory.mktemp("root")) as d:
        create_busybox_image(d.daemon.image_service, "busybox:latest", source_date_epoch=0)
        yield d


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here")
@pytest.mark.parametrize("version", [BUILDER_V1, BUILDER_BUILDKIT])
def test_a_build_with_every_option_runs_without_applying_them(daemon, version):
    dockerfile = b'FROM busybox:latest\nRUN echo "nofile=$(ulimit -n)" "shm=$(df -k /dev/shm | tail -n 1)"\n'
    options = ImageBuildOptions(
        tags=[f"noop:v{version}"],
        version=version,
        no_cache=True,
        memory=4194304,
        memory_swap=8388608,
        cpu_shares=512,
        cpu_period=100000,
        cpu_quota=50000,
        cpu_set_cpus="0",
        cpu_set_mems="0",
        cgroup_parent="minibuild-test",
        shm_size=SHM,
        ulimits=[Ulimit("nofile", NOFILE, NOFILE)],
    )
    with daemon.client() as client, client.image_build(tar_of({"Dockerfile": dockerfile}), options) as resp:
        messages = list(resp.messages())
    assert not [m for m in messages if "error" in m], messages
    text = "".join(m.get("stream", "") for m in messages)
    for m in messages:  # BuildKit-style builds send RUN output as the logs of trace messages
        if m.get("id") == "moby.buildkit.trace":
            text += b"".join(
                log.data for log in StatusResponse.unmarshal(base64.b64decode(m["aux"])).logs
            ).decode()
    assert f"Successfully tagged noop:v{version}" in text
    (ran,) = [line.split() for line in text.splitlines() if line.startswith("nofile=")]
    nofile, shm_kib = int(ran[0].removeprefix("nofile=")), int(ran[2])  # shm=<fs> <1K-blocks> ...
    assert nofile != NOFILE  # the daemon's own limit
    assert shm_kib == 65536  # 64 MiB, not the 1 MiB asked for
