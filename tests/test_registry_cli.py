"""`minibuild pull`, `push`, `login`, `logout` against a real registry, and the credentials of the docker
config file travelling with `minibuild build` (X-Registry-Config), as the docker CLI sends them.

The config file is the docker CLI's: what `docker login` writes, `minibuild pull` uses, and the other
way round. Outputs are compared line by line with what the docker CLI prints when its output is not
a terminal.
"""

import base64
import json
import os
import pty
import shutil
import stat
import subprocess
import sys

import api_doubles
import pytest
import registry_fixture
from api_doubles import BinaryStdin, RecordingBuildBackend, Stream
from registry_fixture import PASSWORD, USERNAME, make_image

from minibuild.api.daemon import embedded_daemon
from minibuild.cli.main import CLI, run
from minibuild.client import APIClient
from minibuild.distribution import AuthConfig
from minibuild.image.reference import parse_normalized_named

registry = registry_fixture.registry  # the fixtures, imported explicitly
source, fresh = api_doubles.source, api_doubles.fresh
basic_registry = registry_fixture.basic_registry
token_registry = registry_fixture.token_registry
token_keys = registry_fixture.token_keys

DOCKER = shutil.which("docker")
needs_docker_cli = pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")
BASE = {"etc/os-release": b"NAME=minibuild\n"}
APP = {"app/data.bin": bytes(range(256)) * 300}
UNENCRYPTED = (
    "\nWARNING! Your credentials are stored unencrypted in '{}'.\n"
    "Configure a credential helper to remove this warning. See\n"
    "https://docs.docker.com/go/credential-store/\n\n"
)
INSECURE_FLAG = "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n"


@pytest.fixture
def docker_config(tmp_path):
    return tmp_path / "docker-config"


@pytest.fixture
def env(docker_config, tmp_path):
    return {"DOCKER_CONFIG": str(docker_config), "HOME": str(tmp_path)}


def invoke(daemon, env, *argv, stdin=b"", tty_stdin=None):
    cli = CLI(daemon.host, Stream(), Stream(), tty_stdin or BinaryStdin(stdin), env)
    try:
        code = run(list(argv), cli)
    finally:
        if cli._client is not None:
            cli._client.close()
    return code, cli.stdout.getvalue(), cli.stderr.getvalue()


def tagged_image(daemon, name, layers=(BASE, APP)):
    images = daemon.daemon.image_service
    image_id = make_image(images, list(layers))
    images.add_reference(parse_normalized_named(name), image_id)
    return image_id


def short(digest):
    return digest.removeprefix("sha256:")[:12]


def config_json(docker_config):
    return json.loads((docker_config / "config.json").read_text())


def basic_auth_entry(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# --- pull and push --------------------------------------------------------------------------------------


def test_push_then_pull_prints_what_the_docker_cli_prints(registry, source, fresh, env):
    name = f"{registry.host}/team/app"
    image_id = tagged_image(source, f"{name}:v1")
    layers = [short(d) for d in reversed(source.daemon.image_service.image_store.get(image_id).diff_ids)]

    code, out, err = invoke(source, env, "push", f"{name}:v1")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:3] == [
        f"The push refers to repository [{name}]",
        f"{layers[0]}: Preparing",
        f"{layers[1]}: Preparing",
    ]
    assert sorted(lines[3:5]) == sorted(f"{layer}: Pushed" for layer in layers)
    assert lines[5].startswith("v1: digest: sha256:") and lines[5].endswith(" size: 730") and len(lines) == 6
    digest = lines[5].split()[2]

    code, out, err = invoke(fresh, env, "pull", f"{name}:v1")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    blobs = [line.split(":")[0] for line in lines if line.endswith(": Pulling fs layer")]
    assert lines[0] == "v1: Pulling from team/app" and len(blobs) == 2
    for blob in blobs:  # no byte counts when stdout is not a terminal
        assert [line for line in lines if line.startswith(blob)] == [
            f"{blob}: Pulling fs layer",
            f"{blob}: Verifying Checksum",
            f"{blob}: Download complete",
            f"{blob}: Pull complete",
        ]
    assert lines[-3:] == [f"Digest: {digest}", f"Status: Downloaded newer image for {name}:v1", f"{name}:v1"]

    code, out, _ = invoke(fresh, env, "images", "-q", "--no-trunc", name)
    assert (code, out) == (0, image_id + "\n")  # the same image, not a copy
    code, out, _ = invoke(fresh, env, "pull", f"{name}:v1")
    assert out.splitlines()[-2:] == [f"Status: Image is up to date for {name}:v1", f"{name}:v1"]


