"""Credential helpers (`credsStore`, `credHelpers` in the docker config file), run as the docker CLI runs
them: `docker-credential-<name> get|store|erase|list` found on PATH.

The helper here is a small Python script written into a temp directory put first on PATH; it keeps its
credentials in a JSON file and logs every call (action and stdin) so the tests see the protocol itself.
"""

import base64
import json
import os
import shutil
import sys

import api_doubles
import pytest
import registry_fixture
import test_registry_cli
from registry_fixture import PASSWORD, USERNAME
from test_registry_cli import build, docker_build_scratch, invoke, short, tagged_image

from minibuild.distribution import AuthConfig
from minibuild.distribution.configfile import ConfigFile
from minibuild.distribution.credentials import CredentialHelperError

registry, basic_registry = registry_fixture.registry, registry_fixture.basic_registry
token_registry, token_keys = registry_fixture.token_registry, registry_fixture.token_keys
source, fresh = api_doubles.source, api_doubles.fresh
build_daemon = test_registry_cli.build_daemon

DOCKER = shutil.which("docker")
NOT_FOUND = "credentials not found in native keychain"

HELPER = """#!{python}
import json, sys
STORE, LOG = {store!r}, {log!r}
action = sys.argv[1]
data = sys.stdin.read()
with open(LOG, "a") as log:
    log.write(json.dumps([action, data]) + "\\n")
try:
    with open(STORE) as f:
        creds = json.load(f)
except FileNotFoundError:
    creds = {{}}

def fail(message):
    print(message)
    sys.exit(1)

def save():
    with open(STORE, "w") as f:
        json.dump(creds, f)

if action == "get":
    if not data:
        fail("no credentials server URL")
    if data not in creds:
        fail("{not_found}")
    json.dump({{"ServerURL": data, "Username": creds[data][0], "Secret": creds[data][1]}}, sys.stdout)
elif action == "store":
    c = json.loads(data)
    if not c["ServerURL"]:
        fail("no credentials server URL")
    creds[c["ServerURL"]] = [c["Username"], c["Secret"]]
    save()
elif action == "erase":
    if data not in creds:
        fail("{not_found}")
    del creds[data]
    save()
elif action == "list":
    json.dump({{url: c[0] for url, c in creds.items()}}, sys.stdout)
else:
    fail("unknown action " + action)
"""


class FakeHelper:
    """`docker-credential-<name>` on PATH, its store and its call log."""

    def __init__(self, bin_dir, name):
        self.name = name
        self.store_path = bin_dir / f"{name}.store.json"
        self.log_path = bin_dir / f"{name}.log"
        script = bin_dir / f"docker-credential-{name}"
        script.write_text(
            HELPER.format(
                python=sys.executable, store=str(self.store_path), log=str(self.log_path), not_found=NOT_FOUND
            )
        )
        script.chmod(0o755)

    @property
    def creds(self):
        return json.loads(self.store_path.read_text()) if self.store_path.exists() else {}

    @creds.setter
    def creds(self, value):
        self.store_path.write_text(json.dumps(value))

    def calls(self):
        if not self.log_path.exists():
            return []
        return [tuple(json.loads(line)) for line in self.log_path.read_text().splitlines()]

    def clear_log(self):
        self.log_path.unlink(missing_ok=True)


@pytest.fixture
def helper_bin(tmp_path, monkeypatch):
    bin_dir = tmp_path / "helper-bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


@pytest.fixture
def helper(helper_bin):
    return FakeHelper(helper_bin, "fake")


@pytest.fixture
def docker_config(tmp_path):
    path = tmp_path / "docker-config"
    path.mkdir()
    return path


@pytest.fixture
def env(docker_config, tmp_path):
    return {"DOCKER_CONFIG": str(docker_config), "HOME": str(tmp_path)}


def write_config(docker_config, data):
    (docker_config / "config.json").write_text(json.dumps(data))
    return ConfigFile.load(docker_config / "config.json")


