"""Layer downloads retried as dockerd retries them (moby distribution/xfer/download.go, retryOnError).

A proxy in front of the real test registry fails the first GETs of a layer blob in chosen ways. Transient
failures (5xx, a reset connection, a body cut short) are retried up to five attempts in all, each after
`Retrying in N seconds` counted down from 5 x the attempt number; a cut download resumes with a Range
request. Refusals, a missing blob and a digest mismatch end the pull at the first attempt. The countdown's
tick is the service's `retry_tick`, 0 here: the tests count messages, never time.
"""

import asyncio

import pytest
import registry_fixture
from registry_fixture import make_image

from minibuild.distribution import MessageCollector, RegistryService, ServiceConfig
from minibuild.distribution.errors import DistributionError
from minibuild.distribution.images import pull_image, push_image
from minibuild.image.reference import parse_normalized_named
from minibuild.image.service import ImageService

registry, faulty_proxy = registry_fixture.registry, registry_fixture.faulty_proxy

BASE = {"etc/os-release": b"NAME=minibuild\n"}
APP = {"app/data.bin": bytes(range(256)) * 400}  # ~100 kB: a body worth cutting in half


def countdown(delay):
    return [f"Retrying in {n} second{'s' if n != 1 else ''}" for n in range(delay, 0, -1)]


@pytest.fixture
def pushed(registry, faulty_proxy, tmp_path):
    """An image pushed to the registry; its ID and top layer's blob digest, to pull through the proxy."""
    images = ImageService(tmp_path / "src")
    image_id = make_image(images, [BASE, APP])
    images.add_reference(parse_normalized_named(f"{registry.host}/team/app:v1"), image_id)
    service = RegistryService(tmp_path / "src" / "distribution")
    asyncio.run(push_image(service, images, f"{registry.host}/team/app:v1"))
    blob = service.metadata.get_metadata(images.image_store.get(image_id).diff_ids[1])[0].digest
    return image_id, blob


def pull_through(proxy, tmp_path, **config):
    images = ImageService(tmp_path / "dst")
    service = RegistryService(tmp_path / "dst" / "distribution", ServiceConfig(retry_tick=0, **config))
    messages = MessageCollector()
    try:
        image_id = asyncio.run(pull_image(service, images, f"{proxy.host}/team/app:v1", progress=messages))
    except DistributionError as err:
        return err, messages, images
    return image_id, messages, images


def layer_statuses(messages, blob):
    short = blob.removeprefix("sha256:")[:12]
    counted = ("Downloading", "Extracting")  # byte-count progress: as many as the chunks
    return [status for i, status in messages.statuses() if i == short and status not in counted]


@pytest.mark.parametrize("fault", ["500", "503", "reset"])
def test_transient_failures_are_retried_with_dockers_countdown(pushed, faulty_proxy, tmp_path, fault):
    image_id, blob = pushed
    # aiohttp sends an idempotent request once more by itself when the connection drops before any
    # answer (Go's transport does so on a reused connection): an attempt takes two resets to fail.
    per_attempt = 2 if fault == "reset" else 1
    faulty_proxy.faults[blob] = [fault] * 2 * per_attempt
    result, messages, _ = pull_through(faulty_proxy, tmp_path)
    assert result == image_id
    assert layer_statuses(messages, blob) == [
        "Pulling fs layer",
        *countdown(5),
        *countdown(10),
        "Verifying Checksum",
        "Download complete",
        "Pull complete",
    ]
    assert faulty_proxy.blob_gets(blob) == [None] * (2 * per_attempt + 1)


def test_a_cut_download_resumes_where_it_stopped(pushed, faulty_proxy, registry, tmp_path):
    image_id, blob = pushed
    size = registry.blob_path(blob).stat().st_size
    faulty_proxy.faults[blob] = ["cut"]
    result, messages, _ = pull_through(faulty_proxy, tmp_path)
    assert result == image_id
    assert countdown(5) == [s for s in layer_statuses(messages, blob) if s.startswith("Retrying")]
    assert faulty_proxy.blob_gets(blob) == [None, f"bytes={size // 2}-"]


def test_five_attempts_then_the_last_error(pushed, faulty_proxy, tmp_path):
    _, blob = pushed
    faulty_proxy.faults[blob] = ["500"] * 10
    err, messages, images = pull_through(faulty_proxy, tmp_path)
    assert str(err) == "received unexpected HTTP status: 500 Internal Server Error"
    assert len(faulty_proxy.blob_gets(blob)) == 5
    retries = [s for s in layer_statuses(messages, blob) if s.startswith("Retrying")]
    assert retries == countdown(5) + countdown(10) + countdown(15) + countdown(20)
    assert len(images.image_store) == 0 and images.layer_store.layers() == []


def test_the_number_of_attempts_is_the_daemons_option(pushed, faulty_proxy, tmp_path):
    _, blob = pushed
    faulty_proxy.faults[blob] = ["503"] * 10
    err, _, _ = pull_through(faulty_proxy, tmp_path, max_download_attempts=2)
    assert str(err) == "received unexpected HTTP status: 503 Service Unavailable"
    assert len(faulty_proxy.blob_gets(blob)) == 2


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("401", "unauthorized: refused"),
        ("403", "error parsing HTTP 403 response body: invalid JSON: "),  # not the registry's answer
        ("404", "unknown blob"),
        ("corrupt", "filesystem layer verification failed for digest {blob}"),
    ],
)
def test_refusals_and_bad_content_are_not_retried(pushed, faulty_proxy, tmp_path, fault, message):
    _, blob = pushed
    faulty_proxy.faults[blob] = [fault]
    err, messages, images = pull_through(faulty_proxy, tmp_path)
    assert str(err).startswith(message.format(blob=blob))
    assert len(faulty_proxy.blob_gets(blob)) == 1
    assert not any(s.startswith("Retrying") for _, s in messages.statuses())
    assert len(images.image_store) == 0 and images.layer_store.layers() == []
