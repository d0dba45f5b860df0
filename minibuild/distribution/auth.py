"""Registry credentials and how requests get authorized (moby registry/auth.go and api/types AuthConfig;
docker/distribution registry/client/auth: challenge/authchallenge.go and session.go).

Credentials travel from clients as base64url JSON: one `AuthConfig` in `X-Registry-Auth` (pull, push),
a map registry -> AuthConfig in `X-Registry-Config` (build). Both are decoded leniently, as dockerd does:
anything undecodable means "no credentials". `resolve_auth_config` picks the entry for a registry with
Docker's rules (Docker Hub under `https://index.docker.io/v1/`, legacy URL keys matched by host name).

A registry says how it wants to be authorized in the `WWW-Authenticate` challenge of its `/v2/` answer.
`Authorizer.authorize` follows it on every request: Basic sends the credentials (or fails with "no basic
auth credentials" before sending anything), Bearer fetches a token from the challenge's realm for the
repository scope (GET with Basic credentials, or an OAuth2 POST when an identity token is known) and
caches it until it expires.
"""

import asyncio
import base64
import binascii
import json
import ssl as ssl_module
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import aiohttp

from minibuild import gojson
from minibuild.api import jsondecode
from minibuild.distribution.config import INDEX_SERVER, IndexInfo, proxy_for
from minibuild.distribution.errors import (
    NoBasicAuthCredentials,
    NoToken,
    RegistryError,
    URLError,
    handle_error_response,
)

AUTH_CLIENT_ID = "docker"  # AuthClientID: the client_id the daemon presents to token servers
MINIMUM_TOKEN_LIFETIME = 60  # seconds (minimumTokenLifetimeSeconds)


@dataclass
class AuthConfig:
    """types.AuthConfig: what a client passes for one registry."""

    username: str = ""
    password: str = ""
    auth: str = ""
    email: str = ""
    serveraddress: str = ""
    identitytoken: str = ""  # an OAuth2 refresh token from a previous login
    registrytoken: str = ""  # a bearer token to send as is

    @classmethod
    def from_dict(cls, data: object) -> "AuthConfig":
        """From decoded JSON; Go's decoder fails on a non-object or a non-string field."""
        if not isinstance(data, dict):
            raise ValueError("auth config must be a JSON object")
        fields = {}
        for name in cls.__dataclass_fields__:
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"auth config field {name} must be a string")
            fields[name] = value or ""
        return cls(**fields)

    def to_dict(self) -> dict[str, str]:
        """The wire form: Go's field order, empty fields omitted."""
        return {k: v for k, v in asdict(self).items() if v}


def encode_auth_config(auth: AuthConfig) -> str:
    """X-Registry-Auth as the docker CLI sends it (EncodeAuthToBase64): base64url of json.Marshal's bytes."""
    return base64.urlsafe_b64encode(gojson.dumpb(auth.to_dict())).decode()


_AUTH_CONFIG = jsondecode.struct(
    "types.AuthConfig", **{name: jsondecode.STRING for name in AuthConfig.__dataclass_fields__}
)
_AUTH_CONFIGS = jsondecode.map_of(_AUTH_CONFIG)


def _auth_config_of(fields: dict) -> AuthConfig:
    """An AuthConfig from decoded struct fields; fields Go could not fill stay empty."""
    return AuthConfig(**{k: v for k, v in fields.items() if isinstance(v, str)})


_URL_TO_STD = str.maketrans("-_", "+/")


def _base64url_decode(header: str) -> bytes | None:
    """base64.URLEncoding as Go reads it: URL-safe alphabet, padded; None when it is not that."""
    if "+" in header or "/" in header:
        return None
    try:
        return base64.b64decode(header.translate(_URL_TO_STD), validate=True)
    except (binascii.Error, ValueError):
        return None


def first_json_value(data: bytes | str) -> str:
    """The JSON text json.NewDecoder(r).Decode reads: the first value; what follows it is never read.

    Raises GoJSONError with the decoder's wording: `EOF` for no value, `unexpected EOF` for a cut one.
    """
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    text = text.lstrip(" \t\r\n")
    if not text:
        raise jsondecode.GoJSONError("EOF")
    try:
        _, end = json.JSONDecoder().raw_decode(text)
    except (json.JSONDecodeError, RecursionError):
        end = len(text)
    try:
        jsondecode.unmarshal(text[:end], jsondecode.map_of(jsondecode.STRING))  # syntax errors only
    except jsondecode.GoJSONError as err:
        if str(err) == "unexpected end of JSON input":
            raise jsondecode.GoJSONError("unexpected EOF") from None
        if not str(err).startswith("json: "):
            raise
    return text[:end]


def decode_auth_config_body(body: bytes) -> AuthConfig | None:
    """A JSON body as dockerd decodes it into an AuthConfig (POST /auth, the old POST /images/…/push).

    None for a JSON `null`; GoJSONError with Go's message for anything else that is not an AuthConfig.
    """
    value = jsondecode.unmarshal(first_json_value(body), jsondecode.ptr_to(_AUTH_CONFIG))
    return None if value is None else _auth_config_of(value)


