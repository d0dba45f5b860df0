"""The Dockerfile front end shared by both builders (buildkit frontend/dockerfile: parser, instructions)."""

from minibuild.dockerfile.errors import DockerfileError, ParseError, daemon_message

__all__ = ["DockerfileError", "ParseError", "daemon_message"]
