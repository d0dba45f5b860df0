"""Layer uploads retried as dockerd retries them (moby distribution/xfer/upload.go, retryOnError).

A proxy in front of the real test registry fails chosen requests of a push. A layer upload that fails
for a transient reason (a 5xx answer, a reset connection, an upload cut short, a digest the registry
found wrong, an upload session it lost) is tried again up to five attempts in all, each after `Retrying
in N seconds` counted down from 5 x the attempt number, and each retry opens a new upload session (a new
POST) and sends the whole blob again: dockerd never resumes an upload. Refused credentials and answers
that are not the registry's end the push at the first attempt, and so does a failing manifest PUT. The
countdown's tick is the service's `retry_tick`, 0 here: the tests count messages, never time.
"""

import asyncio
import random
from urllib.parse import urlsplit

import pytest
import registry_fixture
from hypothesis import given
from hypothesis import strategies as st
from registry_fixture import make_image

from minibuild.distribution import MessageCollector, RegistryService, ServiceConfig
from minibuild.distribution.errors import (
    DistributionError,
    DoNotRetry,
    ErrcodeError,
    ErrcodeErrors,
    UnexpectedHTTPStatusError,
)
from minibuild.distribution.images import pull_image, push_image
from minibuild.distribution.xfer import retry_transfer
from minibuild.image.reference import parse_normalized_named
from minibuild.image.service import ImageService

registry, faulty_proxy = registry_fixture.registry, registry_fixture.faulty_proxy

BASE = {"etc/os-release": b"NAME=minibuild\n"}
APP = {"app/data.bin": random.Random(8).randbytes(96 << 10)}  # incompressible: several upload chunks
CHUNK = 32 << 10
COUNTED = ("Pushing",)  # byte-count progress: as many as the chunks read


def countdown(delay):
    return [f"Retrying in {n} second{'s' if n != 1 else ''}" for n in range(delay, 0, -1)]


class Source:
    """Local images to push, and the blob digest each layer compresses to (learnt from a first push of
    the same image to another repository of the registry, straight, so it leaves nothing in `team/app`)."""

    def __init__(self, root, registry, layers):
        self.images = ImageService(root / "src")
        self.image_id = make_image(self.images, layers)
        self.diff_ids = self.images.image_store.get(self.image_id).diff_ids
        seed = RegistryService(root / "seed")
        self.images.add_reference(parse_normalized_named(f"{registry.host}/seed/app:v1"), self.image_id)
        asyncio.run(push_image(seed, self.images, f"{registry.host}/seed/app:v1"))
        self.blobs = [seed.metadata.get_metadata(d)[0].digest for d in self.diff_ids]

    def short(self, index):
        return self.diff_ids[index].removeprefix("sha256:")[:12]


@pytest.fixture
def two_layers(registry, tmp_path):
    return Source(tmp_path, registry, [BASE, APP])


@pytest.fixture
def one_layer(registry, tmp_path):
    """An image of one layer: every PATCH before the config's is that layer's, in order."""
    return Source(tmp_path, registry, [APP])


def push_through(proxy, source, tmp_path, chunk_size=None, tag="v1", **config):
    """Push `team/app:<tag>` through the proxy with a service of its own (whose layer metadata stays
    from one call to the next): (results or the error, messages)."""
    name = f"{proxy.host}/team/app:{tag}"
    source.images.add_reference(parse_normalized_named(name), source.image_id)
    service = RegistryService(tmp_path / "push", ServiceConfig(retry_tick=0, **config))
    messages = MessageCollector()
    try:
        results = asyncio.run(
            push_image(service, source.images, name, progress=messages, chunk_size=chunk_size)
        )
    except DistributionError as err:
        return err, messages
    return results, messages


def layer_statuses(messages, short):
    return [status for i, status in messages.statuses() if i == short and status not in COUNTED]


def sessions(proxy):
    """The upload sessions the registry opened, in order (the UUID in each upload URL)."""
    return [urlsplit(p).path.rsplit("/", 1)[1] for m, p in proxy.upload_requests() if m != "POST"]


