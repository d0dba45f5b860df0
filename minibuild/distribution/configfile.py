"""The docker CLI's credentials file, ~/.docker/config.json (docker/cli cli/config/configfile/file.go).

```json
{"auths": {"https://index.docker.io/v1/": {"auth": "<base64 of user:password>"},
           "localhost:5000": {"auth": "...", "identitytoken": "..."}}}
```

The directory is `$DOCKER_CONFIG`, else `~/.docker`. Entries are keyed by server address (Docker Hub by
its legacy `https://index.docker.io/v1/`); a lookup by host name also finds legacy keys written as URLs.
With `"credsStore": "<name>"` every credential lives in the helper program `docker-credential-<name>`
instead, and `"credHelpers": {"<registry>": "<name>"}` picks a helper per registry (credentials.py):
lookups, logins and logouts go through the store `get_credentials_store` picks, as the docker CLI's do.
"""

import base64
import binascii
import json
import os
import tempfile
from pathlib import Path

from minibuild.distribution.auth import AuthConfig
from minibuild.distribution.credentials import CredentialHelperError, FileStore, NativeStore, Store
from minibuild.distribution.errors import ConfigFileError

CONFIG_FILE_NAME = "config.json"


def config_dir() -> Path:
    """config.Dir(): `$DOCKER_CONFIG`, else `~/.docker`."""
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def encode_auth(auth: AuthConfig) -> str:
    """The `auth` field: base64 of `user:password`."""
    return base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()


def decode_auth(encoded: str) -> tuple[str, str]:
    """decodeAuth: `(user, password)` from the `auth` field."""
    if not encoded:
        return "", ""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as err:
        raise ConfigFileError(f"illegal base64 data in auth field: {err}") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise ConfigFileError("Invalid auth configuration file")
    return user, password.strip("\x00")


class ConfigFile:
    """A loaded config.json: its `auths`, and every other key kept untouched for saving."""

    def __init__(self, path: Path, data: dict | None = None) -> None:
        self.path = path
        self.data = dict(data or {})
        self.auths: dict[str, AuthConfig] = {}
        raw_auths = self.data.pop("auths", None)
        raw_auths = {} if raw_auths is None else raw_auths
        if not isinstance(raw_auths, dict):
            raise ConfigFileError(f"{path}: auths must be an object")
        for server, entry in raw_auths.items():
            if not isinstance(entry, dict):
                raise ConfigFileError(f"{path}: auths[{server!r}] must be an object")
            auth = AuthConfig.from_dict(entry)
            if auth.auth:
                try:
                    auth.username, auth.password = decode_auth(auth.auth)
                except ConfigFileError as err:
                    raise ConfigFileError(f"{path}: {err}") from None
                auth.auth = ""
            auth.serveraddress = server
            self.auths[server] = auth
        # Kept in `data` too, so a save writes them back untouched.
        self.credentials_store = self.data.get("credsStore") or ""
        self.credential_helpers = self.data.get("credHelpers") or {}
        if not isinstance(self.credentials_store, str):
            raise ConfigFileError(f"{path}: credsStore must be a string")
        if not isinstance(self.credential_helpers, dict) or not all(
            isinstance(v, str) for v in self.credential_helpers.values()
        ):
            raise ConfigFileError(f"{path}: credHelpers must map registries to helper names")

    @classmethod
    def load(cls, path: Path | None = None) -> "ConfigFile":
        """Read the file (a missing file is an empty config)."""
        path = path or config_dir() / CONFIG_FILE_NAME
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls(path)
        except OSError as err:
            raise ConfigFileError(f"{path}: {err.strerror}") from None
        if not text.strip():
            return cls(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigFileError(f"{path}: {err}") from None
        if not isinstance(data, dict):
            raise ConfigFileError(f"{path}: the configuration must be a JSON object")
        return cls(path, data)

    def get_credentials_store(self, server_address: str) -> Store:
        """GetCredentialsStore: the registry's credHelpers entry, else credsStore, else the file itself."""
        helper = self.credential_helpers.get(server_address) if server_address else None
        helper = helper or self.credentials_store
        return NativeStore(self, helper) if helper else FileStore(self)

    def get_auth_config(self, server_address: str) -> AuthConfig:
        """GetAuthConfig: the credentials for a registry; CredentialHelperError if its helper fails."""
        return self.get_credentials_store(server_address).get(server_address)

    def get_all_credentials(self) -> dict[str, AuthConfig]:
        """GetAllCredentials (what `docker build` sends as X-Registry-Config): the default store's
        credentials (the file's, or all a credsStore lists), each credHelpers registry's overriding them.

        A failing default store fails the whole; a failing credHelpers entry is left out, as the CLI does.
        """
        auths = self.get_credentials_store("").get_all()
        for registry in self.credential_helpers:
            try:
                auths[registry] = self.get_auth_config(registry)
            except CredentialHelperError:
                continue
        return auths

    def store(self, auth: AuthConfig) -> None:
        """Store (docker login): in the server's credential store."""
        self.get_credentials_store(auth.serveraddress).store(auth)

    def erase(self, server_address: str) -> None:
        """Erase (docker logout): from the server's credential store."""
        self.get_credentials_store(server_address).erase(server_address)

    def save(self) -> None:
        """Write atomically (temp file + rename), mode 0600, tab-indented as the docker CLI writes it."""
        entries = {}
        for server, auth in self.auths.items():
            entry = {"auth": encode_auth(auth)} if auth.username or auth.password else {}
            if auth.email:
                entry["email"] = auth.email
            if auth.identitytoken:
                entry["identitytoken"] = auth.identitytoken
            entries[server] = entry
        text = json.dumps({"auths": entries, **self.data}, indent="\t")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
