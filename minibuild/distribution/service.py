"""The daemon's registry service: pull, push and login with its options and state (moby registry/service.go
DefaultService, registry/auth.go loginV2, daemon/images/image_pull.go and image_push.go).

One `RegistryService` lives beside the image service under the data root:

    <root>/metadata/   which registry blobs hold which layers (metadata.py)
    <root>/tmp/        downloads and compressed uploads in flight; emptied when the service starts,
                       so a daemon killed mid-pull leaves nothing behind after its next start
"""

import shutil
from pathlib import Path

import aiohttp

from minibuild import errdefs, gourl
from minibuild.distribution.auth import AuthConfig, Authorizer, TokenHandler, resolve_auth_config
from minibuild.distribution.client import Transport
from minibuild.distribution.config import INDEX_SERVER, IndexInfo, ServiceConfig, new_index_info
from minibuild.distribution.errors import ErrcodeError, RegistryError, URLError
from minibuild.distribution.manifest import Platform
from minibuild.distribution.metadata import V2MetadataService
from minibuild.distribution.progress import NullOutput, Output
from minibuild.distribution.pull import PullOptions, PullStore, pull
from minibuild.distribution.push import PushOptions, PushResult, PushStore, push
from minibuild.distribution.registry import (
    APIEndpoint,
    FallbackError,
    lookup_push_endpoints,
    ping_v2_registry,
)
from minibuild.image.reference import (
    InvalidReference,
    Reference,
    parse_normalized_named,
    validate_digest,
    with_digest,
    with_tag,
)


def parse_reference(ref: str | Reference) -> Reference:
    """A reference as users type it (`busybox`, `localhost:5000/app:v1`); InvalidParameter if malformed."""
    if isinstance(ref, Reference):
        return ref
    try:
        return parse_normalized_named(ref)
    except InvalidReference as err:
        raise errdefs.InvalidParameter(str(err)) from None


def pull_reference(image: str, tag: str = "") -> Reference:
    """The reference `POST /images/create?fromImage=&tag=` pulls (moby ImageService.PullImage).

    `tag` may be a tag or a digest; without one the whole repository is pulled (`docker pull -a` sends
    `busybox:` and no tag; the CLI otherwise always sends a tag, `latest` by default).
    """
    ref = parse_reference(image.removesuffix(":"))
    if not tag:
        return ref
    try:
        digest = validate_digest(tag)
    except InvalidReference:
        digest = ""  # not a digest, so a tag: a malformed digest is then an "invalid tag format"
    try:
        if digest:
            return with_digest(Reference(ref.domain, ref.path), digest)
        return with_tag(ref, tag)  # replaces the tag, keeps a digest (reference.WithTag)
    except InvalidReference as err:
        raise errdefs.InvalidParameter(str(err)) from None


class RegistryService:
    """Registry options (insecure registries, mirrors), layer metadata and a staging directory."""

    def __init__(self, root: Path, config: ServiceConfig | None = None) -> None:
        self.root = Path(root)
        self.config = config or ServiceConfig()
        self.metadata = V2MetadataService(self.root / "metadata")
        self.tmp_dir = self.root / "tmp"
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # leftovers of a daemon that was killed
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def index_info(self, ref: Reference) -> IndexInfo:
        return new_index_info(self.config, ref.domain)

    def resolve_auth_config(self, auth_configs: dict[str, AuthConfig], ref: Reference) -> AuthConfig:
        """The credentials a build uses for `FROM ref`, from its X-Registry-Config map."""
        return resolve_auth_config(auth_configs, self.index_info(ref))

    async def pull(
        self,
        store: PullStore,
        ref: str | Reference,
        *,
        auth: AuthConfig | None = None,
        platform: Platform | None = None,
        progress: Output | None = None,
    ) -> str:
        """Pull an image into `store`; return its ID. Progress goes to `progress` as Docker's messages."""
        options = PullOptions(
            auth or AuthConfig(), platform, progress or NullOutput(), self.config, self.metadata, self.tmp_dir
        )
        return await pull(store, parse_reference(ref), options)

    async def push(
        self,
        store: PushStore,
        ref: str | Reference,
        *,
        auth: AuthConfig | None = None,
        progress: Output | None = None,
        chunk_size: int | None = None,
    ) -> list[PushResult]:
        """Push a tag (or every tag of a name) from `store` to its registry."""
        options = PushOptions(
            auth or AuthConfig(),
            progress or NullOutput(),
            self.config,
            self.metadata,
            self.tmp_dir,
            chunk_size,
        )
        return await push(store, parse_reference(ref), options)

    async def auth(self, auth: AuthConfig) -> tuple[str, str]:
        """Auth (`docker login` through POST /auth): check credentials; return (status, identity token).

        Statuses as dockerd 20.10 answers: 400 for an address url.Parse refuses, 401 when the token server
        refuses the credentials, 500 for the rest (a registry's 401 to them included: Go leaves it unmarked).
        """
        address = auth.serveraddress or INDEX_SERVER
        if not address.startswith(("https://", "http://")):
            address = "https://" + address
        try:
            hostname = gourl.parse(address).host
        except gourl.URLParseError as err:
            raise errdefs.InvalidParameter(f"unable to parse server address: {err}") from None
        last_error: Exception | None = None
        async with aiohttp.ClientSession() as session:
            for endpoint in lookup_push_endpoints(self.config, hostname):
                try:
                    return await _login_v2(session, auth, endpoint)
                except FallbackError as err:
                    last_error = err.err
                except RegistryError as err:
                    raise translate_v2_auth_error(err) from None
        raise errdefs.Unknown(str(last_error))


def translate_v2_auth_error(err: RegistryError) -> errdefs.DockerError:
    """translateV2AuthError: a token server's `unauthorized` is a 401; anything else stays unmarked (500)."""
    cause = err.cause if isinstance(err, URLError) else None
    if isinstance(cause, ErrcodeError) and cause.code == "UNAUTHORIZED":
        return errdefs.Unauthorized(str(err))
    return errdefs.Unknown(str(err))


async def _login_v2(
    session: aiohttp.ClientSession, auth: AuthConfig, endpoint: APIEndpoint
) -> tuple[str, str]:
    """loginV2: ping, then GET /v2/ with the credentials the challenge asks for."""
    plain = Transport(session, tls_verify=endpoint.ssl)
    try:
        challenges, found_v2 = await ping_v2_registry(plain, endpoint)
    except RegistryError as err:
        raise FallbackError(err) from None
    token_handler = TokenHandler(session, auth, [], offline_access=True, ssl=endpoint.ssl)
    transport = Transport(session, Authorizer(challenges, auth, token_handler), tls_verify=endpoint.ssl)
    url = endpoint.url.rstrip("/") + "/v2/"
    try:
        async with transport.request("GET", url) as resp:
            if resp.status == 200:
                return "Login Succeeded", token_handler.refresh_token
            err = RegistryError(f"login attempt to {url} failed with status: {resp.status} {resp.reason}")
    except RegistryError as failure:
        err = failure
    if not found_v2:
        raise FallbackError(err)
    raise err
