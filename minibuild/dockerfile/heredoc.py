"""Heredoc markers in RUN/COPY/ADD lines (buildkit frontend/dockerfile/parser/parser.go: heredocsFromLine,
ParseHeredoc, ChompHeredocContent; and the word splitting of frontend/dockerfile/shell/lex.go they use).

Upstream finds markers by running its shell lexer over the line with quotes and escapes kept raw and unset
variables left unexpanded. The lexer here is that lexer cut down to what heredoc detection needs: no
variable is ever set, so `$VAR` and `${VAR...}` come back as written, and the escape is always `\\`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from minibuild.dockerfile import gotext

_RE_HEREDOC = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)", re.DOTALL)
_RE_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_SPECIAL_PARAMS = "@*#?-$!0"
_NEEDS_LEXER = re.compile(r"[$'\"<\\\x1c-\x1f]")  # special characters, and \x1c-\x1f: spaces to Python only


@dataclass
class Heredoc:
    """One `<<NAME` body. `expand` is false when the name was quoted; `chomp` for `<<-` (strip tabs)."""

    name: str
    file_descriptor: int = 0
    expand: bool = True
    chomp: bool = False
    content: str = ""


class LexError(Exception):
    """The line is not valid shell-word syntax (an unterminated quote, a bad ${...})."""


class _Words:
    """Word accumulation as lex.go's wordsStruct does it: whitespace splits, empty words vanish."""

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if gotext.is_space(ch):
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word, self.in_word = "", False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def done(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word, self.in_word = "", False
        return self.words


def _scanner_text(text: str) -> str:
    """What Go's text/scanner reads: a leading BOM skipped, each bad byte as U+FFFD."""
    return gotext.replace_invalid(text.removeprefix("\ufeff"))


class _Lexer:
    def __init__(self, text: str, raw_quotes: bool, raw_escapes: bool) -> None:
        self.text = _scanner_text(text)
        self.pos = 0
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""  # "" is EOF

    def next(self) -> str:
        ch = self.peek()
        self.pos += len(ch)
        return ch

    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Read up to `stop` ("" for the end of the text): the text as processed, and its words."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._process_stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _process_stop_on(self, stop: str) -> tuple[str, list[str]]:
        special = {
            "$": self.dollar,
            "'": self.single_quote,
            '"': self.double_quote,
            "<": self.possible_heredoc,
        }
        result: list[str] = []
        words = _Words()
        while (ch := self.peek()) != "":
            if stop and ch == stop:
                self.next()
                return "".join(result), words.done()
            if ch in special:
                text = special[ch]()
                result.append(text)
                if ch == "$":
                    for c in text:
                        words.add_char(c)
                else:
                    words.add_raw(text)
                continue
            ch = self.next()
            if ch == "\\":
                if self.raw_escapes:
                    words.add_raw(ch)
                    result.append(ch)
                ch = self.next()
                if ch == "":
                    break
                words.add_raw(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop:
            raise LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.done()

    def single_quote(self) -> str:
        opening = self.next()
        result = [opening] if self.raw_quotes else []
        while True:
            ch = self.next()
            if ch == "":
                raise LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def double_quote(self) -> str:
        opening = self.next()
        result = [opening] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if ch == "":
                raise LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if ch == "$":
                result.append(self.dollar())
                continue
            ch = self.next()
            if ch == "\\":
                if self.raw_escapes:
                    result.append(ch)
                if self.peek() == "":
                    continue  # a trailing escape is dropped (then the quote is unterminated)
                if self.peek() in ('"', "$", "\\"):
                    ch = self.next()
            result.append(ch)

    def dollar(self) -> str:
        """`$NAME` or `${...}`, always unset here, so it comes back as written (upstream's SkipUnsetEnv)."""
        self.next()
        if self.peek() != "{":
            name = self.name()
            return "$" + name
        self.next()
        if self.peek() == "":
            raise LexError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        modifier = ch or "\ufffd"  # Go's string(scanner.EOF)
        if ch == "}":
            return "${" + name + "}"
        if ch == ":":
            ch = self.next()
            modifier += ch or "\ufffd"
        elif ch == "/":
            if self.peek() == "/":  # ${a//x/y}: shown back with a single slash, as upstream does
                self.next()
            pattern = self._until("/", "syntax error: missing '/' in ${}")
            replacement = self._until("}", "syntax error: missing '}'")
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        elif ch not in ("+", "-", "?", "#", "%"):
            raise LexError(f"unsupported modifier ({modifier}) in substitution")
        word = self._until("}", "syntax error: missing '}'", raw_escapes=ch in ("#", "%"))
        return "${" + name + modifier + word + "}"

    def _until(self, stop: str, eof_message: str, raw_escapes: bool = True) -> str:
        try:
            return self.process_stop_on(stop, raw_escapes)[0]
        except LexError:
            if self.peek() == "":
                raise LexError(eof_message) from None
            raise

    def name(self) -> str:
        name = ""
        while (ch := self.peek()) != "":
            if not name and ch.isdecimal():
                while self.peek() != "" and self.peek().isdecimal():
                    name += self.next()
                return name
            if not name and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            name += self.next()
        return name

    def possible_heredoc(self) -> str:
        """`<<` (or `<<-`) takes the whitespace after it, so `<< EOF` and `<<- EOF` stay one word."""
        self.next()
        if self.peek() != "<":
            return "<"
        marker = "<" + self.next()
        if self.peek() == "-":
            marker += self.next()
        while self.peek() != "" and gotext.is_space(self.peek()):
            marker += self.next()
        return marker


def shell_words(text: str, *, raw_quotes: bool, raw_escapes: bool) -> list[str]:
    """The words of `text` as upstream's Lex.ProcessWords splits them with no variable set."""
    if not _NEEDS_LEXER.search(text):  # plain words (a terminator such as EOF): only whitespace matters
        return _scanner_text(text).split()
    try:
        return _Lexer(text, raw_quotes, raw_escapes).process_stop_on("", raw_escapes)[1]
    except LexError as e:
        raise LexError(f"failed to process {gotext.quote(text)}: {e}") from None


def parse_heredoc(word: str) -> Heredoc | None:
    """The heredoc a single word such as `<<EOF`, `<<-'EOF'` or `3<<EOF` opens, or None.

    Raises LexError when the terminator is not valid shell syntax.
    """
    match = _RE_HEREDOC.fullmatch(word)
    if not match or not match.group(3):
        return None
    fd_text, chomp, rest = match.groups()
    fd = int(fd_text) if fd_text and int(fd_text) < 1 << 64 else 0  # strconv.ParseUint, error ignored
    words = shell_words(rest, raw_quotes=False, raw_escapes=False)
    if len(words) != 1:
        return None
    raw = shell_words(rest, raw_quotes=True, raw_escapes=False)
    if len(raw) != 1:
        raise LexError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    # A quote that disappears when quotes are processed was a real quote: the body is not expanded.
    expand = _count_quotes(words[0]) == _count_quotes(raw[0])
    return Heredoc(name=words[0], file_descriptor=fd, expand=expand, chomp=chomp == "-")


def _count_quotes(word: str) -> int:
    return word.count("'") + word.count('"')


def must_parse_heredoc(word: str) -> Heredoc | None:
    """`parse_heredoc` with errors read as "not a heredoc" (upstream's MustParseHeredoc)."""
    try:
        return parse_heredoc(word)
    except LexError:
        return None


def heredocs_from_line(line: str) -> list[Heredoc]:
    """Every heredoc the logical line opens, in order. A line the lexer rejects opens none."""
    try:
        words = shell_words(line, raw_quotes=True, raw_escapes=True)
    except LexError:
        return []
    return [doc for word in words if (doc := parse_heredoc(word)) is not None]


def chomp_heredoc_content(content: str) -> str:
    """`<<-`: leading tabs removed from every line of the body."""
    return _RE_LEADING_TABS.sub("", content)
