"""A client for the Engine API (moby client/): `APIClient`, build options, context packing."""

from minibuild.api.types import AuthConfig, BuildCachePruneOptions, ImageBuildOptions
from minibuild.client.client import APIClient, APIError, ClientError, ErrConnectionFailed, Ping
from minibuild.client.image_build import ImageBuildResponse, get_docker_os, image_build_options_to_query

__all__ = [
    "APIClient",
    "APIError",
    "AuthConfig",
    "BuildCachePruneOptions",
    "ClientError",
    "ErrConnectionFailed",
    "ImageBuildOptions",
    "ImageBuildResponse",
    "Ping",
    "get_docker_os",
    "image_build_options_to_query",
]