def test_default_tag_quiet_and_all_tags(registry, source, fresh, env):
    name = f"{registry.host}/tags"
    tagged_image(source, f"{name}:latest", [BASE])
    tagged_image(source, f"{name}:other", [APP])

    code, out, _ = invoke(source, env, "push", name)
    assert code == 0 and out.splitlines()[:2] == [
        "Using default tag: latest",
        f"The push refers to repository [{name}]",
    ]
    assert invoke(source, env, "push", "-q", f"{name}:other") == (0, f"{name}:other\n", "")
    code, out, _ = invoke(source, env, "push", "-a", name)
    assert code == 0 and [line.split(":")[0] for line in out.splitlines() if ": digest: " in line] == [
        "latest",
        "other",
    ]

    assert invoke(fresh, env, "pull", "-q", name) == (0, f"{name}:latest\n", "")
    code, out, _ = invoke(fresh, env, "pull", "-a", name)
    assert code == 0 and out.splitlines()[-2:] == [f"Status: Downloaded newer image for {name}", name]
    assert [line for line in out.splitlines() if "Pulling from" in line] == [
        "latest: Pulling from tags",
        "other: Pulling from tags",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("pull", "-a", "x:v1"), "tag can't be used with --all-tags/-a\n"),
        (("push", "-a", "x:v1"), "tag can't be used with --all-tags/-a\n"),
        (("pull", "BAD"), "invalid reference format: repository name must be lowercase\n"),
    ],
)
def test_refused_before_asking_the_daemon(fresh, env, argv, message):
    assert invoke(fresh, env, *argv) == (1, "", message)


def test_pull_and_push_errors(registry, fresh, env):
    code, out, err = invoke(fresh, env, "pull", f"{registry.host}/nothing")
    assert (code, out) == (1, "Using default tag: latest\n")
    assert err == (
        f"Error response from daemon: manifest for {registry.host}/nothing:latest not found: "
        "manifest unknown: manifest unknown\n"
    )
    code, out, err = invoke(fresh, env, "push", f"{registry.host}/nothing:v1")
    assert (code, out) == (1, f"The push refers to repository [{registry.host}/nothing]\n")
    assert err == f"An image does not exist locally with the tag: {registry.host}/nothing\n"


# --- login, logout --------------------------------------------------------------------------------------


def test_login_pull_logout_round_trip(basic_registry, source, fresh, env, docker_config):
    name = f"{basic_registry.host}/private/app"
    image_id = tagged_image(source, f"{name}:v1")
    code, _, err = invoke(source, env, "push", f"{name}:v1")
    assert (code, err) == (1, "no basic auth credentials\n")  # no credentials stored yet

    code, out, err = invoke(source, env, "login", "-u", USERNAME, "-p", PASSWORD, basic_registry.host)
    config_path = docker_config / "config.json"
    assert (code, out) == (0, "Login Succeeded\n")
    assert err == INSECURE_FLAG + UNENCRYPTED.format(config_path)
    # The docker CLI's format: tab-indented, `auth` is base64 of user:password, owner-only.
    assert config_path.read_text() == (
        f'{{\n\t"auths": {{\n\t\t"{basic_registry.host}": {{\n'
        f'\t\t\t"auth": "{basic_auth_entry(USERNAME, PASSWORD)}"\n\t\t}}\n\t}}\n}}'
    )
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600

    assert invoke(source, env, "push", "-q", f"{name}:v1") == (0, f"{name}:v1\n", "")
    assert invoke(fresh, env, "pull", "-q", f"{name}:v1") == (0, f"{name}:v1\n", "")
    assert APIClient(fresh.host).image_inspect(f"{name}:v1")["Id"] == image_id

    assert invoke(fresh, env, "logout", basic_registry.host) == (
        0,
        f"Removing login credentials for {basic_registry.host}\n",
        "",
    )
    assert config_json(docker_config) == {"auths": {}}
    code, _, err = invoke(fresh, env, "pull", f"{name}:v1")
    assert code == 1
    assert err == (
        f'Error response from daemon: Head "http://{basic_registry.host}/v2/private/app/manifests/v1": '
        "no basic auth credentials\n"
    )


