"""Registry commands: pull, push, login, logout (docker cli/command/image/pull.go, push.go, trust.go;
cli/command/registry/login.go, logout.go; cli/command/registry.go).

Credentials live in the docker CLI's config file (`$DOCKER_CONFIG/config.json`, else
`~/.docker/config.json`), in its format, so `docker login` and `minibuild login` share them. `pull`
and `push` send the entry for the image's registry (Docker Hub's under `https://index.docker.io/v1/`)
as `X-Registry-Auth`; `login` asks the daemon to check credentials (`POST /auth`) before storing them.
A credential helper configured in the file (`credsStore`, `credHelpers`) is asked instead of the file,
and `login`/`logout` store and erase through it; its failures are reported in its own words.
Output and messages are the docker CLI's (28.x); content trust is not implemented (the CLI's default,
`DOCKER_CONTENT_TRUST` unset, is what minibuild always does).
"""

import argparse
import io
import termios
from typing import Any

from minibuild.api.jsonmessage import display_json_messages_to_stream
from minibuild.cli.command import Command, Flag, StatusError
from minibuild.client.client import APIError
from minibuild.distribution.auth import (
    AuthConfig,
    convert_to_hostname,
    encode_auth_config,
    get_auth_config_key,
)
from minibuild.distribution.config import INDEX_SERVER, ServiceConfig, new_index_info
from minibuild.distribution.configfile import ConfigFile
from minibuild.distribution.credentials import CredentialHelperError, FileStore
from minibuild.image import reference
from minibuild.image.reference import familiar_string

DEFAULT_NAMESPACE = "docker.io"
REGISTER_SUGGEST = (
    "Log in with your Docker ID or email address to push and pull images from Docker Hub. "
    "If you don't have a Docker ID, head over to https://hub.docker.com/ to create one."
)
UNENCRYPTED_WARNING = (
    "\nWARNING! Your credentials are stored unencrypted in '{}'.\n"
    "Configure a credential helper to remove this warning. See\n"
    "https://docs.docker.com/go/credential-store/\n"
)


def _named(remote: str, all_tags: bool, quiet: bool, cli: Any) -> reference.Reference:
    """The reference a pull or push names: a tag is needed unless -a, and -a takes none."""
    try:
        ref = reference.parse_normalized_named(remote)
    except reference.InvalidReference as err:
        raise StatusError(str(err), 1)
    if all_tags and not reference.is_name_only(ref):
        raise StatusError("tag can't be used with --all-tags/-a", 1)
    if not all_tags and reference.is_name_only(ref):
        ref = reference.tag_name_only(ref)
        if not quiet:
            cli.stdout.write(f"Using default tag: {ref.tag}\n")
    return ref


def encoded_auth_for(cli: Any, ref: reference.Reference) -> str:
    """ResolveAuthConfig + EncodeAuthToBase64: the config file's entry for the image's registry."""
    key = get_auth_config_key(new_index_info(ServiceConfig(), ref.domain))
    try:
        return encode_auth_config(cli.config_file().get_auth_config(key))
    except CredentialHelperError as err:  # RetrieveAuthTokenFromImage's error ends the command
        raise StatusError(str(err), 1)


# --- pull, push ------------------------------------------------------------------------------------------


def run_pull(ns: argparse.Namespace, cli: Any) -> int:
    ref = _named(ns.args[0], ns.all_tags, ns.quiet, cli)
    platform = ns.platform or cli.env.get("DOCKER_DEFAULT_PLATFORM", "")
    with cli.client().image_pull(
        familiar_string(ref),
        all_tags=ns.all_tags,
        platform=platform,
        registry_auth=encoded_auth_for(cli, ref),
    ) as resp:
        display_json_messages_to_stream(resp.messages(), io.StringIO() if ns.quiet else cli.stdout)
    cli.stdout.write(f"{ref}\n")
    return 0


