"""Dockerfile parser: bytes to an AST of instructions (buildkit frontend/dockerfile/parser/parser.go,
line_parsers.go, split_command.go, directives.go).

The parser only splits text. It knows each instruction's argument *shape* (JSON array, whitespace
separated words, key/value pairs, one string) but never validates meaning or expands variables:
`minibuild.dockerfile.instructions` does the former, the builders the latter at dispatch time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from minibuild.dockerfile import gotext
from minibuild.dockerfile.errors import ParseError
from minibuild.dockerfile.heredoc import Heredoc, LexError, heredocs_from_line

DEFAULT_ESCAPE_TOKEN = "\\"
MAX_LINE_BYTES = 64 * 1024 - 1  # bufio.Scanner's token limit, less the newline

_RE_WHITESPACE = re.compile(r"[\t\v\f\r ]+")  # reWhitespace: ASCII whitespace, not Unicode
_RE_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*")
_VALID_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_INSTRUCTIONS = ("add", "copy", "run")
_SPACE_BYTES = gotext.LATIN1_SPACES.encode("latin-1")
_NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


@dataclass(eq=False)
class Node:
    """One instruction, or (with `children`) the whole file.

    `value` is the lower-cased keyword; `original` the logical line as `Step i/N : ...` shows it;
    `args` the argument strings; `json` whether they came from a JSON array (exec form);
    `nested` the instruction an ONBUILD carries. Lines are 1-based and inclusive.
    """

    value: str = ""
    original: str = ""
    flags: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    json: bool = False
    nested: Node | None = None
    heredocs: list[Heredoc] = field(default_factory=list)
    start_line: int = 0
    end_line: int = 0
    children: list[Node] = field(default_factory=list)

    def dump(self) -> str:
        """The s-expression rendering of upstream's Node.Dump(), e.g. `(copy ["--from=a"] "/x" "/y")`."""
        if self.children:
            return "\n".join(f"({child.dump()})" for child in self.children)
        parts = [self.value]
        if self.flags:
            parts.append("[" + " ".join(gotext.quote(flag) for flag in self.flags) + "]")
        if self.nested is not None:
            parts.append(f"({self.nested.dump()})")
        parts.extend(gotext.quote(arg) for arg in self.args)
        return gotext.trim_space(" ".join(parts))


@dataclass
class ParseWarning:
    """upstream's parser.Warning; there is one kind: a blank line inside a continued instruction."""

    short: str
    detail: str
    url: str
    line: int


@dataclass
class Result:
    ast: Node
    escape_token: str
    warnings: list[ParseWarning]

    def print_warnings(self, out: TextIO) -> None:
        """Write the warnings as upstream's Result.PrintWarnings does."""
        for warning in self.warnings:
            out.write(f"[WARNING]: {warning.short}\n")
        if self.warnings:
            out.write("[WARNING]: Empty continuation lines will become errors in a future release.\n")


class _Directives:
    """Parser directives (`# escape=`, `# syntax=`, `# check=`): only at the top of the file."""

    def __init__(self) -> None:
        self.escape_token = DEFAULT_ESCAPE_TOKEN
        self.seen: set[str] = set()
        self.done = False

    def possible_directive(self, line: str) -> None:
        if self.done:
            return
        match = _RE_DIRECTIVE.fullmatch(gotext.trim_left_space(line[1:])) if line.startswith("#") else None
        name = match.group(1).lower() if match else ""
        if name not in _VALID_DIRECTIVES:
            self.done = True  # the first line that is not a known directive ends them for good
            return
        if name in self.seen:
            raise ParseError(f"only one {name} parser directive can be used")
        self.seen.add(name)
        if name == "escape":
            value = match.group(2)
            if value not in ("`", "\\"):
                raise ParseError(f"invalid escape token '{value}' does not match ` or \\")
            self.escape_token = value

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """Remove a trailing escape token (plus spaces/tabs after it): (line, is this the end?)."""
        escape = self.escape_token
        body = line.rstrip(" \t")
        if body.endswith(escape) and (len(body) == 1 or body[-2] != escape):
            return body[:-1], False
        return line, True


