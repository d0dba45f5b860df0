"""Error classes carrying Docker's HTTP status (moby errdefs/defs.go, errdefs/http_helpers.go).

moby marks an error with an interface (`errdefs.NotFound(err)`) and the API server maps the mark to a
status code (`GetHTTPErrorStatusCode`). In Python the mark is the class: raise `NotFound("No such image:
x:latest")` and the API layer answers 404 with that message. Anything that is not a DockerError is a 500.
"""


class DockerError(Exception):
    """Base of the marked errors; `message` is Docker's exact text, `status_code` its HTTP status."""

    status_code = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(DockerError):  # ErrNotFound
    status_code = 404


class InvalidParameter(DockerError):  # ErrInvalidParameter
    status_code = 400


class Conflict(DockerError):  # ErrConflict
    status_code = 409


class Unauthorized(DockerError):  # ErrUnauthorized
    status_code = 401


class Forbidden(DockerError):  # ErrForbidden
    status_code = 403


class Unavailable(DockerError):  # ErrUnavailable
    status_code = 503


class NotImplemented(DockerError):  # ErrNotImplemented (shadows the builtin constant, as moby names it)
    status_code = 501


class System(DockerError):  # ErrSystem
    status_code = 500


class Unknown(DockerError):  # ErrUnknown
    status_code = 500


class Cancelled(DockerError):  # ErrCancelled
    status_code = 500


class Deadline(DockerError):  # ErrDeadline
    status_code = 500


def get_http_error_status_code(err: BaseException) -> int:
    """The status the API answers for `err` (moby api/server/httpstatus GetHTTPErrorStatusCode)."""
    return err.status_code if isinstance(err, DockerError) else 500