def config_json(docker_config):
    return json.loads((docker_config / "config.json").read_text())


def b64(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# --- the protocol, operation by operation -------------------------------------------------------------------


def test_get_asks_the_helper_with_the_server_url_on_stdin(helper, docker_config):
    helper.creds = {"registry.example:5000": ["alice", "pw"]}
    config = write_config(docker_config, {"credsStore": "fake", "auths": {"registry.example:5000": {}}})
    assert config.get_auth_config("registry.example:5000") == AuthConfig(
        username="alice", password="pw", serveraddress="registry.example:5000"
    )
    assert helper.calls() == [("get", "registry.example:5000")]


def test_nothing_stored_is_no_error_and_the_files_own_credentials_are_not_used(helper, docker_config):
    config = write_config(
        docker_config,
        {"credsStore": "fake", "auths": {"other:5000": {"auth": b64("file", "user"), "email": "e@x"}}},
    )
    # With a credsStore, credentials are the helper's only: the file keeps only the email.
    assert config.get_auth_config("other:5000") == AuthConfig(email="e@x")
    assert config.get_auth_config("missing:1") == AuthConfig()


def test_a_token_username_marks_an_identity_token(helper, docker_config):
    helper.creds = {"https://index.docker.io/v1/": ["<token>", "refresh-me"]}
    config = write_config(docker_config, {"credsStore": "fake"})
    assert config.get_auth_config("https://index.docker.io/v1/") == AuthConfig(
        identitytoken="refresh-me", serveraddress="https://index.docker.io/v1/"
    )


def test_store_sends_json_and_leaves_an_empty_entry_in_the_file(helper, docker_config):
    config = write_config(docker_config, {"credsStore": "fake", "other": {"kept": True}})
    config.store(AuthConfig(username="bob", password="s3", serveraddress="r.example"))
    config.store(AuthConfig(username="bob", identitytoken="tok&<>", serveraddress="t.example"))
    assert helper.calls() == [
        ("store", '{"ServerURL":"r.example","Username":"bob","Secret":"s3"}\n'),
        # Go's json.Encoder: HTML characters escaped, a newline at the end.
        (
            "store",
            '{"ServerURL":"t.example","Username":"\\u003ctoken\\u003e","Secret":"tok\\u0026\\u003c\\u003e"}\n',
        ),
    ]
    assert helper.creds == {"r.example": ["bob", "s3"], "t.example": ["<token>", "tok&<>"]}
    assert config_json(docker_config) == {
        "auths": {"r.example": {}, "t.example": {}},
        "credsStore": "fake",
        "other": {"kept": True},
    }


def test_erase_removes_from_the_helper_and_the_file(helper, docker_config):
    helper.creds = {"r.example": ["bob", "s3"], "s.example": ["eve", "x"]}
    config = write_config(docker_config, {"credsStore": "fake", "auths": {"r.example": {}, "s.example": {}}})
    config.erase("r.example")
    assert helper.calls() == [("erase", "r.example")]
    assert helper.creds == {"s.example": ["eve", "x"]}
    assert config_json(docker_config)["auths"] == {"s.example": {}}
    with pytest.raises(CredentialHelperError) as err:
        config.erase("r.example")
    assert str(err.value) == f"error erasing credentials - err: exit status 1, out: `{NOT_FOUND}`"


def test_get_all_lists_then_gets_each_and_credhelpers_override(helper_bin, docker_config):
    store, per_registry = FakeHelper(helper_bin, "fake"), FakeHelper(helper_bin, "ecr")
    store.creds = {"a.example": ["alice", "pa"], "b.example": ["bob", "pb"]}
    per_registry.creds = {"b.example": ["robot", "pr"]}
    config = write_config(
        docker_config,
        {
            "credsStore": "fake",
            "credHelpers": {"b.example": "ecr", "c.example": "ecr"},
            "auths": {"a.example": {"email": "a@x"}, "file-only.example": {"auth": b64("f", "g")}},
        },
    )
    assert config.get_all_credentials() == {
        "a.example": AuthConfig(username="alice", password="pa", email="a@x", serveraddress="a.example"),
        "b.example": AuthConfig(username="robot", password="pr", serveraddress="b.example"),
        "c.example": AuthConfig(),  # a credHelpers registry the helper knows nothing of: empty
    }
    assert store.calls()[0] == ("list", "unused")
    assert sorted(store.calls()[1:]) == [("get", "a.example"), ("get", "b.example")]
    assert sorted(per_registry.calls()) == [("get", "b.example"), ("get", "c.example")]


def test_credhelpers_alone_keep_the_file_for_other_registries(helper, docker_config):
    helper.creds = {"h.example": ["hu", "hp"]}
    config = write_config(
        docker_config,
        {"credHelpers": {"h.example": "fake"}, "auths": {"f.example": {"auth": b64("fu", "fp")}}},
    )
    assert config.get_auth_config("f.example") == AuthConfig("fu", "fp", serveraddress="f.example")
    assert config.get_auth_config("h.example") == AuthConfig("hu", "hp", serveraddress="h.example")
    assert config.get_all_credentials() == {
        "f.example": AuthConfig("fu", "fp", serveraddress="f.example"),
        "h.example": AuthConfig("hu", "hp", serveraddress="h.example"),
    }


def test_helper_failures_in_docker_credential_helpers_words(helper_bin, docker_config):
    config = write_config(docker_config, {"credsStore": "nope"})
    with pytest.raises(CredentialHelperError) as err:
        config.get_auth_config("r.example")
    assert str(err.value) == (
        'error getting credentials - err: exec: "docker-credential-nope": executable file not found in '
        "$PATH, out: ``"
    )
    broken = helper_bin / "docker-credential-broken"
    broken.write_text("#!/bin/sh\necho '  keychain is locked  '\necho on-stderr >&2\nexit 3\n")
    broken.chmod(0o755)
    config = write_config(docker_config, {"credsStore": "broken"})
    with pytest.raises(CredentialHelperError) as err:
        config.get_auth_config("r.example")
    assert str(err.value) == "error getting credentials - err: exit status 3, out: `keychain is locked`"
    with pytest.raises(CredentialHelperError) as err:
        config.get_all_credentials()
    assert str(err.value) == "error listing credentials - err: exit status 3, out: `keychain is locked`"
    with pytest.raises(CredentialHelperError) as err:
        config.store(AuthConfig("u", "p", serveraddress="r.example"))
    assert str(err.value) == "error storing credentials - err: exit status 3, out: `keychain is locked`"
    assert not (docker_config / "config.json").read_text().count('"r.example"')  # nothing half-stored

    garbled = helper_bin / "docker-credential-garbled"
    garbled.write_text("#!/bin/sh\necho 'not json'\n")
    garbled.chmod(0o755)
    config = write_config(docker_config, {"credsStore": "garbled"})
    with pytest.raises(CredentialHelperError) as err:
        config.get_auth_config("r.example")
    assert str(err.value) == "invalid character 'o' in literal null (expecting 'u')"


def test_the_helpers_own_input_errors_are_passed_on_as_they_are(helper, docker_config):
    config = write_config(docker_config, {"credsStore": "fake"})
    with pytest.raises(CredentialHelperError) as err:
        config.get_auth_config("")
    assert str(err.value) == "no credentials server URL"


# --- the CLI ------------------------------------------------------------------------------------------------


def test_login_pull_push_logout_through_the_creds_store(
    basic_registry, source, fresh, env, docker_config, helper
):
    (docker_config / "config.json").write_text(json.dumps({"credsStore": "fake"}))
    host = basic_registry.host
    name = f"{host}/private/app"
    image_id = tagged_image(source, f"{name}:v1")

    code, out, err = invoke(
        source, env, "login", "-u", USERNAME, "--password-stdin", host, stdin=PASSWORD.encode()
    )
    assert (code, out, err) == (0, "Login Succeeded\n", "")  # no "stored unencrypted" warning
    assert helper.creds == {host: [USERNAME, PASSWORD]}
    assert config_json(docker_config) == {"auths": {host: {}}, "credsStore": "fake"}

    helper.clear_log()
    assert invoke(source, env, "push", "-q", f"{name}:v1") == (0, f"{name}:v1\n", "")
    assert helper.calls() == [("get", host)]
    assert invoke(fresh, env, "pull", "-q", f"{name}:v1") == (0, f"{name}:v1\n", "")
    assert fresh.daemon.image_service.image_store.get(image_id) is not None

    # Stored credentials are found through the helper: login without flags reuses them.
    code, out, err = invoke(fresh, env, "login", host)
    assert (code, out) == (0, "Login Succeeded\n")
    assert err.startswith(f"Authenticating with existing credentials... [Username: {USERNAME}]\n")

    assert invoke(fresh, env, "logout", host) == (0, f"Removing login credentials for {host}\n", "")
    assert helper.creds == {} and config_json(docker_config)["auths"] == {}
    code, _, err = invoke(fresh, env, "pull", f"{name}:v1")
    assert (code, err) == (
        1,
        f'Error response from daemon: Head "http://{host}/v2/private/app/manifests/v1": '
        "no basic auth credentials\n",
    )
    # Nothing left to erase: no warning while the same key is tried twice (Go's error map has 3 keys for
    # 4 tries); with four distinct keys, every failure is reported.
    assert invoke(fresh, env, "logout", host) == (0, f"Removing login credentials for {host}\n", "")
    code, out, err = invoke(fresh, env, "logout", f"https://{host}/")
    assert (code, out) == (0, f"Removing login credentials for {host}\n")
    lines = err.splitlines()
    assert lines[0] == "WARNING: could not erase credentials:"
    assert sorted(lines[1:]) == sorted(
        f"{key}: error erasing credentials - err: exit status 1, out: `{NOT_FOUND}`"
        for key in (f"https://{host}/", host, f"http://{host}", f"https://{host}")
    )


def test_a_token_registry_login_keeps_the_identity_token_in_the_helper(
    token_registry, source, env, docker_config, helper
):
    (docker_config / "config.json").write_text(json.dumps({"credHelpers": {token_registry.host: "fake"}}))
    code, out, _ = invoke(source, env, "login", "-u", USERNAME, "-p", PASSWORD, token_registry.host)
    assert (code, out) == (0, "Login Succeeded\n")
    assert helper.creds == {token_registry.host: ["<token>", f"{USERNAME}:{PASSWORD}"]}
    name = f"{token_registry.host}/team/app"
    tagged_image(source, f"{name}:v1")
    token_registry.token_server.requests.clear()
    assert invoke(source, env, "push", "-q", f"{name}:v1") == (0, f"{name}:v1\n", "")
    # The identity token went to the token server as an OAuth2 refresh token.
    assert {(r["method"], r["account"], r["ok"]) for r in token_registry.token_server.requests} == {
        ("POST", USERNAME, True)
    }


def test_helper_errors_end_pull_push_and_login_in_the_clis_words(
    registry, fresh, env, docker_config, helper_bin
):
    (docker_config / "config.json").write_text(json.dumps({"credHelpers": {registry.host: "missing"}}))
    expected = (
        'error getting credentials - err: exec: "docker-credential-missing": executable file not found in '
        "$PATH, out: ``\n"
    )
    assert invoke(fresh, env, "pull", f"{registry.host}/app:v1") == (1, "", expected)
    assert invoke(fresh, env, "push", f"{registry.host}/app:v1") == (1, "", expected)
    code, _, err = invoke(fresh, env, "login", "-u", "u", "-p", "p", registry.host)
    assert code == 1 and err.endswith(
        'Error saving credentials: error storing credentials - err: exec: "docker-credential-missing": '
        "executable file not found in $PATH, out: ``\n"
    )
    assert config_json(docker_config) == {"credHelpers": {registry.host: "missing"}}  # untouched


# --- X-Registry-Config --------------------------------------------------------------------------------------


def test_build_sends_every_credential_the_stores_hold(build_daemon, env, docker_config, tmp_path, helper_bin):
    daemon, backend = build_daemon
    store, per_registry = FakeHelper(helper_bin, "fake"), FakeHelper(helper_bin, "ecr")
    store.creds = {"a.example": ["alice", "pa"], "https://index.docker.io/v1/": ["<token>", "hub-token"]}
    per_registry.creds = {"a.example": ["robot", "pr"]}
    (docker_config / "config.json").write_text(
        json.dumps({"credsStore": "fake", "credHelpers": {"a.example": "ecr"}, "auths": {"a.example": {}}})
    )
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")

    code, header, _ = build(daemon, env, context)
    assert code == 0
    assert json.loads(base64.urlsafe_b64decode(header)) == {
        "a.example": {"username": "robot", "password": "pr", "serveraddress": "a.example"},
        "https://index.docker.io/v1/": {
            "serveraddress": "https://index.docker.io/v1/",
            "identitytoken": "hub-token",
        },
    }

    # A failing store: the CLI ignores the error and sends no credentials at all.
    (docker_config / "config.json").write_text(json.dumps({"credsStore": "absent"}))
    code, header, err = build(daemon, env, context)
    assert (code, header, err) == (0, "e30=", "")


@pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")
def test_the_docker_cli_sends_the_same_x_registry_config(
    build_daemon, env, docker_config, tmp_path, helper_bin
):
    daemon, backend = build_daemon
    store, per_registry = FakeHelper(helper_bin, "fake"), FakeHelper(helper_bin, "ecr")
    store.creds = {"a.example": ["alice", "pa"], "b.example": ["<token>", "tb"]}
    per_registry.creds = {"b.example": ["robot", "pr"]}
    (docker_config / "config.json").write_text(
        json.dumps(
            {
                "credsStore": "fake",
                "credHelpers": {"b.example": "ecr"},
                "auths": {"a.example": {"email": "a@x"}},
            }
        )
    )
    result = docker_build_scratch(daemon, env, tmp_path)
    assert result.returncode == 0, result.stderr
    from_docker = backend.configs[-1].options.auth_configs
    assert build(daemon, env, tmp_path / "ctx")[0] == 0
    assert backend.configs[-1].options.auth_configs == from_docker
    assert set(from_docker) == {"a.example", "b.example"}


def test_a_build_pulls_its_base_with_credentials_only_the_helper_holds(
    basic_registry, source, fresh, env, docker_config, tmp_path, helper
):
    name = f"{basic_registry.host}/private/base"
    image_id = tagged_image(source, f"{name}:v1")
    helper.creds = {basic_registry.host: [USERNAME, PASSWORD]}
    (docker_config / "config.json").write_text(json.dumps({"credsStore": "fake"}))
    assert invoke(source, env, "push", "-q", f"{name}:v1")[0] == 0
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {name}:v1\n")

    helper.creds = {}
    code, _, err = invoke(fresh, env, "build", str(context))
    assert (code, err) == (
        1,
        f'Head "http://{basic_registry.host}/v2/private/base/manifests/v1": no basic auth credentials\n',
    )

    helper.creds = {basic_registry.host: [USERNAME, PASSWORD]}
    code, out, err = invoke(fresh, env, "build", str(context))
    assert (code, err) == (0, "")
    assert f"Status: Downloaded newer image for {name}:v1\n" in out
    assert out.endswith(f"Successfully built {short(image_id)}\n")