def decode_auth_config(header: str | None) -> AuthConfig:
    """X-Registry-Auth: undecodable or absent means anonymous (postImagesCreate/postImagesPush)."""
    raw = _base64url_decode(header or "")
    if not raw:
        return AuthConfig()
    try:
        return decode_auth_config_body(raw) or AuthConfig()
    except jsondecode.GoJSONError:
        return AuthConfig()  # Go replaces a config it could not decode by an empty one


def decode_auth_configs(header: str | None) -> dict[str, AuthConfig]:
    """X-Registry-Config (getAuthConfigs): registry -> AuthConfig, decoded as Go decodes it.

    Errors are ignored, as dockerd ignores them: bad base64 or bad JSON gives no credentials. A value of
    the wrong type keeps what Go filled before reporting it: a non-string field stays empty, and an entry
    that is not an object (or is null) is still in the map, as an empty AuthConfig.
    """
    raw = _base64url_decode(header or "")
    if not raw:
        return {}
    try:
        decoded = jsondecode.decode_partial(first_json_value(raw), _AUTH_CONFIGS)
    except jsondecode.GoJSONError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {registry: _auth_config_of(fields or {}) for registry, fields in decoded.items()}


def convert_to_hostname(url: str) -> str:
    """ConvertToHostname: `https://host:port/v1/` -> `host:port`."""
    stripped = url.removeprefix("http://") if url.startswith("http://") else url.removeprefix("https://")
    return stripped.split("/", 1)[0]


def get_auth_config_key(index: IndexInfo) -> str:
    """GetAuthConfigKey: Docker Hub's credentials live under its legacy v1 URL."""
    return INDEX_SERVER if index.official else index.name


def resolve_auth_config(auth_configs: dict[str, AuthConfig], index: IndexInfo) -> AuthConfig:
    """ResolveAuthConfig: exact key first (the only option for Docker Hub), then legacy URL keys by host."""
    key = get_auth_config_key(index)
    if key in auth_configs or index.official:
        return auth_configs.get(key, AuthConfig())
    for registry, auth in auth_configs.items():
        if key == convert_to_hostname(registry):
            return auth
    return AuthConfig()


# --- WWW-Authenticate challenges (challenge/authchallenge.go) ---------------------------------------------

_SEPARATORS = set('()<>@,;:\\"/[]?={} \t')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-cased: "basic", "bearer"
    parameters: dict[str, str]


def _expect_token(s: str) -> tuple[str, str]:
    i = 0
    while i < len(s) and 32 < ord(s[i]) < 127 and s[i] not in _SEPARATORS:
        i += 1
    return s[:i], s[i:]


def _expect_token_or_quoted(s: str) -> tuple[str, str]:
    if not s.startswith('"'):
        return _expect_token(s)
    out, i = [], 1
    while i < len(s):
        ch = s[i]
        if ch == '"':
            return "".join(out), s[i + 1 :]
        if ch == "\\" and i + 1 < len(s):
            i += 1
            ch = s[i]
        out.append(ch)
        i += 1
    return "", ""  # unterminated quote


def parse_challenge(header: str) -> Challenge | None:
    """One WWW-Authenticate value: `Bearer realm="…",service="…",scope="…"`."""
    scheme, rest = _expect_token(header)
    if not scheme:
        return None
    params: dict[str, str] = {}
    rest = "," + rest.lstrip(" \t")
    while rest.startswith(","):
        key, rest = _expect_token(rest[1:].lstrip(" \t"))
        if not key or not rest.startswith("="):
            break
        value, rest = _expect_token_or_quoted(rest[1:])
        if not value:
            break
        params[key.lower()] = value
        rest = rest.lstrip(" \t")
    return Challenge(scheme.lower(), params)


def response_challenges(status: int, header_values: list[str]) -> list[Challenge]:
    """ResponseChallenges: the challenges of a 401 answer (one per header line)."""
    if status != 401:
        return []
    return [c for c in map(parse_challenge, header_values) if c is not None]


def _ping_key(url: str) -> str:
    """The challenge manager's key for a URL: scheme://host:port/v2/ (default ports made explicit)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}/v2/"


class ChallengeManager:
    """challenge.SimpleManager: what each registry endpoint asked for when pinged."""

    def __init__(self) -> None:
        self._challenges: dict[str, list[Challenge]] = {}

    def add_response(self, url: str, status: int, header_values: list[str]) -> None:
        self._challenges[_ping_key(url)] = response_challenges(status, header_values)

    def get_challenges(self, url: str) -> list[Challenge]:
        return self._challenges.get(_ping_key(url), [])


def basic_authorization(username: str, password: str) -> str:
    """The Authorization header value of HTTP Basic auth."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# --- handlers ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepositoryScope:
    """auth.RepositoryScope: `repository:library/busybox:pull` (`repository(plugin):…` with a class)."""

    repository: str
    actions: tuple[str, ...]
    klass: str = ""

    def __str__(self) -> str:
        kind = f"repository({self.klass})" if self.klass else "repository"
        return f"{kind}:{self.repository}:{','.join(self.actions)}"


