"""JSON query parameters decoded with Go's error messages (Go encoding/json scanner.go, decode.go).

dockerd reports a bad `buildargs`, `labels`, `cachefrom`, `ulimits` or `filters` value with the text of
Go's json.Unmarshal error (`invalid character 'n' looking for beginning of object key string`,
`json: cannot unmarshal array into Go value of type map[string]*string`). `unmarshal(text, go_type)`
checks the syntax the way Go's scanner does, then decodes into a described Go type with Go's rules:
`null` leaves any target unset, struct keys match case-insensitively, unknown keys are ignored, and
the first type mismatch is reported after the whole value has been decoded.
"""

import json
from dataclasses import dataclass, field


class GoJSONError(ValueError):
    """A json.Unmarshal error; str() is Go's message."""


@dataclass(frozen=True)
class GoType:
    """A Go type as json.Unmarshal sees it: kind is string, bool, int64, map, slice, ptr or struct."""

    name: str
    kind: str
    elem: "GoType | None" = None
    fields: tuple[tuple[str, "GoType"], ...] = field(default=())


STRING = GoType("string", "string")
BOOL = GoType("bool", "bool")
INT64 = GoType("int64", "int64")


def map_of(elem: GoType) -> GoType:
    return GoType(f"map[string]{elem.name}", "map", elem)


def slice_of(elem: GoType) -> GoType:
    return GoType(f"[]{elem.name}", "slice", elem)


def ptr_to(elem: GoType) -> GoType:
    return GoType(f"*{elem.name}", "ptr", elem)


def struct(name: str, **fields: GoType) -> GoType:
    return GoType(name, "struct", None, tuple(fields.items()))


# --- syntax check: Go's scanner, with its error messages ------------------------------------------

_WS = " \t\n\r"


def _quote_char(c: str) -> str:
    """Go's quoteChar: the offending byte as a quoted rune."""
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    return "'" + _go_quote_rune(c) + "'"


def _go_quote_rune(c: str) -> str:
    escapes = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    escapes["\\"] = "\\\\"
    if c in escapes:
        return escapes[c]
    code = ord(c)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0x80 <= code <= 0xA0 or code == 0xAD:  # not printable for Go's strconv.IsPrint
        return f"\\u{code:04x}"
    return c


class _Scanner:
    def __init__(self, data: bytes) -> None:
        # Go scans bytes; latin-1 maps each byte to the rune Go prints for it.
        self.s = data.decode("latin-1")
        self.i = 0

    def error(self, context: str) -> GoJSONError:
        if self.i >= len(self.s):
            return GoJSONError("unexpected end of JSON input")
        return GoJSONError(f"invalid character {_quote_char(self.s[self.i])} {context}")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in _WS:
            self.i += 1

    def check(self) -> None:
        self.skip_ws()
        self.value()
        self.skip_ws()
        if self.i < len(self.s):
            raise self.error("after top-level value")

    def value(self) -> None:
        c = self.peek()
        if c == "{":
            self.i += 1
            self.object()
        elif c == "[":
            self.i += 1
            self.array()
        elif c == '"':
            self.string()
        elif c == "-" or c.isdigit() and c.isascii():
            self.number()
        elif c in ("t", "f", "n"):
            self.literal({"t": "true", "f": "false", "n": "null"}[c])
        else:
            raise self.error("looking for beginning of value")

    def object(self) -> None:
        self.skip_ws()
        if self.peek() == "}":
            self.i += 1
            return
        while True:
            if self.peek() != '"':
                raise self.error("looking for beginning of object key string")
            self.string()
            self.skip_ws()
            if self.peek() != ":":
                raise self.error("after object key")
            self.i += 1
            self.skip_ws()
            self.value()
            self.skip_ws()
            c = self.peek()
            if c == "}":
                self.i += 1
                return
            if c != ",":
                raise self.error("after object key:value pair")
            self.i += 1
            self.skip_ws()

    def array(self) -> None:
        self.skip_ws()
        if self.peek() == "]":
            self.i += 1
            return
        while True:
            self.value()
            self.skip_ws()
            c = self.peek()
            if c == "]":
                self.i += 1
                return
            if c != ",":
                raise self.error("after array element")
            self.i += 1
            self.skip_ws()

    def string(self) -> None:
        self.i += 1  # opening quote
        while True:
            c = self.peek()
            if c == "":
                raise self.error("")
            if c == '"':
                self.i += 1
                return
            if c == "\\":
                self.i += 1
                e = self.peek()
                if e == "u":
                    self.i += 1
                    for _ in range(4):
                        if self.peek() == "" or self.peek() not in "0123456789abcdefABCDEF":
                            raise self.error("in \\u hexadecimal character escape")
                        self.i += 1
                    continue
                if e == "" or e not in 'bfnrt\\/"':
                    raise self.error("in string escape code")
            elif ord(c) < 0x20:
                raise self.error("in string literal")
            self.i += 1

    def digits(self) -> None:
        while self.peek().isdigit() and self.peek().isascii():
            self.i += 1

    def number(self) -> None:
        if self.peek() == "-":
            self.i += 1
            if not (self.peek().isdigit() and self.peek().isascii()):
                raise self.error("in numeric literal")
        if self.peek() == "0":
            self.i += 1
        else:
            self.digits()
        if self.peek() == ".":
            self.i += 1
            if not (self.peek().isdigit() and self.peek().isascii()):
                raise self.error("after decimal point in numeric literal")
            self.digits()
        if self.peek() in ("e", "E"):
            self.i += 1
            if self.peek() in ("+", "-"):
                self.i += 1
            if not (self.peek().isdigit() and self.peek().isascii()):
                raise self.error("in exponent of numeric literal")
            self.digits()

    def literal(self, word: str) -> None:
        self.i += 1
        for expected in word[1:]:
            if self.peek() != expected:
                raise self.error(f"in literal {word} (expecting {_quote_char(expected)})")
            self.i += 1


