"""Helpers every handler uses (moby api/server/httputils: form.go, httputils_write_json.go, errors.go).

Query values are read as Go's `r.FormValue` reads them (the first value, "" when absent), booleans
with dockerd's rule (`""`, `0`, `no`, `false`, `none` are false, anything else true), integers with
Go's strconv messages, and plain JSON answers are written like `WriteJSON`: Go's encoding, a trailing
newline, and — like Go's net/http — a Content-Length only for bodies of up to 2 KiB, chunked above.
Errors become `{"message":…}` with the status their errdefs class carries.
"""

import re
from typing import Any

from aiohttp import web

from minibuild import errdefs, gojson
from minibuild.api import versions
from minibuild.dockerfile.gotext import quote

# net/http sends a handler's output with Content-Length only if it fits this buffer.
_CHUNKING_THRESHOLD = 2048
_INT_RE = re.compile(r"^[+-]?[0-9]+$")


def form_value(request: web.Request, key: str) -> str:
    """r.FormValue: the first value of `key`, or ""."""
    return request.query.get(key, "")


def form_values(request: web.Request, key: str) -> list[str]:
    """r.Form[key]: every value of a repeated parameter, in order."""
    return request.query.getall(key, [])


def bool_value(request: web.Request, key: str) -> bool:
    """BoolValue: false for "", 0, no, false, none (any case, spaces trimmed); true otherwise."""
    return form_value(request, key).strip().lower() not in ("", "0", "no", "false", "none")


class NumError(ValueError):
    """strconv's error; str() is Go's text, e.g. `strconv.ParseInt: parsing "abc": invalid syntax`."""


def parse_int(s: str, func: str = "ParseInt", bits: int = 64) -> int:
    """strconv.ParseInt(s, 10, bits) (or Atoi with func="Atoi"), with Go's error messages."""
    if not _INT_RE.match(s):
        raise NumError(f"strconv.{func}: parsing {quote(s)}: invalid syntax")
    value = int(s)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise NumError(f"strconv.{func}: parsing {quote(s)}: value out of range")
    return value


def int64_value_or_zero(request: web.Request, key: str) -> int:
    """Int64ValueOrZero: the integer, or 0 when absent or unparsable (dockerd accepts `memory=abc`)."""
    try:
        return parse_int(form_value(request, key))
    except NumError:
        return 0


def json_body(obj: Any, *, sort_keys: bool = False) -> bytes:
    """What json.NewEncoder(w).Encode(obj) writes: Go's JSON and a newline."""
    return gojson.dumpb(obj, sort_keys=sort_keys) + b"\n"


async def write_json(
    request: web.Request, status: int, obj: Any, *, sort_keys: bool = False
) -> web.StreamResponse:
    """WriteJSON: `obj` as Go JSON; chunked when over 2 KiB, as Go's net/http sends it."""
    body = json_body(obj, sort_keys=sort_keys)
    if len(body) <= _CHUNKING_THRESHOLD:
        return web.Response(status=status, body=body, content_type="application/json")
    response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(body)
    await response.write_eof()
    return response


def api_version_supports_json_errors(version: str) -> bool:
    """Clients newer than API 1.23 get JSON errors; older ones plain text."""
    return version == "" or versions.greater_than(version, "1.23")


def make_error_response(err: BaseException, version: str) -> web.Response:
    """MakeErrorHandler: the error as `{"message":…}` (or text/plain for API <= 1.23)."""
    status = errdefs.get_http_error_status_code(err)
    message = err.message if isinstance(err, errdefs.DockerError) else str(err)
    if api_version_supports_json_errors(version):
        return web.Response(
            status=status, body=json_body({"message": message}), content_type="application/json"
        )
    # Go's http.Error: text/plain, nosniff, the message and a newline.
    return web.Response(
        status=status,
        body=(message + "\n").encode(),
        headers={"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    )