def test_login_with_stored_credentials_and_a_url_as_server(basic_registry, fresh, env, docker_config):
    url = f"http://{basic_registry.host}/"
    assert invoke(fresh, env, "login", "-u", f"  {USERNAME} ", "-p", PASSWORD, url)[0] == 0
    assert list(config_json(docker_config)["auths"]) == [basic_registry.host]  # kept under host:port

    code, out, err = invoke(fresh, env, "login", basic_registry.host)
    assert (code, out) == (0, "Login Succeeded\n")
    assert err == (
        f"Authenticating with existing credentials... [Username: {USERNAME}]\n\n"
        " Info -> To login with a different account, run 'docker logout' followed by 'docker login'\n\n\n"
    )
    # Stored credentials the registry refuses: said so, then a login needs a terminal to ask.
    stale = {"auths": {basic_registry.host: {"auth": basic_auth_entry(USERNAME, "stale")}}}
    (docker_config / "config.json").write_text(json.dumps(stale))
    code, out, err = invoke(fresh, env, "login", basic_registry.host)
    assert (code, out) == (1, "")
    # dockerd 20.10 answers a registry's refusal with a 500, so the CLI does not call it "invalid or expired".
    assert err.endswith(
        "Login did not succeed, error: Error response from daemon: login attempt to "
        f"http://{basic_registry.host}/v2/ failed with status: 401 Unauthorized\n"
        "Error: Cannot perform an interactive login from a non TTY device\n"
    )


def test_stored_credentials_a_token_server_refuses_are_invalid_or_expired(token_registry, fresh, env):
    """Only the token server's refusal is a 401 from dockerd 20.10: the CLI's "invalid or expired" case."""
    stale = {"auths": {token_registry.host: {"auth": basic_auth_entry(USERNAME, "stale")}}}
    config = env["DOCKER_CONFIG"]
    os.makedirs(config)
    with open(os.path.join(config, "config.json"), "w") as f:
        json.dump(stale, f)
    code, out, err = invoke(fresh, env, "login", token_registry.host)
    assert (code, out) == (1, "")
    assert err.endswith(
        "Stored credentials invalid or expired\n"
        "Error: Cannot perform an interactive login from a non TTY device\n"
    )


def test_login_errors(basic_registry, fresh, env, docker_config):
    host = basic_registry.host
    assert invoke(fresh, env, "login", "-u", USERNAME, "-p", "wrong", host) == (
        1,
        "",
        INSECURE_FLAG + f"Error response from daemon: login attempt to http://{host}/v2/ failed with status: "
        "401 Unauthorized\n",
    )
    assert not (docker_config / "config.json").exists()  # nothing stored for a refused login
    assert invoke(fresh, env, "login", "-u", "x", "-p", "y", "--password-stdin", host, stdin=b"z\n") == (
        1,
        "",
        "conflicting options: cannot specify both --password and --password-stdin\n",
    )
    assert invoke(fresh, env, "login", "--password-stdin", host, stdin=b"z\n") == (
        1,
        "",
        "the --password-stdin option requires --username to be set\n",
    )
    assert invoke(fresh, env, "login", "-u", USERNAME, host) == (
        1,
        "",
        "Error: Cannot perform an interactive login from a non TTY device\n",
    )
    code, _, err = invoke(fresh, env, "login", "a", "b")
    assert code == 1 and "See 'minibuild login --help'." in err


def test_password_stdin_drops_the_line_ending(basic_registry, fresh, env, docker_config):
    argv = ("login", "-u", USERNAME, "--password-stdin", basic_registry.host)
    code, out, err = invoke(fresh, env, *argv, stdin=PASSWORD.encode() + b"\r\n")
    assert (code, out, err) == (0, "Login Succeeded\n", UNENCRYPTED.format(docker_config / "config.json"))
    # The same credentials again: the file is not rewritten and the warning not repeated.
    assert invoke(fresh, env, *argv, stdin=PASSWORD.encode() + b"\n") == (0, "Login Succeeded\n", "")


def test_a_token_registry_login_stores_the_identity_token(token_registry, source, fresh, env, docker_config):
    name = f"{token_registry.host}/private/app"
    image_id = tagged_image(source, f"{name}:v1")
    code, out, err = invoke(
        source, env, "login", "-u", USERNAME, "--password-stdin", token_registry.host, stdin=PASSWORD.encode()
    )
    assert (code, out, err) == (0, "Login Succeeded\n", "")  # no password kept: no warning
    entry = config_json(docker_config)["auths"][token_registry.host]
    assert entry["auth"] == base64.b64encode(f"{USERNAME}:".encode()).decode() and entry["identitytoken"]
    assert invoke(source, env, "push", "-q", f"{name}:v1")[0] == 0
    assert invoke(fresh, env, "pull", "-q", f"{name}:v1") == (0, f"{name}:v1\n", "")
    assert APIClient(fresh.host).image_inspect(f"{name}:v1")["Id"] == image_id
    assert any(r["method"] == "POST" for r in token_registry.token_server.requests)  # the OAuth2 refresh


