"""Credential stores of the docker CLI: the config file, or a helper program (docker/cli
cli/config/credentials/file_store.go, native_store.go; docker-credential-helpers client/client.go).

`credsStore: "pass"` in config.json hands every credential to `docker-credential-pass`, and
`credHelpers: {"registry.example.com": "ecr-login"}` one registry's to `docker-credential-ecr-login`.
A helper is a program found on `$PATH`, run once per operation with one argument:

    get     stdin: the server URL        stdout: {"ServerURL": …, "Username": …, "Secret": …}
    store   stdin: that JSON             stdout: nothing
    erase   stdin: the server URL        stdout: nothing
    list    stdin: "unused"              stdout: {"<server URL>": "<username>", …}

A failing helper exits non-zero with its message on stdout; `credentials not found in native keychain`
means "nothing stored" and is no error. A Username of `<token>` marks the Secret as an identity token.
Only the email stays in the file (an entry `{}` under the server's key), as the docker CLI keeps it.
"""

import shutil
import subprocess
from typing import TYPE_CHECKING, Protocol

from minibuild import gojson
from minibuild.api import jsondecode
from minibuild.distribution.auth import AuthConfig, convert_to_hostname, first_json_value
from minibuild.distribution.errors import ConfigFileError

if TYPE_CHECKING:
    from minibuild.distribution.configfile import ConfigFile

REMOTE_CREDENTIALS_PREFIX = "docker-credential-"
TOKEN_USERNAME = "<token>"  # a helper's Username meaning "the Secret is an identity token"
ERR_CREDENTIALS_NOT_FOUND = "credentials not found in native keychain"
ERR_MISSING_SERVER_URL = "no credentials server URL"
ERR_MISSING_USERNAME = "no credentials username"
HELPER_TIMEOUT = 300  # seconds; a helper may wait on a keychain prompt, but not forever

_CREDENTIALS = jsondecode.struct(
    "credentials.Credentials",
    ServerURL=jsondecode.STRING,
    Username=jsondecode.STRING,
    Secret=jsondecode.STRING,
)
_LISTING = jsondecode.map_of(jsondecode.STRING)


class CredentialHelperError(ConfigFileError):
    """A helper that failed, with docker-credential-helpers' wording (`error getting credentials - …`)."""


class Store(Protocol):
    """credentials.Store."""

    def get(self, server_address: str) -> AuthConfig: ...

    def get_all(self) -> dict[str, AuthConfig]: ...

    def store(self, auth: AuthConfig) -> None: ...

    def erase(self, server_address: str) -> None: ...


class FileStore:
    """fileStore: the `auths` of config.json."""

    def __init__(self, config: "ConfigFile") -> None:
        self.config = config

    def get(self, server_address: str) -> AuthConfig:
        """The entry for `server_address`, else one whose key is a URL of that host."""
        auths = self.config.auths
        if server_address in auths:
            return auths[server_address]
        for key, auth in auths.items():
            if server_address == convert_to_hostname(key):
                return auth
        return AuthConfig()

    def get_all(self) -> dict[str, AuthConfig]:
        return dict(self.config.auths)

    def store(self, auth: AuthConfig) -> None:
        self.config.auths[auth.serveraddress] = auth
        self.config.save()

    def erase(self, server_address: str) -> None:
        self.config.auths.pop(server_address, None)
        self.config.save()


# --- the helper protocol (docker-credential-helpers client) -----------------------------------------------


class _ProgramFailed(Exception):
    """The helper could not run or exited non-zero: Go's exec error text and the trimmed stdout."""

    def __init__(self, err: str, out: str) -> None:
        super().__init__(err)
        self.err, self.out = err, out


