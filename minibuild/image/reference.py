"""Image references (docker/distribution reference/: regexp.go, reference.go, normalize.go, helpers.go).

The grammar of `[domain/]path[:tag][@digest]`, and Docker's normalization around it: `busybox` is
`docker.io/library/busybox`, shown back in its familiar form `busybox`; a reference without tag or
digest means `:latest` when an image is looked up or tagged. Error texts are the library's own, which
dockerd passes through: "invalid reference format", "invalid reference format: repository name must
be lowercase", "repository name must not be more than 255 characters", "invalid tag format".
"""

import re
from dataclasses import dataclass, replace

NAME_TOTAL_LENGTH_MAX = 255
DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_NAME = "library"
DEFAULT_TAG = "latest"

# regexp.go, rewritten without ambiguous repetition (Python backtracks where Go's RE2 does not):
# the separator `[-]*` may be empty in Go, which only lengthens the alphanumeric run, so `-+` is the
# same language.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_NAME_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*"

DOMAIN_RE = re.compile(_DOMAIN, re.ASCII)  # DomainRegexp: host name or IP, optional port
REFERENCE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
ANCHORED_NAME_RE = re.compile(rf"(?:({_DOMAIN})/)?({_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*)", re.ASCII)
ANCHORED_TAG_RE = re.compile(_TAG, re.ASCII)
ANCHORED_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
SHORT_IDENTIFIER_RE = re.compile(r"[a-f0-9]{6,64}")

_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidReference(ValueError):
    """A string that is not a valid reference; the message is the reference library's."""


# reference.go's error values
ERR_REFERENCE_INVALID_FORMAT = "invalid reference format"
ERR_TAG_INVALID_FORMAT = "invalid tag format"
ERR_NAME_CONTAINS_UPPERCASE = "invalid reference format: repository name must be lowercase"
ERR_NAME_EMPTY = "repository name must have at least one component"
ERR_NAME_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
ERR_NAME_NOT_CANONICAL = "repository name must be canonical"


@dataclass(frozen=True)
class Reference:
    """A named reference: `domain/path`, with an optional tag and digest."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class DigestReference:
    """A bare digest (`sha256:<64 hex>`), or a 64-hex image ID (ParseAnyReference)."""

    digest: str

    def __str__(self) -> str:
        return self.digest


AnyReference = Reference | DigestReference


def validate_digest(digest: str) -> str:
    """go-digest's Parse: `algorithm:hex`, a known algorithm and the right length."""
    alg, sep, hexpart = digest.partition(":")
    if not sep or not alg or not hexpart:
        raise InvalidReference("invalid checksum digest format")
    if alg not in _DIGEST_HEX_LENGTHS:
        raise InvalidReference("unsupported digest algorithm")
    if len(hexpart) != _DIGEST_HEX_LENGTHS[alg]:
        raise InvalidReference("invalid checksum digest length")
    if not re.fullmatch(r"[a-f0-9]+", hexpart):
        raise InvalidReference("invalid checksum digest format")
    return digest


def parse(text: str) -> Reference:
    """Parse a reference as written, without normalizing (reference.Parse)."""
    match = REFERENCE_RE.fullmatch(text)
    if match is None:
        if text == "":
            raise InvalidReference(ERR_NAME_EMPTY)
        if REFERENCE_RE.fullmatch(text.lower()) is not None:
            raise InvalidReference(ERR_NAME_CONTAINS_UPPERCASE)
        raise InvalidReference(ERR_REFERENCE_INVALID_FORMAT)
    name, tag, digest = match.group(1), match.group(2) or "", match.group(3) or ""
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(ERR_NAME_TOO_LONG)
    name_match = ANCHORED_NAME_RE.fullmatch(name)
    domain, path = (name_match.group(1) or "", name_match.group(2)) if name_match else ("", name)
    if digest:
        validate_digest(digest)
    return Reference(domain, path, tag, digest)


def split_docker_domain(name: str) -> tuple[str, str]:
    """Split `name` into domain and remainder, adding docker.io and library/ (normalize.go)."""
    slash = name.find("/")
    if slash == -1 or (not any(c in name[:slash] for c in ".:") and name[:slash] != "localhost"):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = name[:slash], name[slash + 1 :]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = f"{OFFICIAL_REPO_NAME}/{remainder}"
    return domain, remainder


def parse_normalized_named(text: str) -> Reference:
    """Parse a reference as users type it: `busybox` -> docker.io/library/busybox (ParseNormalizedNamed)."""
    if ANCHORED_IDENTIFIER_RE.fullmatch(text):
        raise InvalidReference(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = split_docker_domain(text)
    remote_name = remainder.split(":", 1)[0]
    if remote_name.lower() != remote_name:
        raise InvalidReference(ERR_NAME_CONTAINS_UPPERCASE)
    return parse(f"{domain}/{remainder}")


def parse_named(text: str) -> Reference:
    """Parse a reference that must already be in canonical form (reference.ParseNamed)."""
    named = parse_normalized_named(text)
    if str(named) != text:
        raise InvalidReference(ERR_NAME_NOT_CANONICAL)
    return named


def parse_any_reference(text: str) -> AnyReference:
    """A 64-hex ID, a digest, or a normalized name (reference.ParseAnyReference)."""
    if ANCHORED_IDENTIFIER_RE.fullmatch(text):
        return DigestReference("sha256:" + text)
    try:
        return DigestReference(validate_digest(text))
    except InvalidReference:
        return parse_normalized_named(text)


def with_tag(ref: Reference, tag: str) -> Reference:
    if not ANCHORED_TAG_RE.fullmatch(tag):
        raise InvalidReference(ERR_TAG_INVALID_FORMAT)
    return replace(ref, tag=tag)


def with_digest(ref: Reference, digest: str) -> Reference:
    if not re.fullmatch(_DIGEST, digest, re.ASCII):
        raise InvalidReference("invalid digest format")
    return replace(ref, digest=digest)


def is_name_only(ref: AnyReference) -> bool:
    return isinstance(ref, Reference) and not ref.tag and not ref.digest


def tag_name_only(ref: Reference) -> Reference:
    """Add :latest to a bare name (reference.TagNameOnly)."""
    return replace(ref, tag=DEFAULT_TAG) if is_name_only(ref) else ref


def familiar_name(ref: Reference) -> str:
    """The short name: docker.io/library/busybox -> busybox, docker.io/user/app -> user/app."""
    if ref.domain != DEFAULT_DOMAIN:
        return ref.name
    path = ref.path
    if path.startswith(OFFICIAL_REPO_NAME + "/") and "/" not in path[len(OFFICIAL_REPO_NAME) + 1 :]:
        path = path[len(OFFICIAL_REPO_NAME) + 1 :]
    return path


def familiar_string(ref: AnyReference) -> str:
    """The reference as users write it: busybox:latest, user/app@sha256:..."""
    if isinstance(ref, DigestReference):
        return ref.digest
    return familiar_name(ref) + (f":{ref.tag}" if ref.tag else "") + (f"@{ref.digest}" if ref.digest else "")