def test_interactive_login_on_a_terminal(basic_registry, fresh, env, docker_config):
    master, slave = pty.openpty()
    try:
        os.write(master, f"{USERNAME}\n{PASSWORD}\n".encode())
        with os.fdopen(slave, "r", closefd=False) as terminal:
            code, out, err = invoke(fresh, env, "login", basic_registry.host, tty_stdin=terminal)
    finally:
        os.close(slave)
        os.close(master)
    assert (code, out) == (0, "Username: Password: \nLogin Succeeded\n")
    assert config_json(docker_config)["auths"][basic_registry.host]["auth"] == basic_auth_entry(
        USERNAME, PASSWORD
    )


def test_logout_of_docker_hub_and_of_legacy_keys(fresh, env, docker_config):
    docker_config.mkdir()
    (docker_config / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": basic_auth_entry("hub", "pw")},
                    "http://legacy.example:5000": {"auth": basic_auth_entry("old", "pw")},
                    "kept.example": {"auth": basic_auth_entry("k", "pw")},
                },
                "credsStore": "",
                "psFormat": "table {{.ID}}",
            }
        )
    )
    assert invoke(fresh, env, "logout") == (
        0,
        "Removing login credentials for https://index.docker.io/v1/\n",
        "",
    )
    assert invoke(fresh, env, "logout", "https://legacy.example:5000/v2/") == (
        0,
        "Removing login credentials for legacy.example:5000\n",
        "",
    )
    config = config_json(docker_config)
    assert list(config["auths"]) == ["kept.example"]
    assert config["psFormat"] == "table {{.ID}}"  # the other settings survive


def test_an_unreadable_config_file_is_reported_and_replaced_by_login(
    basic_registry, fresh, env, docker_config
):
    docker_config.mkdir()
    (docker_config / "config.json").write_text("garbage")
    code, out, err = invoke(fresh, env, "login", "-u", USERNAME, "-p", PASSWORD, basic_registry.host)
    assert (code, out) == (0, "Login Succeeded\n")
    assert f"WARNING: Error loading config file: {docker_config / 'config.json'}: " in err
    assert list(config_json(docker_config)["auths"]) == [basic_registry.host]


# --- the docker CLI shares the config file --------------------------------------------------------------


@needs_docker_cli
def test_docker_login_credentials_serve_minibuild_and_the_other_way_round(
    basic_registry, source, fresh, env, docker_config
):
    name = f"{basic_registry.host}/shared/app"
    image_id = tagged_image(source, f"{name}:v1")
    docker_env = dict(os.environ, **env)

    def docker_cli(daemon, *args, stdin=""):
        return subprocess.run(
            [DOCKER, "-H", daemon.host, *args],
            capture_output=True,
            text=True,
            env=docker_env,
            input=stdin,
            timeout=300,
        )

    # `docker login` (through the minibuild daemon's /auth), then `minibuild push`.
    login = docker_cli(
        source, "login", "-u", USERNAME, "--password-stdin", basic_registry.host, stdin=PASSWORD
    )
    assert (login.returncode, login.stdout) == (0, "Login Succeeded\n"), login.stderr
    assert invoke(source, env, "push", "-q", f"{name}:v1") == (0, f"{name}:v1\n", "")
    assert docker_cli(source, "logout", basic_registry.host).returncode == 0

    # `minibuild login`, then `docker pull` (through the minibuild daemon).
    assert invoke(fresh, env, "login", "-u", USERNAME, "-p", PASSWORD, basic_registry.host)[0] == 0
    pulled = docker_cli(fresh, "pull", "-q", f"{name}:v1")
    assert (pulled.returncode, pulled.stdout) == (0, f"{name}:v1\n"), pulled.stderr
    assert APIClient(fresh.host).image_inspect(f"{name}:v1")["Id"] == image_id


# --- minibuild build sends the config file's credentials -------------------------------------------------


class RecordingClient(APIClient):
    """A real client that also keeps the headers of every raw POST (the build's)."""

    def __init__(self, host):
        super().__init__(host)
        self.sent_headers = []

    def post_raw(self, path, query, body, headers=None):
        self.sent_headers.append(dict(headers or {}))
        return super().post_raw(path, query, body, headers)


@pytest.fixture
def build_daemon(tmp_path):
    backend = RecordingBuildBackend()
    with embedded_daemon(tmp_path / "builds", build_backend=backend) as d:
        yield d, backend


def build(daemon, env, context):
    client = RecordingClient(daemon.host)
    cli = CLI(daemon.host, Stream(), Stream(), BinaryStdin(b""), env)
    cli._client = client
    try:
        code = run(["build", "-q", str(context)], cli)
    finally:
        client.close()
    return code, client.sent_headers[-1]["X-Registry-Config"], cli.stderr.getvalue()


