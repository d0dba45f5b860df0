"""Registries: pull, push, credentials (moby distribution/ and registry/, docker/distribution's client).

    service = RegistryService(data_root / "distribution")
    image_id = await service.pull(store, "localhost:5000/app:v1", auth=AuthConfig(...), progress=out)
    results = await service.push(store, "localhost:5000/app:v1", auth=..., progress=out)

Modules, in the order a pull meets them: config (which registries are insecure), auth (credentials,
challenges, tokens), registry (endpoints, ping), client (the HTTP API v2), manifest (schema 2 / OCI,
platforms), pull, push, xfer (a layer transfer's retries), metadata (layer <-> blob), progress
(Docker's messages), errors (Docker's wording), configfile (~/.docker/config.json), credentials (its
stores: the file or a credential helper), service (the daemon's entry points).
"""

from minibuild.distribution.auth import (
    AuthConfig,
    decode_auth_config,
    decode_auth_configs,
    encode_auth_config,
    resolve_auth_config,
)
from minibuild.distribution.config import INDEX_SERVER, IndexInfo, ServiceConfig
from minibuild.distribution.configfile import ConfigFile, config_dir
from minibuild.distribution.credentials import CredentialHelperError
from minibuild.distribution.errors import (
    ConfigFileError,
    DistributionError,
    InvalidManifestError,
    PullNotFoundError,
)
from minibuild.distribution.manifest import Platform, default_platform
from minibuild.distribution.progress import MessageCollector, NullOutput, Output, Progress
from minibuild.distribution.pull import PullStore
from minibuild.distribution.push import PushResult, PushStore
from minibuild.distribution.service import RegistryService, parse_reference, pull_reference

__all__ = [
    "INDEX_SERVER",
    "AuthConfig",
    "ConfigFile",
    "ConfigFileError",
    "CredentialHelperError",
    "DistributionError",
    "IndexInfo",
    "InvalidManifestError",
    "MessageCollector",
    "NullOutput",
    "Output",
    "Platform",
    "Progress",
    "PullNotFoundError",
    "PullStore",
    "PushResult",
    "PushStore",
    "RegistryService",
    "ServiceConfig",
    "config_dir",
    "decode_auth_config",
    "decode_auth_configs",
    "default_platform",
    "encode_auth_config",
    "parse_reference",
    "pull_reference",
    "resolve_auth_config",
]
