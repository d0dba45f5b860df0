"""JSON written the way Go's encoding/json writes it (moby relies on it for IDs and the wire).

Compact separators, and `<`, `>`, `&`, U+2028 and U+2029 escaped as `\\u003c`, `\\u003e`, `\\u0026`,
`\\u2028`, `\\u2029`; control characters as `\\u00XX` except `\\n`, `\\r`, `\\t`. Non-ASCII text stays
UTF-8, as Go leaves it. Key order is the caller's (Go follows struct field order; maps are sorted,
so callers pass `sort_keys=True` for Go maps).
"""

import json
import re

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")
# Python writes \b and \f where Go writes \u0008 and \u000c.
_PY_SHORT_ESCAPES = re.compile(r"(?<!\\)((?:\\\\)*)\\([bf])")


def dumps(obj: object, *, sort_keys: bool = False) -> str:
    """Serialize `obj` exactly as Go's json.Marshal would (without the trailing newline)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, allow_nan=False)
    text = _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group()], text)
    return _PY_SHORT_ESCAPES.sub(lambda m: m.group(1) + ("\\u0008" if m.group(2) == "b" else "\\u000c"), text)


def dumpb(obj: object, *, sort_keys: bool = False) -> bytes:
    """`dumps` as UTF-8 bytes."""
    return dumps(obj, sort_keys=sort_keys).encode()