def pulled_back(registry, tmp_path):
    """Pull `team/app:v1` straight from the registry into a fresh data root: the image ID."""
    images = ImageService(tmp_path / "dst")
    return asyncio.run(
        pull_image(RegistryService(tmp_path / "dst" / "distribution"), images, f"{registry.host}/team/app:v1")
    )


@pytest.mark.parametrize("fault", ["500", "503", "reset", "cut", "corrupt", "404"])
def test_a_failed_upload_is_restarted_in_a_new_session(two_layers, faulty_proxy, registry, tmp_path, fault):
    app_blob = two_layers.blobs[1]
    faulty_proxy.upload_faults[app_blob] = [fault, fault]
    results, messages = push_through(faulty_proxy, two_layers, tmp_path)
    assert not isinstance(results, Exception), results
    assert layer_statuses(messages, two_layers.short(1)) == [
        "Preparing",
        *countdown(5),
        *countdown(10),
        "Pushed",
    ]
    assert layer_statuses(messages, two_layers.short(0)) == ["Preparing", "Pushed"]  # the other layer
    assert faulty_proxy.blob_puts(app_blob) == 3
    posts = [m for m, _ in faulty_proxy.upload_requests() if m == "POST"]
    assert len(posts) == 3 + 1 + 1  # the app layer's three attempts, the base layer, the config
    assert pulled_back(registry, tmp_path) == two_layers.image_id


