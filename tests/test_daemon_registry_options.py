"""dockerd's transfer options on minibuild's daemon: --max-concurrent-downloads, --max-concurrent-uploads
and --max-download-attempts are parsed as pflag parses ints, checked with dockerd's words, and applied:
a layer past the limit waits (`Waiting`) until a transfer slot is free; 0 is no limit."""

import asyncio

import pytest
import registry_fixture
from registry_fixture import make_image

from minibuild.api.daemon import DaemonConfig, DaemonError, load_registry_config
from minibuild.cli import system
from minibuild.cli.command import StatusError
from minibuild.cli.system import DAEMON
from minibuild.distribution import MessageCollector, RegistryService, ServiceConfig
from minibuild.distribution.images import pull_image, push_image
from minibuild.image.reference import parse_normalized_named
from minibuild.image.service import ImageService

registry = registry_fixture.registry  # the fixture, imported explicitly

LAYERS = [{"one": b"1\n"}, {"two": b"2\n"}, {"three": b"3\n"}]


def options(config: DaemonConfig | ServiceConfig) -> tuple[int, int, int]:
    return config.max_concurrent_downloads, config.max_concurrent_uploads, config.max_download_attempts


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], (3, 5, 5)),  # dockerd's defaults
        (["--max-concurrent-downloads", "1", "--max-concurrent-uploads", "0"], (1, 0, 5)),
        (["--max-download-attempts", "2"], (3, 5, 2)),
    ],
)
def test_the_flags_reach_the_registry_service(monkeypatch, argv, expected):
    seen = []
    monkeypatch.setattr(system, "run_daemon", lambda config: seen.append(config) or 0)
    assert DAEMON.run(DAEMON.parse(argv, "minibuild"), None) == 0
    assert options(seen[0]) == expected
    assert options(load_registry_config(seen[0])) == expected


def test_a_value_that_is_no_int_is_a_flag_error():
    with pytest.raises(StatusError) as info:
        DAEMON.run(DAEMON.parse(["--max-concurrent-downloads", "three"], "minibuild"), None)
    assert info.value.code == 125
    assert info.value.status == (
        'invalid argument "three" for "--max-concurrent-downloads" flag: '
        'strconv.ParseInt: parsing "three": invalid syntax'
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_concurrent_downloads", -1, "invalid max concurrent downloads: -1"),
        ("max_concurrent_uploads", -2, "invalid max concurrent uploads: -2"),
        ("max_download_attempts", 0, "invalid max download attempts: 0"),
    ],
)
def test_values_out_of_range_are_refused_with_dockerds_words(field, value, message):
    with pytest.raises(DaemonError) as info:
        load_registry_config(DaemonConfig(**{field: value}))
    assert str(info.value) == message


def waiting(out: MessageCollector) -> set[str]:
    return {i for i, status in out.statuses() if status == "Waiting"}


def test_layers_past_the_limits_wait_for_a_slot(registry, tmp_path):
    src = ImageService(tmp_path / "src")
    image_id = make_image(src, LAYERS)
    name = f"{registry.host}/limits/app:v1"
    src.add_reference(parse_normalized_named(name), image_id)
    pushed = MessageCollector()
    pusher = RegistryService(tmp_path / "src" / "distribution", ServiceConfig(max_concurrent_uploads=1))
    asyncio.run(push_image(pusher, src, name, progress=pushed))
    assert len(waiting(pushed)) == 2  # three layers, one slot: two wait their turn

    for limit, waits in ((1, 2), (3, 0), (0, 0)):
        root = tmp_path / f"dst-{limit}"
        service = RegistryService(root / "distribution", ServiceConfig(max_concurrent_downloads=limit))
        pulled = MessageCollector()
        assert asyncio.run(pull_image(service, ImageService(root), name, progress=pulled)) == image_id
        assert len(waiting(pulled)) == waits, limit