class TokenHandler:
    """tokenHandler: fetches, caches and refreshes a bearer token for fixed scopes."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        auth: AuthConfig,
        scopes: list[RepositoryScope],
        offline_access: bool = False,
        ssl: "ssl_module.SSLContext | bool" = True,
    ) -> None:
        self.session = session
        self.ssl = ssl  # the endpoint's TLS configuration: the token server is reached as the registry is
        self.auth = auth
        self.scopes = [str(s) for s in scopes]
        self.offline_access = offline_access  # login asks for a refresh token to keep as identity token
        self.refresh_token = ""
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def authorize(self, headers: dict[str, str], params: dict[str, str]) -> None:
        async with self._lock:  # concurrent downloads wait for one token instead of each fetching one
            if time.monotonic() >= self._expires:
                self._token, lifetime = await self._fetch_token(params)
                self._expires = time.monotonic() + lifetime
        headers["Authorization"] = f"Bearer {self._token}"

    async def _fetch_token(self, params: dict[str, str]) -> tuple[str, float]:
        realm = params.get("realm")
        if not realm:
            raise RegistryError("no realm specified for token auth challenge")
        if urlsplit(realm).scheme not in ("http", "https"):
            raise RegistryError(f"invalid token auth challenge realm: {realm}")
        service = params.get("service", "")
        if self.auth.identitytoken:
            return await self._fetch_with_oauth(realm, service)
        return await self._fetch_with_basic_auth(realm, service)

    async def _fetch_with_basic_auth(self, realm: str, service: str) -> tuple[str, float]:
        query = [("service", service)] if service else []
        query += [("scope", s) for s in self.scopes]
        if self.offline_access:
            query += [("offline_token", "true"), ("client_id", AUTH_CLIENT_ID)]
        headers = {}
        if self.auth.username and self.auth.password:
            query.append(("account", self.auth.username))
            headers["Authorization"] = basic_authorization(self.auth.username, self.auth.password)
        doc = await self._token_request("GET", realm, params=query, headers=headers)
        token = doc.get("access_token") or doc.get("token")
        if not token:
            raise NoToken()
        return str(token), _token_lifetime(doc)

    async def _fetch_with_oauth(self, realm: str, service: str) -> tuple[str, float]:
        form = {
            "scope": " ".join(self.scopes),
            "service": service,
            "client_id": AUTH_CLIENT_ID,
            "grant_type": "refresh_token",
            "refresh_token": self.auth.identitytoken,
        }
        doc = await self._token_request("POST", realm, data=form)
        token = doc.get("access_token")
        if not token:
            raise NoToken()
        return str(token), _token_lifetime(doc)

    async def _token_request(self, method: str, realm: str, **kwargs: object) -> dict:
        """One request to the token server; its JSON answer (a refresh token in it is kept)."""
        try:
            async with self.session.request(
                method, realm, proxy=proxy_for(realm), ssl=self.ssl, **kwargs
            ) as resp:
                body = await resp.read()
                if not 200 <= resp.status < 300:
                    challenges = response_challenges(resp.status, resp.headers.getall("WWW-Authenticate", []))
                    raise handle_error_response(resp.status, resp.reason or "", challenges, body)
        except aiohttp.ClientError as err:
            raise URLError(method, realm, err) from None
        try:
            doc = json.loads(body)
        except ValueError as err:
            raise RegistryError(f"unable to decode token response: {err}") from None
        if not isinstance(doc, dict):
            raise RegistryError("unable to decode token response: not a JSON object")
        if isinstance(doc.get("refresh_token"), str):
            self.refresh_token = doc["refresh_token"]
        return doc


def _token_lifetime(doc: dict) -> float:
    """expires_in, at least a minute (issued_at is ignored: local monotonic time is what we can trust)."""
    expires_in = doc.get("expires_in")
    return float(max(expires_in if isinstance(expires_in, int) else 0, MINIMUM_TOKEN_LIFETIME))


class Authorizer:
    """endpointAuthorizer: applies the handler matching each challenge of the endpoint to a request."""

    def __init__(self, challenges: ChallengeManager, auth: AuthConfig, token_handler: TokenHandler) -> None:
        self.challenges = challenges
        self.auth = auth
        self.token_handler = token_handler

    async def authorize(self, url: str, headers: dict[str, str]) -> None:
        """Add the Authorization header `url` needs; errors are the caller's to wrap as Go's url.Error."""
        if "/v2/" not in urlsplit(url).path:
            return
        if self.auth.registrytoken:  # a bearer token handed over by the client is used as is
            headers["Authorization"] = f"Bearer {self.auth.registrytoken}"
            return
        for challenge in self.challenges.get_challenges(url):
            if challenge.scheme == "bearer":
                await self.token_handler.authorize(headers, challenge.parameters)
            elif challenge.scheme == "basic":
                if not (self.auth.username and self.auth.password):
                    raise NoBasicAuthCredentials()
                headers["Authorization"] = basic_authorization(self.auth.username, self.auth.password)
