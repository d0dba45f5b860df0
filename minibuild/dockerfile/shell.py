"""Shell-word expansion of Dockerfile words (buildkit frontend/dockerfile/shell/lex.go, equal_env_unix.go).

The builders run every ENV, ARG, COPY, WORKDIR, ... argument through `Lex` before using it:
quotes are removed, escapes resolved and `$VAR`, `${VAR}` and `${VAR<modifier>word}` substituted,
the way a POSIX shell would, but without running anything. `process_word` keeps the result as one
string; `process_words` also splits it into words, at unquoted whitespace of the input and at
whitespace that came out of a variable expanded outside double quotes.

Supported forms (all of upstream's): `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME-word}`,
`${NAME:+word}`, `${NAME+word}`, `${NAME:?msg}`, `${NAME?msg}`, `${NAME#pat}`, `${NAME##pat}`,
`${NAME%pat}`, `${NAME%%pat}`, `${NAME/pat/repl}`, `${NAME//pat/repl}`. Positional (`$1`) and
special (`$@`, `$$`, ...) parameters are never set, so they expand to "".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from minibuild.dockerfile.errors import DockerfileError
from minibuild.dockerfile.gotext import is_space, quote, replace_invalid, upper

EOF = ""  # what the scanner's peek()/next() return at the end of the text
_SPECIAL_PARAMS = frozenset("@*#?-$!0")  # POSIX special parameters: one character each


class ShellError(DockerfileError):
    """A word that cannot be expanded (unterminated quote, bad `${...}`, `${VAR?}` on an unset VAR)."""


def _is_letter(ch: str) -> bool:
    return ch.isalpha()  # unicode.IsLetter: general category L


def _is_digit(ch: str) -> bool:
    return ch.isdecimal()  # unicode.IsDigit: general category Nd


def _is_name_char(ch: str) -> bool:
    return _is_letter(ch) or _is_digit(ch) or ch == "_"


def _scanned(text: str) -> str:
    """The characters Go's text/scanner yields for `text`: a leading byte-order mark is skipped and
    each invalid UTF-8 byte (a surrogate escape here, see gotext) reads as U+FFFD."""
    return replace_invalid(text.removeprefix("\ufeff"))


def build_envs(env: Mapping[str, str] | Iterable[str], case_insensitive: bool = False) -> dict[str, str]:
    """The lookup table for `env`: a mapping, or "K=V" strings where a later K wins (EnvsFromSlice).

    A string without `=` defines its name with an empty value. With `case_insensitive` (what
    NormalizeEnvKey does on Windows) names are compared upper-cased.
    """
    norm = upper if case_insensitive else str
    if isinstance(env, Mapping):
        return {norm(k): v for k, v in env.items()}
    if isinstance(env, str):
        raise TypeError("env must be a mapping or a list of 'K=V' strings, not a string")
    table = {}
    for entry in env:
        key, _, value = entry.partition("=")
        table[norm(key)] = value
    return table


@dataclass
class ProcessWordResult:
    """Everything one expansion produced (upstream's ProcessWordResult)."""

    result: str
    words: list[str]
    matched: set[str] = field(default_factory=set)  # names looked up and found
    unmatched: set[str] = field(default_factory=set)  # names looked up and not set


class Lex:
    """Expands shell words with the Dockerfile's escape token (`\\` or a backtick).

    Options (as upstream's Lex fields): `raw_quotes` keeps quote characters in the result,
    `raw_escapes` keeps escape tokens, `skip_process_quotes` treats quotes as ordinary characters,
    `skip_unset_env` leaves references to unset names as written (`$X`, `${X:-a}`), and
    `case_insensitive` matches names like Windows does (`$pwd` finds `PWD`).
    """

    def __init__(
        self,
        escape_token: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
        case_insensitive: bool = False,
    ) -> None:
        if len(escape_token) != 1:
            raise ValueError(f"escape token must be one character, got {escape_token!r}")
        self.escape_token = escape_token
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env
        self.case_insensitive = case_insensitive

    def process(self, word: str, env: Mapping[str, str] | Iterable[str]) -> ProcessWordResult:
        """Expand `word`; the result string, its words, and which names were (not) found."""
        sw = _ShellWord(self, word, build_envs(env, self.case_insensitive))
        try:
            result, words = sw.process_stop_on(EOF, self.raw_escapes)
        except ShellError as err:
            raise ShellError(f"failed to process {quote(word)}: {err}") from None
        return ProcessWordResult(result, words, sw.matches, sw.nonmatches)

    def process_word(self, word: str, env: Mapping[str, str] | Iterable[str]) -> str:
        """Expand `word` into one string, keeping all whitespace (ProcessWord)."""
        return self.process(word, env).result

    def process_words(self, word: str, env: Mapping[str, str] | Iterable[str]) -> list[str]:
        """Expand `word` and split it into words; empty words are dropped (ProcessWords)."""
        return self.process(word, env).words

    def process_word_with_matches(
        self, word: str, env: Mapping[str, str] | Iterable[str]
    ) -> tuple[str, set[str]]:
        """Expand `word`; also return the names it used that `env` defines (ProcessWordWithMatches)."""
        res = self.process(word, env)
        return res.result, res.matched


class _Words:
    """Splits the expanded text into words while it is being built (upstream's wordsStruct)."""

    def __init__(self) -> None:
        self.parts: list[str] = []  # the word being built
        self.size = 0  # its length: an empty quoted string adds a part but no word
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if not is_space(ch):
            self.add_raw_string(ch)
        elif self.in_word and self.size:
            self._end_word()

    def add_raw_string(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def get_words(self) -> list[str]:
        if self.size:
            self._end_word()
        return self.words

    def _end_word(self) -> None:
        self.words.append("".join(self.parts))
        self.parts, self.size, self.in_word = [], 0, False


class _ShellWord:
    """One expansion: a character scanner over the word plus the state the modifiers need."""

    def __init__(self, lex: Lex, word: str, envs: dict[str, str]) -> None:
        self.lex = lex
        self.envs = envs
        self.raw_escapes = lex.raw_escapes
        self.matches: set[str] = set()
        self.nonmatches: set[str] = set()
        self.text = _scanned(word)
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else EOF

    def next(self) -> str:
        ch = self.peek()
        if ch != EOF:
            self.pos += 1
        return ch

    def process_stop_on(self, stop_char: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Expand up to `stop_char` (consumed) or the end of the text; EOF means 'to the end'."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._process_stop_on(stop_char)
        finally:
            self.raw_escapes = saved

    def _process_stop_on(self, stop_char: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        handlers = {"$": self.process_dollar}
        if not self.lex.skip_process_quotes:
            handlers["'"] = self.process_single_quote
            handlers['"'] = self.process_double_quote
        while self.peek() != EOF:
            ch = self.peek()
            if stop_char != EOF and ch == stop_char:
                self.next()
                return "".join(result), words.get_words()
            if ch in handlers:
                text = handlers[ch]()
                result.append(text)
                if ch == "$":
                    words.add_string(text)  # whitespace from a variable splits words
                else:
                    words.add_raw_string(text)  # a quoted span never does
                continue
            ch = self.next()
            if ch == self.lex.escape_token:
                if self.raw_escapes:
                    words.add_raw_string(ch)
                    result.append(ch)
                ch = self.next()
                if ch == EOF:
                    break  # an escape token at the very end is dropped
                words.add_raw_string(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop_char != EOF:
            raise ShellError(f"unexpected end of statement while looking for matching {stop_char}")
        return "".join(result), words.get_words()

    def process_single_quote(self) -> str:
        # Everything up to the next ' is literal; a single quote cannot be escaped inside.
        result = []
        ch = self.next()
        if self.lex.raw_quotes:
            result.append(ch)
        while True:
            ch = self.next()
            if ch == EOF:
                raise ShellError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def process_double_quote(self) -> str:
        # Literal except `$`, and the escape token, which only escapes `"`, `$` and itself.
        result = []
        ch = self.next()
        if self.lex.raw_quotes:
            result.append(ch)
        while True:
            ch = self.peek()
            if ch == EOF:
                raise ShellError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if ch == "$":
                result.append(self.process_dollar())
                continue
            ch = self.next()
            if ch == self.lex.escape_token:
                if self.raw_escapes:
                    result.append(ch)
                following = self.peek()
                if following == EOF:
                    continue  # the loop then reports the missing quote
                if following in ('"', "$", self.lex.escape_token):
                    ch = self.next()
            result.append(ch)

    def process_dollar(self) -> str:
        self.next()  # the $
        if self.peek() != "{":  # $NAME
            name = self.process_name()
            if name == "":
                return "$"
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "$" + name
            return value

        self.next()  # the {
        if self.peek() == EOF:
            raise ShellError("syntax error: missing '}'")
        if self.peek() in ("{", "}", ":"):  # ${{x}, ${}, ${:x}
            raise ShellError("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        chs = ch or "\ufffd"  # upstream prints the end of input as U+FFFD in its messages
        null_is_unset = False

        if ch == "}":  # ${NAME}
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch == "/":
            return self._substitute(name)
        if ch == ":":  # ${NAME:-w}, ${NAME:+w}, ${NAME:?w}: an empty value counts as unset
            null_is_unset = True
            ch = self.next()
            chs += ch or "\ufffd"
        elif ch not in ("+", "-", "?", "#", "%"):
            raise ShellError(f"unsupported modifier ({chs}) in substitution")

        raw_escapes = ch in ("#", "%")  # patterns keep their escapes for the pattern compiler
        if null_is_unset and raw_escapes:
            raise ShellError(f"unsupported modifier ({chs}) in substitution")
        word = self._stop_on_brace("}", raw_escapes, "syntax error: missing '}'")
        value, found = self.get_env(name)
        if self.lex.skip_unset_env and not found:
            return "${" + name + chs + word + "}"

        if ch == "-":
            return word if not found or (null_is_unset and value == "") else value
        if ch == "+":
            return "" if not found or (null_is_unset and value == "") else word
        if ch == "?":
            if not found:
                raise ShellError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ShellError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in ("#", "%"):  # shortest match; ## and %% the longest
            greedy = word.startswith(ch)
            if greedy:
                word = word[1:]
            return trim_suffix(word, value, greedy) if ch == "%" else trim_prefix(word, value, greedy)
        raise ShellError(f"unsupported modifier ({chs}) in substitution")

    def _substitute(self, name: str) -> str:
        """${NAME/pattern/replacement} replaces the first match, ${NAME//pattern/replacement} all."""
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern = self._stop_on_brace("/", True, "syntax error: missing '/' in ${}")
        replacement = self._stop_on_brace("}", True, "syntax error: missing '}'")
        value, found = self.get_env(name)
        if self.lex.skip_unset_env and not found:
            return "${" + name + ("//" if replace_all else "/") + pattern + "/" + replacement + "}"
        program = compile_substitution_pattern(pattern, greedy=True)
        if replace_all:
            return _go_replace_all(program, value, replacement)
        m = search(program, value)
        return value if m is None else value[: m[0]] + replacement + value[m[1] :]

    def _stop_on_brace(self, stop_char: str, raw_escapes: bool, missing: str) -> str:
        """process_stop_on, reporting running off the end of the text as `missing`."""
        try:
            return self.process_stop_on(stop_char, raw_escapes)[0]
        except ShellError:
            if self.peek() == EOF:
                raise ShellError(missing) from None
            raise

    def process_name(self) -> str:
        # A name is letters, digits and _; or a run of digits (positional); or one special parameter.
        name: list[str] = []
        while self.peek() != EOF:
            ch = self.peek()
            if not name and _is_digit(ch):
                while self.peek() != EOF and _is_digit(self.peek()):
                    name.append(self.next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                return self.next()
            if not _is_name_char(ch):
                break
            name.append(self.next())
        return "".join(name)

    def get_env(self, name: str) -> tuple[str, bool]:
        key = upper(name) if self.lex.case_insensitive else name
        if key in self.envs:
            self.matches.add(name)
            return self.envs[key], True
        self.nonmatches.add(name)
        return "", False


# --- ${NAME#pattern}, ${NAME%pattern}, ${NAME/pattern/repl}: shell wildcards, matched like Go's regexp ---
#
# Upstream turns the pattern into a Go regexp (convertShellPatternToRegex) and uses its leftmost-first
# match. Go's engine (RE2) takes linear time; Python's re backtracks, and `${X#*a*a*a*a*b}` on a long
# value would stall the build. So the pattern compiles to a tiny program run by a Pike VM, the
# algorithm RE2 uses for match positions: all threads advance together, in priority order.


def compile_substitution_pattern(pattern: str, greedy: bool) -> tuple[tuple, ...]:
    """The program for a `*`/`?` wildcard pattern (no bracket expressions).

    `*` is the longest (`greedy`) or the shortest run of characters, `?` one character (neither
    matches a newline, as `.` in a regexp); `\\` escapes `*`, `?` and `\\` and is dropped before
    `}` and `/`; any other escape is an error. Instructions: ("char", c), ("any",), ("split", x, y)
    (try x first, then y), ("jmp", x), ("match",).
    """
    text = _scanned(pattern)
    program: list[tuple] = []
    i = 0
    while i < len(text):
        tok = text[i]
        i += 1
        if tok == "*":
            n = len(program)  # n: split, n+1: any, n+2: back to n; n+3 is what follows
            program += [("split", n + 1, n + 3) if greedy else ("split", n + 3, n + 1), ("any",), ("jmp", n)]
        elif tok == "?":
            program.append(("any",))
        elif tok == "\\":
            following = text[i] if i < len(text) else EOF
            if following in ("}", "/"):
                continue  # `\}` and `\/` only protect the character from ending the ${...}
            if following not in ("*", "?", "\\"):
                bad = f"invalid escape '\\{following or chr(0xFFFD)}'"
                raise ShellError(f"invalid pattern ({pattern}) in substitution: {bad}")
            program.append(("char", following))
            i += 1
        else:
            program.append(("char", tok))
    program.append(("match",))
    return tuple(program)


def search(
    program: tuple[tuple, ...], text: str, pos: int = 0, anchored: bool = False
) -> tuple[int, int] | None:
    """(start, end) of the leftmost-first match of `program` in text[pos:], or None."""
    found = None
    threads: list[tuple[int, int]] = []  # (instruction, start of the match), highest priority first
    seen: set[int] = set()
    for at in range(pos, len(text) + 1):
        if found is None and (at == pos or not anchored):
            _add_thread(program, threads, seen, 0, at)  # a match starting here has the lowest priority
        if not threads:
            if found is not None or anchored:
                break
            continue
        ch = text[at] if at < len(text) else EOF
        following: list[tuple[int, int]] = []
        following_seen: set[int] = set()
        for pc, start in threads:
            op = program[pc]
            if op[0] == "match":
                found = (start, at)
                break  # the threads after this one could only find a lower-priority match
            if ch != EOF and (op[0] == "any" and ch != "\n" or op[0] == "char" and ch == op[1]):
                _add_thread(program, following, following_seen, pc + 1, start)
        threads, seen = following, following_seen
    return found


def _add_thread(program: tuple[tuple, ...], threads: list, seen: set[int], pc: int, start: int) -> None:
    """Follow jumps and splits from `pc` (in priority order) to the instructions that read or match."""
    if pc in seen:
        return
    seen.add(pc)
    op = program[pc]
    if op[0] == "split":
        _add_thread(program, threads, seen, op[1], start)
        _add_thread(program, threads, seen, op[2], start)
    elif op[0] == "jmp":
        _add_thread(program, threads, seen, op[1], start)
    else:
        threads.append((pc, start))


def trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    """${value#pattern} (`greedy`: ##): remove the shortest (longest) leading match of `pattern`."""
    m = search(compile_substitution_pattern(pattern, greedy), value, anchored=True)
    return value if m is None else value[m[1] :]


def trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    """${value%pattern} (`greedy`: %%): remove the shortest (longest) trailing match of `pattern`.

    A regular expression cannot find the shortest rightmost match, so search the reversed value
    with the reversed pattern from the left instead.
    """
    value = replace_invalid(value)  # upstream reverses it as runes, which turns invalid bytes into U+FFFD
    return trim_prefix(reverse_pattern(pattern), value[::-1], greedy)[::-1]


def reverse_pattern(pattern: str) -> str:
    """Reverse a pattern, keeping each escape before the character it escapes (`a\\*c` -> `c\\*a`)."""
    units = []
    i = 0
    while i < len(pattern):
        width = 2 if pattern[i] == "\\" and i != len(pattern) - 1 else 1
        units.append(pattern[i : i + width])
        i += width
    return "".join(reversed(units))


def _go_replace_all(program: tuple[tuple, ...], value: str, template: str) -> str:
    """Go's Regexp.ReplaceAllString: an empty match right after a match is not replaced, and
    `$0`/`${0}` in the replacement insert the match (the pattern has no other groups)."""
    out = []
    last_end = 0
    pos = 0
    while pos <= len(value):
        m = search(program, value, pos)
        if m is None:
            break
        start, end = m
        out.append(value[last_end:start])
        if end > last_end or start == 0:
            out.append(_go_expand(template, value[start:end]))
        last_end = end
        pos = pos + 1 if pos + 1 > end else end  # always advance at least one character
    out.append(value[last_end:])
    return "".join(out)


def _go_expand(template: str, match: str) -> str:
    """Go's Regexp.Expand for a pattern without groups: `$$` is `$`, `$0` the match, other names ""."""
    out = []
    i = 0
    while (dollar := template.find("$", i)) >= 0:
        out.append(template[i:dollar])
        i = dollar + 1
        if template.startswith("$", i):
            out.append("$")
            i += 1
            continue
        brace = template.startswith("{", i)
        start = end = i + brace
        while end < len(template) and _is_name_char(template[end]):
            end += 1
        if end == start or (brace and not template.startswith("}", end)):
            out.append("$")  # not a reference: the $ is literal
            continue
        if template[start:end] == "0":
            out.append(match)
        i = end + brace
    out.append(template[i:])
    return "".join(out)
