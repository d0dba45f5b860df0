"""The docker CLI's credentials file, ~/.docker/config.json (docker/cli cli/config/configfile/file.go).

```json
{"auths": {"https://index.docker.io/v1/": {"auth": "<base64 of user:password>"},
           "localhost:5000": {"auth": "...", "identitytoken": "..."}}}
```

The directory is `$DOCKER_CONFIG`, else `~/.docker`. Entries are keyed by server address (Docker Hub by
its legacy `https://index.docker.io/v1/`); a lookup by host name also finds legacy keys written as URLs.
Credential helpers (`credsStore`, `credHelpers`) are kept in the file but not run: minibuild reads and
writes only the `auths` entries.
"""

import base64
import binascii
import json
import os
import tempfile
from pathlib import Path

from minibuild.distribution.auth import AuthConfig, convert_to_hostname
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

    def get_auth_config(self, server_address: str) -> AuthConfig:
        """fileStore.Get: the entry for `server_address`, else one whose key is a URL of that host."""
        if server_address in self.auths:
            return self.auths[server_address]
        for key, auth in self.auths.items():
            if server_address == convert_to_hostname(key):
                return auth
        return AuthConfig()

    def get_all_credentials(self) -> dict[str, AuthConfig]:
        """Every stored credential by server: what `docker build` sends as X-Registry-Config."""
        return dict(self.auths)

    def store(self, auth: AuthConfig) -> None:
        """fileStore.Store (docker login): keep `auth` under its server address and save."""
        self.auths[auth.serveraddress] = auth
        self.save()

    def erase(self, server_address: str) -> None:
        """fileStore.Erase (docker logout)."""
        self.auths.pop(server_address, None)
        self.save()

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