def parse(source: bytes | str) -> Result:
    """Parse a Dockerfile into its AST. Raises ParseError for what upstream's parser refuses."""
    text = gotext.decode(_to_bytes(source))
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    too_long = _first_too_long_line(lines)
    if too_long is not None:
        del lines[too_long:]  # upstream's scanner stops there; the lines before it still parse
    last_has_newline = text.endswith("\n") or too_long is not None

    directives = _Directives()
    root = Node(start_line=-1)
    warnings: list[ParseWarning] = []
    count = len(lines)
    i = 0
    while i < count:
        raw = lines[i]
        i += 1
        if i == 1:
            raw = raw.removeprefix("\ufeff")
        token = gotext.trim_left_space(raw.rstrip("\r"))
        try:
            directives.possible_directive(token)
        except ParseError as e:
            e.location = (i, i)
            raise
        if token.startswith("#"):
            continue
        line, end = directives.trim_continuation(token)
        if end and not line:
            continue
        start = i
        pieces = [line]
        empty_continuation = False
        while not end and i < count:
            token = lines[i].rstrip("\r")
            i += 1
            if gotext.trim_left_space(token).startswith("#"):
                continue  # comments never end a continuation
            if not gotext.trim_left_space(token):
                empty_continuation = True
                continue
            token, end = directives.trim_continuation(token)
            pieces.append(token)
        line = "".join(pieces)
        if empty_continuation:
            warnings.append(
                ParseWarning(
                    short="Empty continuation line found in: " + line,
                    detail="Empty continuation lines will become errors in a future release",
                    url="https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
                    line=i,
                )
            )
        try:
            child = _node_from_line(line, directives.escape_token)
            if _can_contain_heredoc(child) and "<<" in line:
                child.heredocs = heredocs_from_line(line)
        except (ParseError, LexError) as e:
            raise ParseError(str(e), location=(start, i)) from None
        for heredoc in child.heredocs:
            i = _read_heredoc_body(heredoc, lines, i, last_has_newline, start)
        child.start_line, child.end_line = start, i
        if root.start_line < 0:
            root.start_line = start
        root.end_line = i
        root.children.append(child)

    if not root.children:
        raise ParseError("file with no instructions", location=(count, count) if count else None)
    if too_long is not None:
        raise ParseError(
            f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}",
            location=(too_long + 1, too_long + 1),
        )
    return Result(ast=root, escape_token=directives.escape_token, warnings=warnings)