def test_a_chunked_upload_starts_over_rather_than_resuming(one_layer, faulty_proxy, registry, tmp_path):
    faulty_proxy.upload_faults["PATCH"] = ["cut", "500"]
    results, messages = push_through(faulty_proxy, one_layer, tmp_path, chunk_size=CHUNK)
    assert not isinstance(results, Exception), results
    assert layer_statuses(messages, one_layer.short(0)) == [
        "Preparing",
        *countdown(5),
        *countdown(10),
        "Pushed",
    ]
    chunks = -(-registry.blob_path(one_layer.blobs[0]).stat().st_size // CHUNK)
    assert chunks > 1
    assert [m for m, _ in faulty_proxy.upload_requests()] == [
        *("POST", "PATCH"),  # cut: a new session at once, from the first byte
        *("POST", "PATCH"),  # 500: the same
        *("POST", *["PATCH"] * chunks, "PUT"),
        *("POST", "PATCH", "PUT"),  # the image config
    ]
    assert len(set(sessions(faulty_proxy))) == 3 + 1  # three for the layer, one for the config
    assert pulled_back(registry, tmp_path) == one_layer.image_id


def test_five_attempts_then_the_last_error(two_layers, faulty_proxy, tmp_path):
    app_blob = two_layers.blobs[1]
    faulty_proxy.upload_faults[app_blob] = ["500"] * 10
    err, messages = push_through(faulty_proxy, two_layers, tmp_path)
    assert isinstance(err, DistributionError)
    assert str(err) == "received unexpected HTTP status: 500 Internal Server Error"
    assert faulty_proxy.blob_puts(app_blob) == 5
    retries = [s for s in layer_statuses(messages, two_layers.short(1)) if s.startswith("Retrying")]
    assert retries == countdown(5) + countdown(10) + countdown(15) + countdown(20)
    assert not any("/manifests/" in p for m, p, _ in faulty_proxy.requests if m == "PUT")


def test_the_number_of_attempts_is_the_services_option(two_layers, faulty_proxy, tmp_path):
    app_blob = two_layers.blobs[1]
    faulty_proxy.upload_faults[app_blob] = ["503"] * 10
    err, _ = push_through(faulty_proxy, two_layers, tmp_path, max_upload_attempts=2)
    assert str(err) == "received unexpected HTTP status: 503 Service Unavailable"
    assert faulty_proxy.blob_puts(app_blob) == 2


@pytest.mark.parametrize(
    ("where", "fault", "message"),
    [
        ("blob", "401", "unauthorized: refused"),
        ("blob", "403", "error parsing HTTP 403 response body: invalid JSON: "),  # not the registry's answer
        ("POST", "401", "unauthorized: refused"),
    ],
)
def test_refusals_are_not_retried(two_layers, faulty_proxy, tmp_path, where, fault, message):
    key = two_layers.blobs[1] if where == "blob" else where
    faulty_proxy.upload_faults[key] = [fault]
    err, messages = push_through(faulty_proxy, two_layers, tmp_path)
    assert isinstance(err, DistributionError)
    assert str(err).startswith(message)
    assert not any(s.startswith("Retrying") for _, s in messages.statuses())
    if where == "blob":
        assert faulty_proxy.blob_puts(two_layers.blobs[1]) == 1
    assert not any("/manifests/" in p for m, p, _ in faulty_proxy.requests if m == "PUT")


def test_a_failing_manifest_put_is_not_retried(two_layers, faulty_proxy, tmp_path):
    faulty_proxy.upload_faults["manifest"] = ["500"]
    err, messages = push_through(faulty_proxy, two_layers, tmp_path)
    assert str(err) == "received unexpected HTTP status: 500 Internal Server Error"
    assert [p for m, p, _ in faulty_proxy.requests if m == "PUT" and "/manifests/" in p] == [
        "/v2/team/app/manifests/v1"
    ]
    assert not any(s.startswith("Retrying") for _, s in messages.statuses())


def test_a_failing_existence_check_is_passed_over(two_layers, faulty_proxy, tmp_path):
    """dockerd asks about the blobs its metadata ties to a layer and goes on when a question fails."""
    results, _ = push_through(faulty_proxy, two_layers, tmp_path)  # the service now knows the blobs
    assert not isinstance(results, Exception), results
    app_blob = two_layers.blobs[1]
    heads_before = sum(1 for m, p, _ in faulty_proxy.requests if m == "HEAD" and p.endswith(app_blob))
    faulty_proxy.upload_faults[f"HEAD {app_blob}"] = ["500"]
    results, messages = push_through(faulty_proxy, two_layers, tmp_path, tag="v2")
    assert not isinstance(results, Exception), results
    assert layer_statuses(messages, two_layers.short(1)) == ["Preparing", "Layer already exists"]
    heads = sum(1 for m, p, _ in faulty_proxy.requests if m == "HEAD" and p.endswith(app_blob))
    assert heads - heads_before == 2  # the failed check, then the compressed blob's own
    assert faulty_proxy.blob_puts(app_blob) == 1  # from the first push only


# --- the retry loop itself, against every sequence of outcomes ------------------------------------------


def _failure(kind):
    if kind == "transient":
        return UnexpectedHTTPStatusError("502 Bad Gateway")
    return ErrcodeErrors([ErrcodeError("DENIED")])  # retryOnError: never worth another attempt


@given(
    outcomes=st.lists(st.sampled_from(["ok", "transient", "refused"]), min_size=1, max_size=8),
    max_attempts=st.integers(min_value=1, max_value=6),
)
def test_retry_transfer_tries_until_success_refusal_or_the_last_attempt(outcomes, max_attempts):
    calls = []

    async def attempt():
        kind = outcomes[len(calls)] if len(calls) < len(outcomes) else "ok"
        calls.append(kind)
        if kind != "ok":
            raise _failure(kind)
        return len(calls)

    out = MessageCollector()
    try:
        result = asyncio.run(retry_transfer(attempt, out, "layer", max_attempts, 0))
    except Exception as err:  # noqa: BLE001 - the raised error is what is checked
        result = err
    expected = []  # the attempts a faithful loop makes
    for kind in [*outcomes, "ok"]:
        expected.append(kind)
        if kind != "transient" or len(expected) == max_attempts:
            break
    assert calls == expected
    retried = len(expected) - 1
    assert [s for _, s in out.statuses()] == [m for k in range(1, retried + 1) for m in countdown(5 * k)]
    if expected[-1] == "ok":
        assert result == len(expected)
    elif expected[-1] == "refused":
        assert (
            isinstance(result, DoNotRetry)
            and str(result) == "denied: requested access to the resource is denied"
        )
    else:
        assert isinstance(result, UnexpectedHTTPStatusError)
