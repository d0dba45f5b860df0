"""Registry errors and Docker's wording for them (moby distribution/errors.go; docker/distribution
registry/api/errcode/errors.go and registry/client/errors.go).

A registry answers failures with `{"errors":[{"code":"MANIFEST_UNKNOWN","message":…,"detail":…}]}`.
Go's client keeps an entry with a detail (or an unusual message) as an `errcode.Error`, printed
`manifest unknown: <message>`, and reduces the others to a bare `ErrorCode`, printed `manifest unknown`.
The distinction shows in Docker's messages, so it is kept here: `translate_pull_error` turns only full
errors into "not found" wording (`manifest for busybox:latest not found: manifest unknown: manifest
unknown`, `pull access denied for x, repository does not exist or may require 'docker login': denied: …`).

Transport failures read like Go's `*url.Error`: `Head "http://127.0.0.1:5000/v2/x/manifests/latest": no
basic auth credentials`.
"""

import json

from minibuild import errdefs
from minibuild.dockerfile.gotext import quote  # Go's %q (invalid UTF-8 bytes as \xNN)

# errcode descriptors: the registry's codes and their default messages (api/errcode and api/v2).
_DEFAULT_MESSAGES = {
    "UNKNOWN": "unknown error",
    "UNSUPPORTED": "The operation is unsupported.",
    "UNAUTHORIZED": "authentication required",
    "DENIED": "requested access to the resource is denied",
    "UNAVAILABLE": "service unavailable",
    "TOOMANYREQUESTS": "too many requests",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "SIZE_INVALID": "provided length did not match content length",
    "NAME_INVALID": "invalid repository name",
    "TAG_INVALID": "manifest tag did not match URI",
    "NAME_UNKNOWN": "repository name not known to registry",
    "MANIFEST_UNKNOWN": "manifest unknown",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNVERIFIED": "manifest failed signature verification",
    "MANIFEST_BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "RANGE_INVALID": "invalid content range",
    "PAGINATION_NUMBER_INVALID": "invalid number of results requested",
}


class RegistryError(Exception):
    """Base of the registry protocol errors below (internal: translated before leaving the package)."""


class ErrorCode(RegistryError):
    """A bare errcode.ErrorCode: printed as the lower-cased code, `unauthorized`."""

    def __init__(self, code: str) -> None:
        self.code = code if code in _DEFAULT_MESSAGES else "UNKNOWN"
        super().__init__(self.code.lower().replace("_", " "))


class ErrcodeError(RegistryError):
    """An errcode.Error: code, message and detail, printed `manifest unknown: manifest unknown`."""

    def __init__(self, code: str, message: str = "", detail: object = None) -> None:
        self.code = code if code in _DEFAULT_MESSAGES else "UNKNOWN"
        self.message = message or _DEFAULT_MESSAGES[self.code]
        self.detail = detail
        super().__init__(f"{self.code.lower().replace('_', ' ')}: {self.message}")


class ErrcodeErrors(RegistryError):
    """errcode.Errors: one error prints as itself, several as `errors:\\n<e1>\\n<e2>\\n`."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        if not errors:
            text = "<nil>"
        elif len(errors) == 1:
            text = str(errors[0])
        else:
            text = "errors:\n" + "".join(f"{e}\n" for e in errors)
        super().__init__(text)


class UnexpectedHTTPResponseError(RegistryError):
    def __init__(self, parse_error: str, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        shown = quote(body.decode("utf-8", "surrogateescape"))
        super().__init__(f"error parsing HTTP {status} response body: {parse_error}: {shown}")


class UnexpectedHTTPStatusError(RegistryError):
    def __init__(self, status: str) -> None:
        super().__init__(f"received unexpected HTTP status: {status}")


class NoBasicAuthCredentials(RegistryError):
    def __init__(self) -> None:
        super().__init__("no basic auth credentials")


class NoToken(RegistryError):
    def __init__(self) -> None:
        super().__init__("authorization server did not include a token in the response")


class BlobUnknownError(RegistryError):
    """distribution.ErrBlobUnknown: the blob's GET answered 404."""

    def __init__(self) -> None:
        super().__init__("unknown blob")


class URLError(RegistryError):
    """Go's *url.Error: `<Method> "<url>": <cause>`."""

    def __init__(self, method: str, url: str, cause: Exception | str) -> None:
        self.method = method
        self.url = url
        self.cause = cause
        super().__init__(f'{method[:1].upper()}{method[1:].lower()} "{url}": {cause}')


class DoNotRetry(RegistryError):
    """xfer.DoNotRetry: a transfer failure that trying again cannot fix; `err` is what is reported."""

    def __init__(self, err: Exception) -> None:
        super().__init__(str(err))
        self.err = err


# errcode codes a layer transfer gives up on at once (retryOnError)
_NO_RETRY_CODES = ("UNAUTHORIZED", "UNSUPPORTED", "DENIED", "TOOMANYREQUESTS", "NAME_UNKNOWN")


