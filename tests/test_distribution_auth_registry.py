"""Credentials against real registries: htpasswd Basic auth, and Bearer tokens from a token issuer."""

import asyncio
import base64
import json
import urllib.request

import pytest
import registry_fixture
from registry_fixture import PASSWORD, USERNAME, make_image

from minibuild import errdefs
from minibuild.distribution import AuthConfig, MessageCollector, PullNotFoundError, RegistryService
from minibuild.distribution.errors import DistributionError
from minibuild.distribution.images import pull_image, push_image
from minibuild.image.reference import parse_normalized_named
from minibuild.image.service import ImageService

# The fixtures, imported explicitly.
basic_registry = registry_fixture.basic_registry
token_registry = registry_fixture.token_registry
token_keys = registry_fixture.token_keys

GOOD = AuthConfig(username=USERNAME, password=PASSWORD)
WRONG = AuthConfig(username=USERNAME, password="not-the-password")
LAYER = {"hello.txt": b"hello from a private registry\n"}


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def env(tmp_path):
    src = (RegistryService(tmp_path / "src" / "distribution"), ImageService(tmp_path / "src"))
    dst = (RegistryService(tmp_path / "dst" / "distribution"), ImageService(tmp_path / "dst"))
    return src, dst


def pushed_image(registry, env, name="private/app:v1"):
    (service, stores), _ = env
    image_id = make_image(stores, [LAYER])
    ref = f"{registry.host}/{name}"
    stores.add_reference(parse_normalized_named(ref), image_id)
    run(push_image(service, stores, ref, auth=GOOD))
    return ref, image_id


# --- Basic ------------------------------------------------------------------------------------------------


def test_basic_auth_push_and_pull_with_credentials(basic_registry, env):
    ref, image_id = pushed_image(basic_registry, env)
    _, (service, stores) = env
    assert run(pull_image(service, stores, ref, auth=GOOD)) == image_id


def test_basic_auth_without_credentials_fails_before_sending_them(basic_registry, env):
    ref, _ = pushed_image(basic_registry, env)
    _, (service, stores) = env
    with pytest.raises(DistributionError) as err:
        run(pull_image(service, stores, ref))
    assert str(err.value) == (
        f'Head "http://{basic_registry.host}/v2/private/app/manifests/v1": no basic auth credentials'
    )
    assert len(stores.image_store) == 0


def test_basic_auth_with_a_wrong_password(basic_registry, env):
    ref, _ = pushed_image(basic_registry, env)
    _, (service, stores) = env
    with pytest.raises(DistributionError, match="^unauthorized: authentication required$"):
        run(pull_image(service, stores, ref, auth=WRONG))


def test_basic_auth_push_without_credentials(basic_registry, env):
    (service, stores), _ = env
    ref = f"{basic_registry.host}/private/anon:v1"
    stores.add_reference(parse_normalized_named(ref), make_image(stores, [LAYER]))
    # Missing credentials lose the request's URL on the way out of a layer upload (retryOnError).
    with pytest.raises(DistributionError, match="^no basic auth credentials$"):
        run(push_image(service, stores, ref))


def test_login_with_basic_auth(basic_registry, env):
    (service, _), _ = env
    auth = AuthConfig(username=USERNAME, password=PASSWORD, serveraddress=basic_registry.host)
    assert run(service.auth(auth)) == ("Login Succeeded", "")
    wrong = AuthConfig(username=USERNAME, password="nope", serveraddress=basic_registry.host)
    with pytest.raises(errdefs.Unknown) as err:  # unmarked in dockerd 20.10: a 500, not a 401
        run(service.auth(wrong))
    assert str(err.value) == (
        f"login attempt to http://{basic_registry.host}/v2/ failed with status: 401 Unauthorized"
    )


# --- Bearer tokens ----------------------------------------------------------------------------------------


