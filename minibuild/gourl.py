"""URLs as Go reads them (Go net/url/url.go: Parse, getScheme, parseAuthority, parseHost, unescape).

dockerd hands addresses to `url.Parse` and quotes its refusals, e.g. `docker login 'a b'` answers
`unable to parse server address: parse "https://a b": invalid character " " in host name`. Python's
urlsplit accepts nearly anything, so this module re-checks what Go checks, in Go's order, with Go's
messages: control characters, the scheme, the userinfo, the host (`[v6]` literals, the port digits,
the few ASCII characters a host may hold, %-escapes only for non-ASCII bytes) and the %-escapes of the
path and fragment.
"""

import re
from dataclasses import dataclass, replace

from minibuild.dockerfile.gotext import quote

_HEX = "0123456789abcdefABCDEF"
_HOST_EXTRA = frozenset("-_.~!$&'()*+,;=:[]<>\"")  # what shouldEscape lets stand in a host besides alnum
_USERINFO_RE = re.compile(r"[A-Za-z0-9\-._:~!$&'()*+,;=%@]*")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")


class URLParseError(ValueError):
    """A refused URL; str() is Go's *url.Error text, `parse "<url>": <reason>`."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"parse {quote(url)}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class URL:
    """The parts of a parsed URL (url.URL); `host` keeps its port, as Go's Host does."""

    scheme: str = ""
    opaque: str = ""
    userinfo: str | None = None  # "name" or "name:password", unescaped; None when there is no "@"
    host: str = ""
    path: str = ""
    raw_query: str = ""
    fragment: str = ""


def _escape_error(s: str) -> str:
    return f"invalid URL escape {quote(s)}"


def _unescape(s: str, host: bool = False) -> str:
    """unescape for a host (encodeHost) or any other part: %XX checked, then decoded as bytes."""
    i = 0
    while i < len(s):
        c = s[i]
        if c == "%":
            if i + 2 >= len(s) or s[i + 1] not in _HEX or s[i + 2] not in _HEX:
                raise ValueError(_escape_error(s[i : i + 3]))
            # In a host only non-ASCII bytes may be escaped (RFC 3986), and %25 in a v6 zone (RFC 6874).
            if host and int(s[i + 1], 16) < 8 and s[i : i + 3] != "%25":
                raise ValueError(_escape_error(s[i : i + 3]))
            i += 3
            continue
        if host and c < "\x80" and not c.isalnum() and c not in _HOST_EXTRA:
            raise ValueError(f"invalid character {quote(c)} in host name")
        i += 1
    data = bytearray()
    i = 0
    while i < len(s):
        if s[i] == "%":
            data.append(int(s[i + 1 : i + 3], 16))
            i += 3
        else:
            data += s[i].encode("utf-8", "surrogateescape")
            i += 1
    return data.decode("utf-8", "surrogateescape")


def _valid_optional_port(port: str) -> bool:
    return port == "" or (port[0] == ":" and all("0" <= c <= "9" for c in port[1:]))


def _parse_host(host: str) -> str:
    """parseHost: `[v6]:port` or `name:port`, the port all digits, then the host unescaped."""
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            raise ValueError("missing ']' in host")
        port = host[end + 1 :]
        if not _valid_optional_port(port):
            raise ValueError(f"invalid port {quote(port)} after host")
        zone = host.find("%25", 0, end)
        if zone >= 0:  # the zone may escape what it likes; the rest is a host
            return _unescape(host[:zone], host=True) + _unescape(host[zone:end]) + _unescape(host[end:], True)
    elif (colon := host.rfind(":")) >= 0 and not _valid_optional_port(host[colon:]):
        raise ValueError(f"invalid port {quote(host[colon:])} after host")
    return _unescape(host, host=True)


def _parse_authority(authority: str) -> tuple[str | None, str]:
    """parseAuthority: (userinfo, host); the host is checked first, as Go does."""
    userinfo, at, host = authority.rpartition("@")
    host = _parse_host(host)
    if not at:
        return None, host
    if not _USERINFO_RE.fullmatch(userinfo):
        raise ValueError("net/url: invalid userinfo")
    name, colon, password = userinfo.partition(":")
    return _unescape(name) + colon + _unescape(password), host


def _parse(raw: str) -> URL:
    """parse(rawURL, viaRequest=false), without the fragment."""
    if any(c < " " or c == "\x7f" for c in raw):
        raise ValueError("net/url: invalid control character in URL")
    if raw == "*":
        return URL(path="*")
    scheme, rest = "", raw
    if match := _SCHEME_RE.match(raw):
        scheme, rest = match.group(1).lower(), raw[match.end() :]
    elif raw.startswith(":"):
        raise ValueError("missing protocol scheme")
    if rest.endswith("?") and rest.count("?") == 1:
        rest, query = rest[:-1], ""
    else:
        rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return URL(scheme=scheme, opaque=rest, raw_query=query)  # rootless: opaque (RFC 3986)
        if ":" in rest.partition("/")[0]:
            raise ValueError("first path segment in URL cannot contain colon")
    userinfo, host = None, ""
    if rest.startswith("//") and (scheme or not rest.startswith("///")):
        authority, slash, path = rest[2:].partition("/")
        userinfo, host = _parse_authority(authority)
        rest = slash + path
    return URL(scheme, "", userinfo, host, _unescape(rest), query)


def parse(raw: str) -> URL:
    """url.Parse: raises URLParseError with Go's text for what Go refuses."""
    without_fragment, hash_, fragment = raw.partition("#")
    try:
        url = _parse(without_fragment)
    except ValueError as err:
        raise URLParseError(without_fragment, str(err)) from None
    if not hash_:
        return url
    try:
        return replace(url, fragment=_unescape(fragment))
    except ValueError as err:
        raise URLParseError(raw, str(err)) from None
