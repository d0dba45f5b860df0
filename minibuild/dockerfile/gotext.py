"""Go's text primitives the Dockerfile front end depends on (Go unicode.IsSpace, strings.TrimSpace,
strconv.Quote, strconv.ParseInt/ParseBool, time.ParseDuration).

Dockerfiles are read as UTF-8 with the ``surrogateescape`` error handler: a byte that is not valid UTF-8
becomes one lone surrogate U+DC80..U+DCFF, so text round-trips to the original bytes exactly as Go's
strings (which are bytes) do, and `quote` can show such a byte as ``\\xNN`` like strconv.Quote.
"""

from __future__ import annotations

import re
import unicodedata

# unicode.IsSpace: the Latin-1 spaces plus the Unicode White_Space characters (Python's str.isspace differs).
SPACES = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" + (
    "\u2028\u2029\u202f\u205f\u3000"
)
LATIN1_SPACES = "\t\n\v\f\r \x85\xa0"  # unicode.IsSpace(rune(b)) for a single byte b
_SPACE_SET = frozenset(SPACES)
_SURROGATES = re.compile("[\ud800-\udfff]")
_PLAIN_ASCII = re.compile(r"[ !#-\[\]-~]*")  # printable ASCII that strconv.Quote keeps as is
_SHORT_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def is_space(ch: str) -> bool:
    """Go's unicode.IsSpace for one character."""
    return ch in _SPACE_SET


def trim_space(s: str) -> str:
    """Go's strings.TrimSpace."""
    return s.strip(SPACES)


def trim_left_space(s: str) -> str:
    """Go's strings.TrimLeftFunc(s, unicode.IsSpace)."""
    return s.lstrip(SPACES)


def decode(data: bytes) -> str:
    """Bytes to text, keeping invalid UTF-8 as surrogate escapes (see the module docstring)."""
    return data.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    """The inverse of `decode`."""
    return text.encode("utf-8", "surrogateescape")


def replace_invalid(text: str) -> str:
    """Invalid UTF-8 as Go's rune decoding sees it: each bad byte becomes U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def lower(s: str) -> str:
    """strings.ToLower: per-character simple case mapping (Python's 'İ'.lower() is two characters)."""
    if s.isascii():
        return s.lower()
    return "".join(c if len(low := c.lower()) != 1 else low for c in s).replace("\u0130", "i")


def upper(s: str) -> str:
    """strings.ToUpper: a character without a one-character upper case (ß) stays as it is."""
    if s.isascii():
        return s.upper()
    return "".join(up if len(up := c.upper()) == 1 else c for c in s)


def quote(s: str) -> str:
    """Go's strconv.Quote: a double-quoted string with Go escapes, printable Unicode kept literally."""
    if _PLAIN_ASCII.fullmatch(s):
        return f'"{s}"'
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0xDC80 <= cp <= 0xDCFF:  # an invalid UTF-8 byte kept by surrogateescape
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif cp == 0x20 or (cp > 0x20 and unicodedata.category(ch)[0] in "LMNPS"):
            out.append(ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif cp < 0x20 or cp == 0x7F:
            out.append(f"\\x{cp:02x}")
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def parse_int(s: str, bits: int = 64) -> int:
    """strconv.ParseInt(s, 10, bits), with Go's error wording."""
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body or not all("0" <= c <= "9" for c in body):
        raise ValueError(f"strconv.ParseInt: parsing {quote(s)}: invalid syntax")
    value = int(s)
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise ValueError(f"strconv.ParseInt: parsing {quote(s)}: value out of range")
    return value


def parse_uint(s: str, base: int = 10, bits: int = 64) -> int:
    """strconv.ParseUint(s, base, bits) for base 8 or 10, with Go's error wording."""
    digits = "01234567" if base == 8 else "0123456789"
    if not s or not all(c in digits for c in s):
        raise ValueError(f"strconv.ParseUint: parsing {quote(s)}: invalid syntax")
    value = int(s, base)
    if value >= 1 << bits:
        raise ValueError(f"strconv.ParseUint: parsing {quote(s)}: value out of range")
    return value


def parse_bool(s: str) -> bool:
    """strconv.ParseBool."""
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"strconv.ParseBool: parsing {quote(s)}: invalid syntax")


_UNITS = {"ns": 1, "us": 1000, "\u00b5s": 1000, "\u03bcs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
_UNITS["h"] = 3600 * 10**9
_MAX = 1 << 63


def _time_quote(s: str) -> str:
    # package time's own quote: non-ASCII and control characters as \x bytes, nothing else escaped
    out = []
    for ch in s:
        if ch < " " or ch >= "\x80":
            out.append("".join(f"\\x{b:02x}" for b in encode(ch)))
        else:
            out.append("\\" + ch if ch in '"\\' else ch)
    return '"' + "".join(out) + '"'


def parse_duration(s: str) -> int:
    """Go's time.ParseDuration, in nanoseconds: "1h30m", "1.5s", "300ms", "-2us"; errors worded as Go's."""
    orig, neg = s, False
    invalid = ValueError(f"time: invalid duration {_time_quote(orig)}")
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        m = re.match(r"([0-9]*)(?:\.([0-9]*))?", s)
        whole, frac = m.group(1), m.group(2)
        if not whole and not frac:
            raise invalid
        value = int(whole or "0")
        if value > _MAX:
            raise invalid
        s = s[m.end() :]
        unit_end = next((i for i, c in enumerate(s) if c == "." or "0" <= c <= "9"), len(s))
        if unit_end == 0:
            raise ValueError(f"time: missing unit in duration {_time_quote(orig)}")
        unit, s = s[:unit_end], s[unit_end:]
        if unit not in _UNITS:
            raise ValueError(f"time: unknown unit {_time_quote(unit)} in duration {_time_quote(orig)}")
        scale = _UNITS[unit]
        if value > _MAX // scale:
            raise invalid
        value *= scale
        if frac:
            # Go keeps at most the digits that fit in an int64 and scales with a float64, as here
            digits = frac
            while len(digits) > 1 and int(digits) > (_MAX - 1):
                digits = digits[:-1]
            value += int(float(int(digits)) * (scale / 10 ** len(digits)))
            if value > _MAX:
                raise invalid
        total += value
        if total > _MAX:
            raise invalid
    if neg:
        return -total
    if total > _MAX - 1:
        raise invalid
    return total