def _to_bytes(source: bytes | str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return gotext.encode(source)  # text that came from gotext.decode goes back to its bytes
    except UnicodeEncodeError:
        return source.encode("utf-8", "surrogatepass")  # other lone surrogates: their (invalid) UTF-8


def _first_too_long_line(lines: list[str]) -> int | None:
    for index, line in enumerate(lines):
        # a character is at most 4 bytes: only long lines need their bytes counted
        if len(line) * 4 > MAX_LINE_BYTES and len(gotext.encode(line)) > MAX_LINE_BYTES:
            return index
    return None


def _read_heredoc_body(heredoc: Heredoc, lines: list[str], i: int, last_has_newline: bool, start: int) -> int:
    """Consume the body of `heredoc` up to its terminator line; return the next line index."""
    body: list[str] = []
    while i < len(lines):
        raw = lines[i]
        i += 1
        candidate = raw.rstrip("\r")
        if heredoc.chomp:
            candidate = candidate.lstrip("\t")
        if candidate == heredoc.name:
            heredoc.content = "".join(body)
            return i
        body.append(raw if i == len(lines) and not last_has_newline else raw + "\n")
    raise ParseError("unterminated heredoc", location=(start, i))


def _can_contain_heredoc(node: Node) -> bool:
    if node.value == "onbuild" and node.nested is not None:
        node = node.nested
    return node.value in _HEREDOC_INSTRUCTIONS and not node.json


def _node_from_line(line: str, escape: str) -> Node:
    """Split a logical line into keyword, flags and arguments (upstream's newNodeFromLine)."""
    keyword, flags, rest = split_command(line, escape)
    node = Node(value=keyword, original=gotext.trim_space(line), flags=flags)
    if keyword == "onbuild":
        if rest:
            node.nested = _node_from_line(rest, escape)
        return node
    line_parser = _LINE_PARSERS.get(keyword)
    if line_parser is None:
        node.args = [""]  # an unknown instruction keeps one empty argument (upstream's parseIgnore)
    else:
        node.args, node.json = line_parser(rest, escape)
    return node


def split_command(line: str, escape: str = DEFAULT_ESCAPE_TOKEN) -> tuple[str, list[str], str]:
    """(lower-cased keyword, flags, argument text) of a logical line."""
    parts = _RE_WHITESPACE.split(gotext.trim_space(line), maxsplit=1)
    flags: list[str] = []
    rest = ""
    if len(parts) == 2:
        rest, flags = extract_builder_flags(parts[1], escape)
    return gotext.lower(parts[0]), flags, gotext.trim_space(rest)


def extract_builder_flags(text: str, escape: str = DEFAULT_ESCAPE_TOKEN) -> tuple[str, list[str]]:
    """Take the leading `--flag[=value]` words off `text`: (the remaining text, the flags).

    Upstream scans bytes, so each byte of a non-ASCII flag becomes one character (as if Latin-1), and
    a 0x85 or 0xA0 byte counts as a space; scanning the text's Latin-1 view reproduces that exactly.
    """
    view = text if text.isascii() else gotext.encode(text).decode("latin-1")
    words: list[str] = []
    word: list[str] = []
    blank_ok = False
    quote = ""
    pos, size = 0, len(view)
    in_word = False

    def remainder(at: int) -> str:
        return view[at:] if view is text else gotext.decode(view[at:].encode("latin-1"))

    while pos < size:
        ch = view[pos]
        if not in_word:
            if ch in gotext.LATIN1_SPACES:
                pos += 1
                continue
            if not view.startswith("--", pos):
                return remainder(pos), words
            in_word = True
        if quote:  # inside '...' or "..."
            if ch == quote:
                quote = ""
            elif ch == escape and pos + 1 == size:
                pass  # an escape at the very end is dropped
            else:
                if ch == escape:
                    pos += 1
                word.append(view[pos])
            pos += 1
            continue
        if ch in gotext.LATIN1_SPACES:
            flag = "".join(word)
            if flag == "--":
                return remainder(pos), words
            if blank_ok or flag:
                words.append(flag)
            word, blank_ok, in_word = [], False, False
        elif ch in "'\"":
            quote, blank_ok = ch, True
        elif ch == escape:
            if pos + 1 < size:
                pos += 1
                word.append(view[pos])
        else:
            word.append(ch)
        pos += 1
    flag = "".join(word)
    if in_word and flag != "--" and (blank_ok or flag):
        words.append(flag)
    return "", words


def parse_words(rest: str, escape: str = DEFAULT_ESCAPE_TOKEN) -> list[str]:
    """Words of ENV/LABEL/ARG text, split at unquoted whitespace, quotes and escapes kept as written."""
    rest = gotext.replace_invalid(rest)  # upstream decodes runes: a bad byte becomes U+FFFD here
    words: list[str] = []
    word: list[str] = []
    in_word = blank_ok = False
    quote = ""
    pos, size = 0, len(rest)
    while pos < size:
        ch = rest[pos]
        if not in_word:
            if gotext.is_space(ch):
                pos += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if pos + 1 == size:
                    break  # an escape at the very end is dropped
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
        elif gotext.is_space(ch):
            if blank_ok or word:
                words.append("".join(word))
            word, blank_ok, in_word = [], False, False
        else:
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == escape:
                if pos + 1 == size:
                    break
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
        pos += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


# Line parsers: argument text (already trimmed) -> (arguments, JSON form?). upstream's line_parsers.go.


def _parse_strings_whitespace_delimited(rest: str, escape: str) -> tuple[list[str], bool]:
    return (_RE_WHITESPACE.split(rest) if rest else []), False


def _parse_string(rest: str, escape: str) -> tuple[list[str], bool]:
    return ([rest] if rest else []), False


def _parse_maybe_json(rest: str, escape: str) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    array = parse_json_array(rest)
    if array is not None:
        return array, True
    return [rest], False


def _parse_maybe_json_to_list(rest: str, escape: str) -> tuple[list[str], bool]:
    array = parse_json_array(rest)
    if array is not None:
        return array, True
    return _parse_strings_whitespace_delimited(rest, escape)


def _parse_health_config(rest: str, escape: str) -> tuple[list[str], bool]:
    # upstream looks for the end of the type byte by byte, hence the bytes here
    data = gotext.encode(rest)
    sep = next((i for i, b in enumerate(data) if b in _SPACE_BYTES), len(data))
    if sep == 0:
        return [], False
    after = sep
    while after < len(data) and data[after] in _SPACE_BYTES:
        after += 1
    command, is_json = _parse_maybe_json(gotext.decode(data[after:]), escape)
    return [gotext.decode(data[:sep]), *command], is_json


def _parse_name_val(rest: str, escape: str, keyword: str) -> tuple[list[str], bool]:
    """ENV and LABEL: `key value` (old form) or `k=v k2="v 2"` -> key, value, separator triples."""
    words = parse_words(rest, escape)
    if not words:
        return [], False
    if "=" not in words[0]:
        parts = _RE_WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ParseError(f"{keyword} must have two arguments")
        return [parts[0], parts[1], ""], False
    args: list[str] = []
    for word in words:
        if "=" not in word:
            raise ParseError(
                f"Syntax error - can't find = in {gotext.quote(word)}. Must be of the form: name=value"
            )
        key, value = word.split("=", 1)
        args += [key, value, "="]
    return args, False


def _parse_name_or_name_val(rest: str, escape: str) -> tuple[list[str], bool]:
    return parse_words(rest, escape), False


_LINE_PARSERS: dict[str, Callable[[str, str], tuple[list[str], bool]]] = {
    "add": _parse_maybe_json_to_list,
    "arg": _parse_name_or_name_val,
    "cmd": _parse_maybe_json,
    "copy": _parse_maybe_json_to_list,
    "entrypoint": _parse_maybe_json,
    "env": lambda rest, escape: _parse_name_val(rest, escape, "ENV"),
    "expose": _parse_strings_whitespace_delimited,
    "from": _parse_strings_whitespace_delimited,
    "healthcheck": _parse_health_config,
    "label": lambda rest, escape: _parse_name_val(rest, escape, "LABEL"),
    "maintainer": _parse_string,
    "run": _parse_maybe_json,
    "shell": _parse_maybe_json,
    "stopsignal": _parse_string,
    "user": _parse_string,
    "volume": _parse_maybe_json_to_list,
    "workdir": _parse_string,
}


# JSON arrays, decided as Go's encoding/json decides them. Python's json module differs at the edges (NaN,
# lone surrogates, huge numbers, nesting depth), so the document is checked by this small scanner and only
# its strings are decoded by the json module.
_JSON_TOKEN = re.compile(
    r"""[ \t\n\r]*(?:
      (?P<punct>[\[\]{},:])
    | (?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")
    | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)
    | (?P<literal>true|false|null)
    )""",
    re.VERBOSE,
)
_JSON_MAX_DEPTH = 10000  # encoding/json's nesting limit
_NOT_A_STRING = object()


def parse_json_array(text: str) -> list[str] | None:
    """The strings of a JSON array of strings; None if `text` is not JSON (shell form then applies).

    Raises ParseError for valid JSON holding anything but strings, as upstream does.
    """
    text = gotext.trim_left_space(text)
    if not text.startswith("["):
        return None
    elements: list[object] = []
    stack: list[str] = []
    expect = "value"  # value | first (value or ]) | key | firstkey (key or }) | colon | after | done
    pos = 0
    overflow = False
    while (match := _JSON_TOKEN.match(text, pos)) is not None:
        pos = match.end()
        kind = match.lastgroup
        token = match.group(kind)
        if expect in ("value", "first"):
            if token == "]" and expect == "first":
                stack.pop()
                expect = "after" if stack else "done"
                continue
            if kind == "punct" and token not in "[{":
                return None
            if len(stack) == 1:
                elements.append(_json_string(token) if kind == "string" else _NOT_A_STRING)
            if token in ("[", "{"):
                if len(stack) >= _JSON_MAX_DEPTH:
                    return None
                stack.append(token)
                expect = "first" if token == "[" else "firstkey"
                continue
            if kind == "number" and math.isinf(float(token)):
                overflow = True  # Go fails to fit it in a float64: an error, hence not JSON here
            expect = "after" if stack else "done"
        elif expect in ("key", "firstkey"):
            if kind == "string":
                expect = "colon"
            elif token == "}" and expect == "firstkey":
                stack.pop()
                expect = "after" if stack else "done"
            else:
                return None
        elif expect == "colon":
            if token != ":":
                return None
            expect = "value"
        elif expect == "after":
            if token == ",":
                expect = "value" if stack[-1] == "[" else "key"
            elif token in ("]", "}") and {"[": "]", "{": "}"}[stack[-1]] == token:
                stack.pop()
                expect = "after" if stack else "done"
            else:
                return None
        else:  # anything after the closing bracket
            return None
    if expect != "done" or text[pos:].strip(" \t\n\r") or overflow:
        return None
    if any(element is _NOT_A_STRING for element in elements):
        raise ParseError(_NOT_STRING_ARRAY)
    return elements  # type: ignore[return-value]


def _json_string(token: str) -> str:
    # Go turns unpaired surrogate escapes and invalid UTF-8 into U+FFFD
    return gotext.replace_invalid(json.loads(token))