PULL = Command(
    "pull",
    "[OPTIONS] NAME[:TAG|@DIGEST]",
    "Download an image from a registry",
    run_pull,
    [
        Flag(("-a", "--all-tags"), "Download all tagged images in the repository"),
        Flag(("--platform",), "Set platform if server is multi-platform capable", "string"),
        Flag(("-q", "--quiet"), "Suppress verbose output"),
    ],
    args=(1, 1),
)


def run_push(ns: argparse.Namespace, cli: Any) -> int:
    ref = _named(ns.args[0], ns.all_tags, ns.quiet, cli)
    with cli.client().image_push(
        familiar_string(ref), all_tags=ns.all_tags, registry_auth=encoded_auth_for(cli, ref)
    ) as resp:
        display_json_messages_to_stream(resp.messages(), io.StringIO() if ns.quiet else cli.stdout)
    if ns.quiet:
        cli.stdout.write(f"{ref}\n")
    return 0


PUSH = Command(
    "push",
    "[OPTIONS] NAME[:TAG]",
    "Upload an image to a registry",
    run_push,
    [
        Flag(("-a", "--all-tags"), "Push all tags of an image to the repository"),
        Flag(("-q", "--quiet"), "Suppress verbose output"),
    ],
    args=(1, 1),
)


# --- login, logout ---------------------------------------------------------------------------------------