def test_token_challenge_then_token_then_request(token_registry, env):
    ref, image_id = pushed_image(token_registry, env)
    _, (service, stores) = env
    issued = token_registry.token_server.requests
    assert issued[0] == {
        "method": "GET",
        "account": USERNAME,
        "ok": True,
        "scopes": ["repository:private/app:push,pull"],
        "service": registry_fixture.TOKEN_SERVICE,
    }
    assert run(pull_image(service, stores, ref, auth=GOOD)) == image_id
    assert issued[-1]["scopes"] == ["repository:private/app:pull"] and issued[-1]["account"] == USERNAME


def test_one_token_serves_every_request_of_a_pull(token_registry, env):
    ref, _ = pushed_image(token_registry, env)
    _, (service, stores) = env
    before = len(token_registry.token_server.requests)
    run(pull_image(service, stores, ref, auth=GOOD))  # HEAD, manifest, config, layer: one token
    assert len(token_registry.token_server.requests) == before + 1


def test_anonymous_pull_of_a_private_repository_is_denied(token_registry, env):
    ref, _ = pushed_image(token_registry, env)
    _, (service, stores) = env
    with pytest.raises(PullNotFoundError) as err:
        run(pull_image(service, stores, ref))
    assert str(err.value) == (
        f"pull access denied for {token_registry.host}/private/app, repository does not exist or may "
        "require 'docker login': denied: requested access to the resource is denied"
    )
    assert err.value.status_code == 404


def test_wrong_password_against_the_token_server(token_registry, env):
    ref, _ = pushed_image(token_registry, env)
    _, (service, stores) = env
    with pytest.raises(DistributionError) as err:
        run(pull_image(service, stores, ref, auth=WRONG))
    assert str(err.value) == (
        f'Head "http://{token_registry.host}/v2/private/app/manifests/v1": '
        "unauthorized: incorrect username or password"
    )


def test_anonymous_push_is_refused(token_registry, env):
    (service, stores), _ = env
    ref = f"{token_registry.host}/private/anon:v1"
    stores.add_reference(parse_normalized_named(ref), make_image(stores, [LAYER]))
    out = MessageCollector()
    with pytest.raises(DistributionError) as err:
        run(push_image(service, stores, ref, progress=out))
    assert "denied: requested access to the resource is denied" in str(err.value)
    assert out.statuses()[0] == ("", f"The push refers to repository [{token_registry.host}/private/anon]")


def test_login_returns_an_identity_token_that_pulls_alone(token_registry, env):
    ref, image_id = pushed_image(token_registry, env)
    (service, _), (dst_service, dst) = env
    status, identity_token = run(
        service.auth(AuthConfig(USERNAME, PASSWORD, serveraddress=token_registry.host))
    )
    assert status == "Login Succeeded" and identity_token
    # docker login keeps the identity token instead of the password; pulls then use OAuth2 refresh.
    assert run(pull_image(dst_service, dst, ref, auth=AuthConfig(identitytoken=identity_token))) == image_id
    assert token_registry.token_server.requests[-1]["method"] == "POST"


def test_login_with_wrong_credentials_against_the_token_server(token_registry, env):
    (service, _), _ = env
    with pytest.raises(errdefs.Unauthorized) as err:
        run(service.auth(AuthConfig(USERNAME, "nope", serveraddress=token_registry.host)))
    assert str(err.value) == (
        f'Get "http://{token_registry.host}/v2/": unauthorized: incorrect username or password'
    )


def test_registry_token_is_passed_through(token_registry, env):
    """A client may hand over a bearer token it got itself (AuthConfig.registrytoken)."""
    ref, image_id = pushed_image(token_registry, env)
    _, (service, stores) = env
    token = json.loads(
        _get(
            f"{token_registry.token_server.realm}?service={registry_fixture.TOKEN_SERVICE}"
            "&scope=repository:private/app:pull",
            f"{USERNAME}:{PASSWORD}",
        )
    )["token"]
    before = len(token_registry.token_server.requests)
    assert run(pull_image(service, stores, ref, auth=AuthConfig(registrytoken=token))) == image_id
    assert len(token_registry.token_server.requests) == before


def _get(url: str, userpass: str) -> bytes:
    request = urllib.request.Request(
        url, headers={"Authorization": "Basic " + base64.b64encode(userpass.encode()).decode()}
    )
    with urllib.request.urlopen(request) as resp:
        return resp.read()