def run_helper(name: str, action: str, data: bytes) -> bytes:
    """Run `docker-credential-<name> <action>` with `data` on stdin; its stdout.

    The helper inherits the environment and stderr, as the docker CLI runs it (exec.Command).
    """
    program = REMOTE_CREDENTIALS_PREFIX + name
    path = shutil.which(program)
    if path is None:
        raise _ProgramFailed(f'exec: "{program}": executable file not found in $PATH', "")
    try:
        proc = subprocess.run([path, action], input=data, stdout=subprocess.PIPE, timeout=HELPER_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        raise _ProgramFailed("signal: killed", (err.stdout or b"").decode(errors="replace").strip()) from None
    except OSError as err:
        raise _ProgramFailed(f"fork/exec {path}: {(err.strerror or str(err)).lower()}", "") from None
    if proc.returncode != 0:
        status = f"signal: {_signal_name(-proc.returncode)}" if proc.returncode < 0 else None
        out = proc.stdout.decode(errors="replace").strip()
        raise _ProgramFailed(status or f"exit status {proc.returncode}", out)
    return proc.stdout


def _signal_name(number: int) -> str:
    """Go's names for the signals a helper may die of (ProcessState.String)."""
    return {9: "killed", 15: "terminated", 2: "interrupt", 6: "aborted", 11: "segmentation fault"}.get(
        number, f"signal {number}"
    )


def _check_message(out: str) -> None:
    """isValidCredsMessage: the helper's own errors for bad input are returned as they are."""
    if out in (ERR_MISSING_SERVER_URL, ERR_MISSING_USERNAME):
        raise CredentialHelperError(out)


def helper_get(name: str, server_url: str) -> dict[str, str] | None:
    """client.Get: {"ServerURL", "Username", "Secret"}, or None when the helper has nothing stored."""
    try:
        out = run_helper(name, "get", server_url.encode())
    except _ProgramFailed as failed:
        _check_message(failed.out)
        if failed.out == ERR_CREDENTIALS_NOT_FOUND:
            return None
        raise CredentialHelperError(
            f"error getting credentials - err: {failed.err}, out: `{failed.out}`"
        ) from None
    try:
        fields = jsondecode.unmarshal(first_json_value(out), _CREDENTIALS) or {}
    except jsondecode.GoJSONError as err:
        raise CredentialHelperError(str(err)) from None
    return {"ServerURL": server_url, "Username": "", "Secret": "", **fields}


def helper_store(name: str, server_url: str, username: str, secret: str) -> None:
    """client.Store: the credentials as json.Encoder writes them (HTML-escaped, newline-terminated)."""
    body = gojson.dumpb({"ServerURL": server_url, "Username": username, "Secret": secret}) + b"\n"
    try:
        run_helper(name, "store", body)
    except _ProgramFailed as failed:
        _check_message(failed.out)
        raise CredentialHelperError(
            f"error storing credentials - err: {failed.err}, out: `{failed.out}`"
        ) from None


def helper_erase(name: str, server_url: str) -> None:
    """client.Erase."""
    try:
        run_helper(name, "erase", server_url.encode())
    except _ProgramFailed as failed:
        _check_message(failed.out)
        raise CredentialHelperError(
            f"error erasing credentials - err: {failed.err}, out: `{failed.out}`"
        ) from None


def helper_list(name: str) -> dict[str, str]:
    """client.List: server URL -> username of everything the helper holds."""
    try:
        out = run_helper(name, "list", b"unused")
    except _ProgramFailed as failed:
        _check_message(failed.out)
        raise CredentialHelperError(
            f"error listing credentials - err: {failed.err}, out: `{failed.out}`"
        ) from None
    try:
        return jsondecode.unmarshal(first_json_value(out), _LISTING) or {}
    except jsondecode.GoJSONError as err:
        raise CredentialHelperError(str(err)) from None


class NativeStore:
    """nativeStore: credentials in a helper, emails in the file."""

    def __init__(self, config: "ConfigFile", helper: str) -> None:
        self.helper = helper
        self.file_store = FileStore(config)

    def get(self, server_address: str) -> AuthConfig:
        auth = _copy(self.file_store.get(server_address))  # the file keeps only the email
        creds = self._get_from_helper(server_address)
        auth.username, auth.password = creds.username, creds.password
        auth.identitytoken, auth.serveraddress = creds.identitytoken, creds.serveraddress
        return auth

    def get_all(self) -> dict[str, AuthConfig]:
        """Every registry the helper lists, each asked for its secret (one failure fails them all)."""
        listed = helper_list(self.helper)
        file_configs = self.file_store.get_all()
        result = {}
        for registry in listed:
            creds = self._get_from_helper(registry)
            auth = _copy(file_configs.get(registry, AuthConfig()))
            auth.username, auth.password = creds.username, creds.password
            auth.identitytoken = creds.identitytoken
            auth.serveraddress = auth.serveraddress or creds.serveraddress
            result[registry] = auth
        return result

    def store(self, auth: AuthConfig) -> None:
        """The secret (or identity token) to the helper, then an entry without it to the file."""
        username, secret = auth.username, auth.password
        if auth.identitytoken:
            username, secret = TOKEN_USERNAME, auth.identitytoken
        helper_store(self.helper, auth.serveraddress, username, secret)
        kept = _copy(auth)
        kept.username = kept.password = kept.identitytoken = ""
        self.file_store.store(kept)

    def erase(self, server_address: str) -> None:
        helper_erase(self.helper, server_address)
        self.file_store.erase(server_address)

    def _get_from_helper(self, server_address: str) -> AuthConfig:
        """getCredentialsFromStore: nothing stored is no error, just empty credentials."""
        creds = helper_get(self.helper, server_address)
        if creds is None:
            return AuthConfig()
        if creds["Username"] == TOKEN_USERNAME:
            return AuthConfig(identitytoken=creds["Secret"], serveraddress=server_address)
        return AuthConfig(creds["Username"], creds["Secret"], serveraddress=server_address)


def _copy(auth: AuthConfig) -> AuthConfig:
    return AuthConfig(**vars(auth))