def _read_input(cli: Any, message: str, *, secret: bool = False) -> str:
    """prompt.ReadInput: print the prompt, read a line (without echo for a password), trimmed."""
    cli.stdout.write(message)
    cli.stdout.flush()
    stdin = cli.stdin
    restore = None
    if secret:
        fd = stdin.fileno()
        restore = termios.tcgetattr(fd)
        quiet = termios.tcgetattr(fd)
        quiet[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        line = stdin.readline()
    finally:
        if restore is not None:
            termios.tcsetattr(stdin.fileno(), termios.TCSANOW, restore)
    return (line.decode() if isinstance(line, bytes) else line).strip()


def prompt_user_for_credentials(
    cli: Any, user: str, password: str, default_username: str, server_address: str
) -> AuthConfig:
    """PromptUserForCredentials: ask for what the flags did not give; both are trimmed."""
    user = user.strip()
    if not user:
        if server_address == INDEX_SERVER:
            cli.stdout.write(REGISTER_SUGGEST + "\n")
        default_username = default_username.strip()
        prompt = f"Username ({default_username}): " if default_username else "Username: "
        user = _read_input(cli, prompt) or default_username
        if not user:
            raise StatusError("Error: Non-null Username Required", 1)
    password = password.strip()
    if not password:
        password = _read_input(cli, "Password: ", secret=True)
        cli.stdout.write("\n")
        if not password:
            raise StatusError("Error: Password Required", 1)
    return AuthConfig(username=user, password=password, serveraddress=server_address)


def store_credentials(cli: Any, config: ConfigFile, auth: AuthConfig) -> None:
    """storeCredentials: into the server's credential store. The file saves unless unchanged and warns
    that a password is kept unencrypted; a helper keeps the secret and the file an empty entry."""
    store = config.get_credentials_store(auth.serveraddress)
    in_file = isinstance(store, FileStore)
    if in_file and config.auths.get(auth.serveraddress) == auth:
        return
    try:
        store.store(auth)
    except (OSError, CredentialHelperError) as err:
        raise StatusError(f"Error saving credentials: {err}", 1)
    if in_file and auth.password:
        cli.stderr.write(UNENCRYPTED_WARNING.format(config.path) + "\n")


def _login_with_stored_credentials(cli: Any, config: ConfigFile, auth: AuthConfig) -> str | None:
    """loginWithStoredCredentials: the daemon's status, or None (and a note why) if they failed."""
    cli.stderr.write(f"Authenticating with existing credentials... [Username: {auth.username}]\n")
    cli.stderr.write(
        "\n Info -> To login with a different account, run 'docker logout' followed by 'docker login'\n\n\n"
    )
    try:
        response = cli.client().registry_login(auth)
    except APIError as err:
        if err.status_code == 401:
            cli.stderr.write("Stored credentials invalid or expired\n")
        else:
            cli.stderr.write(f"Login did not succeed, error: {err}\n")
        return None
    _keep_identity_token(auth, response)
    store_credentials(cli, config, auth)
    return str(response.get("Status") or "")


def _keep_identity_token(auth: AuthConfig, response: dict) -> None:
    """A registry that hands out an identity token gets that stored instead of the password."""
    if response.get("IdentityToken"):
        auth.password = ""
        auth.identitytoken = str(response["IdentityToken"])


def run_login(ns: argparse.Namespace, cli: Any) -> int:
    if ns.password and ns.password_stdin:
        raise StatusError("conflicting options: cannot specify both --password and --password-stdin", 1)
    if ns.password_stdin and not ns.username:
        raise StatusError("the --password-stdin option requires --username to be set", 1)
    password = ns.password
    if password:
        cli.stderr.write("WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n")
    if ns.password_stdin:
        raw = cli.stdin.buffer.read() if hasattr(cli.stdin, "buffer") else cli.stdin.read()
        text = raw.decode() if isinstance(raw, bytes) else raw
        password = text.removesuffix("\n").removesuffix("\r")

    server = ns.args[0] if ns.args and ns.args[0] != DEFAULT_NAMESPACE else INDEX_SERVER
    if server != INDEX_SERVER:
        server = convert_to_hostname(server)  # credentials are kept under host[:port]
    config = cli.config_file()
    stored = AuthConfig(serveraddress=server)
    if not ns.username and not password:
        try:
            found = config.get_auth_config(server)
        except CredentialHelperError:  # GetDefaultAuthConfig failed: the user is prompted instead
            found = AuthConfig()
        stored = AuthConfig(found.username, found.password, email=found.email, serveraddress=server)

    status = None
    if stored.username and stored.password:
        status = _login_with_stored_credentials(cli, config, stored)
    if status is None:
        # Docker Hub without -u now logs in through a browser; offline, minibuild always prompts.
        if (not ns.username or not password) and not cli.stdin.isatty():
            raise StatusError("Error: Cannot perform an interactive login from a non TTY device", 1)
        auth = prompt_user_for_credentials(cli, ns.username, password, stored.username, server)
        response = cli.client().registry_login(auth)
        _keep_identity_token(auth, response)
        store_credentials(cli, config, auth)
        status = str(response.get("Status") or "")
    if status:
        cli.stdout.write(status + "\n")
    return 0


LOGIN = Command(
    "login",
    "[OPTIONS] [SERVER]",
    "Authenticate to a registry (Docker Hub when no server is given)",
    run_login,
    [
        Flag(("-p", "--password"), "Password or Personal Access Token (PAT)", "string"),
        Flag(("--password-stdin",), "Take the Password or Personal Access Token (PAT) from stdin"),
        Flag(("-u", "--username"), "Username", "string"),
    ],
    args=(0, 1),
)


def run_logout(ns: argparse.Namespace, cli: Any) -> int:
    server = ns.args[0] if ns.args else INDEX_SERVER
    hostname = server
    registries = [server]
    if ns.args:
        hostname = convert_to_hostname(server)
        # Older clients stored some registries under a URL: those keys go too.
        registries += [hostname, f"http://{hostname}", f"https://{hostname}"]
    cli.stdout.write(f"Removing login credentials for {hostname}\n")
    config = cli.config_file()
    errors: dict[str, Exception] = {}
    for key in registries:
        try:
            config.erase(key)
        except (OSError, CredentialHelperError) as err:
            errors[key] = err
    if len(errors) == len(registries):
        cli.stderr.write("WARNING: could not erase credentials:\n")
        cli.stderr.write("".join(f"{key}: {err}\n" for key, err in errors.items()))
    return 0


LOGOUT = Command(
    "logout",
    "[SERVER]",
    "Log out from a registry (Docker Hub when no server is given)",
    run_logout,
    args=(0, 1),
)