# --- decoding into a Go type ---------------------------------------------------------------------


class _Number(str):
    """A JSON number kept as its literal text, as Go's decoder sees it."""


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, _Number):
        return "number"
    if isinstance(value, bool):
        return "bool"
    return "string"


class _Decoder:
    def __init__(self) -> None:
        self.first_error: GoJSONError | None = None

    def type_error(self, what: str, target: GoType, path: tuple[str, str] | None) -> None:
        if self.first_error is None:
            # Go names the field by its struct's bare type name: `Ulimit.Hard`, not `units.Ulimit.Hard`.
            where = f"Go struct field {path[0].rsplit('.', 1)[-1]}.{path[1]}" if path else "Go value"
            self.first_error = GoJSONError(
                f"json: cannot unmarshal {what} into {where} of type {target.name}"
            )

    def decode(self, value: object, t: GoType, path: tuple[str, str] | None = None) -> object:
        """Decode `value` into `t`; None stands for Go's zero value / nil."""
        if value is None:
            return None
        kind = _json_kind(value)
        if t.kind == "ptr":
            return self.decode(value, t.elem, path)
        if t.kind == "string" and kind == "string":
            return value
        if t.kind == "bool" and kind == "bool":
            return value
        if t.kind == "int64" and kind == "number":
            text = str(value)
            if text.lstrip("-").isdigit() and -(2**63) <= int(text) < 2**63:
                return int(text)
            self.type_error(f"number {text}", t, path)
            return None
        if t.kind == "map" and kind == "object":
            return {k: self.decode(v, t.elem) for k, v in value.items()}
        if t.kind == "slice" and kind == "array":
            return [self.decode(v, t.elem) for v in value]
        if t.kind == "struct" and kind == "object":
            return self.decode_struct(value, t)
        self.type_error(kind, t, path)
        return None

    def decode_struct(self, value: dict, t: GoType) -> dict:
        out: dict[str, object] = {}
        for key, item in value.items():
            # Go prefers an exact match, then a case-insensitive one; unknown keys are ignored.
            match = next((f for f in t.fields if f[0] == key), None) or next(
                (f for f in t.fields if f[0].lower() == key.lower()), None
            )
            if match is not None:
                out[match[0]] = self.decode(item, match[1], (t.name, match[0]))
        return out


def _decode(text: str | bytes, go_type: GoType) -> tuple[object, GoJSONError | None]:
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    _Scanner(data).check()
    value = json.loads(data.decode("utf-8", "replace"), parse_int=_Number, parse_float=_Number)
    decoder = _Decoder()
    return decoder.decode(value, go_type), decoder.first_error


def unmarshal(text: str | bytes, go_type: GoType) -> object:
    """json.Unmarshal(text, &v) for v of `go_type`; raises GoJSONError with Go's message.

    Returns Python values: dict for maps and structs (keyed by Go field name), list for slices,
    None for nil/null. Syntax errors come first; otherwise the first type error is raised.
    """
    result, error = _decode(text, go_type)
    if error is not None:
        raise error
    return result


def decode_partial(text: str | bytes, go_type: GoType) -> object:
    """Like `unmarshal`, but a type error keeps what was decoded (Go fills what fits, zeroes the rest)."""
    return _decode(text, go_type)[0]