def test_build_sends_the_config_files_credentials_as_x_registry_config(
    build_daemon, env, docker_config, tmp_path
):
    daemon, backend = build_daemon
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")

    code, header, _ = build(daemon, env, context)
    assert (code, header) == (0, "e30=")  # always sent, `{}` without credentials, as the docker CLI does
    assert backend.configs[-1].options.auth_configs == {}

    docker_config.mkdir()
    (docker_config / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    "localhost:5000": {"auth": basic_auth_entry("u", "p")},
                    "https://index.docker.io/v1/": {
                        "auth": basic_auth_entry("hub", "secret"),
                        "email": "h@x",
                    },
                }
            }
        )
    )
    code, header, _ = build(daemon, env, context)
    assert code == 0
    sent = json.loads(base64.urlsafe_b64decode(header))
    assert sent == {
        "localhost:5000": {"username": "u", "password": "p", "serveraddress": "localhost:5000"},
        "https://index.docker.io/v1/": {
            "username": "hub",
            "password": "secret",
            "email": "h@x",
            "serveraddress": "https://index.docker.io/v1/",
        },
    }
    assert backend.configs[-1].options.auth_configs == {
        "localhost:5000": AuthConfig(username="u", password="p", serveraddress="localhost:5000"),
        "https://index.docker.io/v1/": AuthConfig(
            username="hub", password="secret", email="h@x", serveraddress="https://index.docker.io/v1/"
        ),
    }

    (docker_config / "config.json").write_text("{not json")
    code, header, err = build(daemon, env, context)
    assert (code, header) == (0, "e30=") and err.startswith("WARNING: Error loading config file: ")


def docker_build_scratch(daemon, env: dict, tmp_path) -> subprocess.CompletedProcess:
    """`DOCKER_BUILDKIT=0 docker build -q` of a FROM scratch context, against `daemon`, in `env`."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")
    return subprocess.run(
        [DOCKER, "-H", daemon.host, "build", "-q", str(context)],
        capture_output=True,
        text=True,
        env=dict(os.environ, DOCKER_BUILDKIT="0", **env),
        timeout=300,
    )


@needs_docker_cli
def test_docker_cli_build_sends_its_logins_to_the_daemon(build_daemon, env, docker_config, tmp_path):
    daemon, backend = build_daemon
    docker_config.mkdir()
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {"127.0.0.1:5999": {"auth": basic_auth_entry(USERNAME, PASSWORD)}}})
    )
    result = docker_build_scratch(daemon, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert backend.configs[-1].options.auth_configs == {
        "127.0.0.1:5999": AuthConfig(username=USERNAME, password=PASSWORD, serveraddress="127.0.0.1:5999")
    }


def test_a_build_pulls_its_base_with_the_config_files_credentials(
    basic_registry, source, fresh, env, tmp_path
):
    """The whole path: config file -> X-Registry-Config -> the builder's pull of FROM, with dockerd's error
    when the credentials are missing."""
    name = f"{basic_registry.host}/private/base"
    image_id = tagged_image(source, f"{name}:v1")
    assert invoke(source, env, "login", "-u", USERNAME, "-p", PASSWORD, basic_registry.host)[0] == 0
    assert invoke(source, env, "push", "-q", f"{name}:v1")[0] == 0
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {name}:v1\n")

    code, out, err = invoke(fresh, {"HOME": str(tmp_path / "nobody")}, "build", str(context))
    assert code == 1
    assert (
        err
        == f'Head "http://{basic_registry.host}/v2/private/base/manifests/v1": no basic auth credentials\n'
    )

    code, out, err = invoke(fresh, env, "build", str(context))
    assert (code, err) == (0, "")
    assert f"Status: Downloaded newer image for {name}:v1\n" in out
    assert out.endswith(f"Successfully built {short(image_id)}\n")


# --- the daemon's registry flags ------------------------------------------------------------------------


def test_daemon_refuses_bad_registry_flags(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "minibuild", "daemon", "--data-root", str(tmp_path / "root"),
         "-H", f"unix://{tmp_path}/d.sock", "--registry-mirror", "ftp://mirror.example"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (
        1,
        'minibuild daemon: invalid mirror: unsupported scheme "ftp" in "ftp://mirror.example"\n',
    )
    assert not (tmp_path / "d.sock").exists()


def test_daemon_help_lists_the_registry_flags(fresh, env):
    code, out, _ = invoke(fresh, env, "daemon", "--help")
    assert code == 0
    assert "      --insecure-registry list" in out and "      --registry-mirror list" in out