def retry_on_error(err: Exception) -> Exception:
    """retryOnError: `err` wrapped in DoNotRetry when a layer transfer must not try again, else `err`.

    Refused credentials, a missing blob, an answer that is not the registry's and a full disk are final;
    connection failures, 5xx answers and cut bodies are worth another attempt. Missing credentials are
    reported without the request's URL, as dockerd says `no basic auth credentials` for a layer.
    """
    if isinstance(err, ErrcodeErrors) and err.errors:
        return retry_on_error(err.errors[0])
    if isinstance(err, ErrcodeError):
        return DoNotRetry(err) if err.code in _NO_RETRY_CODES else err
    if isinstance(err, URLError):
        if isinstance(err.cause, NoBasicAuthCredentials | NoToken):
            return DoNotRetry(err.cause)
        return retry_on_error(err.cause) if isinstance(err.cause, Exception) else err
    if isinstance(err, UnexpectedHTTPResponseError | BlobUnknownError | DoNotRetry):
        return err if isinstance(err, DoNotRetry) else DoNotRetry(err)
    if "no space left on device" in str(err):
        return DoNotRetry(err)
    return err


def transfer_error(err: Exception) -> Exception:
    """What a failed transfer reports: the error retryOnError kept (a DoNotRetry's own error)."""
    decided = retry_on_error(err)
    return decided.err if isinstance(decided, DoNotRetry) else decided


def _parse_error_body(status: int, body: bytes) -> RegistryError:
    """parseHTTPErrorResponse: Docker Hub's `{"details": …}`, else the registry's errors list."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        return UnexpectedHTTPResponseError(_json_error_text(err), status, body)
    if isinstance(doc, dict) and isinstance(doc.get("details"), str) and doc["details"]:
        code = {401: "UNAUTHORIZED", 429: "TOOMANYREQUESTS"}.get(status, "UNKNOWN")
        return ErrcodeError(code, doc["details"])
    entries = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        return UnexpectedHTTPResponseError("no error details found in HTTP response body", status, body)
    errors: list[Exception] = []
    for entry in entries:
        entry = entry if isinstance(entry, dict) else {}
        code = str(entry.get("code") or "UNKNOWN")
        code = code if code in _DEFAULT_MESSAGES else "UNKNOWN"
        message = str(entry.get("message") or "")
        detail = entry.get("detail")
        if detail is None and message in ("", _DEFAULT_MESSAGES[code]):
            errors.append(ErrorCode(code))  # Go reduces plain entries to the bare code
        else:
            errors.append(ErrcodeError(code, message, detail))
    return ErrcodeErrors(errors)


def _json_error_text(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError) and err.pos >= len(err.doc):
        return "unexpected end of JSON input"
    return f"invalid JSON: {err}"


def handle_error_response(status: int, reason: str, challenges: list, body: bytes) -> RegistryError:
    """client.HandleErrorResponse for a non-2xx answer; `challenges` are the response's parsed ones."""
    if 400 <= status < 500:
        for challenge in challenges:  # OAuth errors in a Bearer challenge come first (RFC 6750 §3)
            if challenge.scheme != "bearer":
                continue
            code = {"invalid_token": "UNAUTHORIZED", "insufficient_scope": "DENIED"}.get(
                challenge.parameters.get("error", "")
            )
            if code is None:
                continue
            first = ErrcodeError(code, challenge.parameters.get("error_description", ""))
            rest = _parse_error_body(status, body)
            return ErrcodeErrors([first, *(rest.errors if isinstance(rest, ErrcodeErrors) else [rest])])
        err = _parse_error_body(status, body)
        if isinstance(err, UnexpectedHTTPResponseError) and status == 401:
            return ErrcodeError("UNAUTHORIZED", "", err.body.decode("utf-8", "replace"))
        return err
    return UnexpectedHTTPStatusError(f"{status} {reason}")


# --- errors that leave the package: errdefs classes (HTTP status) with Docker's wording -----------------


class PullNotFoundError(errdefs.NotFound):
    """notFoundError: the image is missing or hidden (404)."""


class DistributionError(errdefs.Unknown):
    """Any other pull/push failure (errdefs.Unknown, 500)."""


class InvalidManifestError(errdefs.InvalidParameter):
    """A manifest or config minibuild cannot or will not use (schema 1, unknown media type, ...)."""


class ConfigFileError(errdefs.InvalidParameter):
    """An unreadable ~/.docker/config.json."""


def first_error(err: Exception) -> Exception:
    """errcode.Errors reduced to its first element, as TranslatePullError does."""
    while isinstance(err, ErrcodeErrors) and err.errors:
        err = err.errors[0]
    return err


def translate_pull_error(err: Exception, familiar_name: str, familiar_string: str) -> Exception:
    """TranslatePullError: denied/unknown manifest/unknown repository become NotFound with Docker's text."""
    if isinstance(err, errdefs.DockerError):
        return err
    cause = first_error(err)
    if isinstance(cause, ErrcodeError):
        if cause.code == "DENIED":
            return PullNotFoundError(
                f"pull access denied for {familiar_name}, repository does not exist or may require "
                f"'docker login': {cause}"
            )
        if cause.code == "MANIFEST_UNKNOWN":
            return PullNotFoundError(f"manifest for {familiar_string} not found: {cause}")
        if cause.code == "NAME_UNKNOWN":
            return PullNotFoundError(f"repository {familiar_name} not found: {cause}")
    return DistributionError(str(cause))
