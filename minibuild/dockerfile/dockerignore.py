""".dockerignore files and path patterns (moby patternmatcher: patternmatcher.go, ignorefile/ignorefile.go).

The client, not the daemon, applies .dockerignore: it leaves matching files out of the context
tar (`walk_context`, as the docker CLI's archive walk does). A pattern is a path relative to the
context root in which `*` matches any run of characters except `/`, `?` one such character,
`[...]` a character class, `**` any number of directories (also none) and `\\` escapes the next
character. A pattern also excludes everything below a directory it matches. Patterns starting
with `!` are exceptions that include paths again; the last pattern that matches a path wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from enum import Enum

from minibuild.dockerfile.gotext import replace_invalid, trim_space

_MAX_LINE_BYTES = 64 * 1024  # bufio.Scanner's token limit: a longer line is an error, not a pattern


class DockerignoreError(ValueError):
    """A .dockerignore that cannot be used: a malformed pattern, a lone `!`, a line over 64 KiB."""


class ContextError(OSError):
    """The context directory cannot be walked (a directory that is missing or cannot be read)."""


def read_ignore_file(content: str | bytes) -> list[str]:
    """The patterns of a .dockerignore file, in order (ignorefile.ReadAll).

    A line whose first character is `#` is a comment; other lines are trimmed, blank ones skipped.
    Each pattern is cleaned like a path, with one leading `/` removed, since patterns are relative
    to the context root; a leading `!` (exception) is kept in front. Bytes are decoded as UTF-8,
    undecodable bytes kept as os.fsdecode keeps them, so they still match the same file names.
    """
    if isinstance(content, bytes):
        content = content.decode("utf-8", "surrogateescape")
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()  # the text ended with a newline: no further line
    patterns = []
    for number, line in enumerate(lines):
        if len(line.encode("utf-8", "surrogateescape")) >= _MAX_LINE_BYTES:
            raise DockerignoreError("error reading .dockerignore: bufio.Scanner: token too long")
        line = line.removesuffix("\r")
        if number == 0:
            line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
        if line.startswith("#"):  # checked before trimming: " # x" is a pattern
            continue
        pattern = trim_space(line)
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = trim_space(pattern[1:])
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def clean(path: str) -> str:
    """Go's filepath.Clean on a slash-separated path: the shortest equivalent path (`a/./b/../c` -> `a/c`).

    Unlike posixpath.normpath, a leading `//` becomes `/` and `..` at the root is dropped (`/..` -> `/`).
    """
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."


def _parent_dirs(path: str) -> list[str]:
    """The directories above `path`, outermost first (`a/b/c` -> `a`, `a/b`); none for `c`."""
    parent = clean(path[: path.rfind("/") + 1])  # Go's filepath.Dir
    if parent == ".":
        return []
    parts = parent.split("/")
    return ["/".join(parts[: n + 1]) for n in range(len(parts))]


class MatchType(Enum):
    """How a pattern is matched: most patterns need no automaton at all."""

    EXACT = "exact"  # no wildcard: path == pattern
    PREFIX = "prefix"  # `dir/**`: path starts with `dir/`
    SUFFIX = "suffix"  # `**/name`: path ends with `/name` or is `name`
    REGEXP = "regexp"  # anything else: run the compiled automaton


class Pattern:
    """One cleaned pattern (without its `!`), compiled once."""

    def __init__(self, cleaned_pattern: str, exclusion: bool) -> None:
        self.cleaned_pattern = cleaned_pattern
        self.exclusion = exclusion
        self.match_type, self.program = _compile(cleaned_pattern)

    def __repr__(self) -> str:
        return f"Pattern({'!' if self.exclusion else ''}{self.cleaned_pattern})"

    def match(self, path: str) -> bool:
        """Whether the slash-separated `path` itself matches (no parent directories considered)."""
        if self.match_type is MatchType.EXACT:
            return path == self.cleaned_pattern
        if self.match_type is MatchType.PREFIX:
            return path.startswith(self.cleaned_pattern[:-2])  # without the trailing **
        if self.match_type is MatchType.SUFFIX:
            suffix = self.cleaned_pattern[2:]  # without the leading **
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        return self.program.fullmatch(path)


class _Op(Enum):
    """The instructions a pattern compiles to. Upstream builds a Go regexp; each instruction is the
    piece of that regexp named on its right, and matches exactly what that piece matches."""

    LIT = "lit"  # one given character (the instruction's argument)
    ANY = "any"  # ?       [^/]
    CLASS = "class"  # [...]  a character class; arguments: negated, ((lo, hi), ...)
    STAR = "star"  # *     [^/]*
    DIRS = "dirs"  # **/   (.*/)?  -- an entry, then DIRS_LOOP
    DIRS_LOOP = "dirs-loop"
    REST = "rest"  # trailing ** after a wildcard: .*
    START = "start"  # ^   left unescaped upstream: an anchor, true only before the first character


def _compile(pattern: str) -> tuple[MatchType, _Automaton | None]:
    """Classify `pattern` and, if it needs one, compile its automaton (Pattern.compile).

    Raises DockerignoreError ("syntax error in pattern", Go's filepath.ErrBadPattern) for an
    unterminated or empty `[...]`, a bad range, or a trailing `\\`.
    """
    # Go's regexp reads each invalid UTF-8 byte as U+FFFD, in the pattern as in the path (see fullmatch).
    pattern = replace_invalid(pattern)
    program: list[tuple] = []
    kind = MatchType.EXACT
    i = 0  # characters consumed
    first = True
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*" and pattern.startswith("*", i):  # ** : any number of directories
            i += 1
            if pattern.startswith("/", i):
                i += 1  # **/ is the same as **
            if i == len(pattern):  # trailing **: everything below
                if kind is MatchType.EXACT:
                    kind = MatchType.PREFIX
                else:
                    program.append((_Op.REST,))
                    kind = MatchType.REGEXP
            else:
                program += [(_Op.DIRS,), (_Op.DIRS_LOOP,)]
                kind = MatchType.REGEXP
            if first:
                kind = MatchType.SUFFIX  # a later wildcard turns it into REGEXP again
        elif ch == "*":
            program.append((_Op.STAR,))
            kind = MatchType.REGEXP
        elif ch == "?":
            program.append((_Op.ANY,))
            kind = MatchType.REGEXP
        elif ch == "\\":
            if i == len(pattern):
                raise DockerignoreError("syntax error in pattern")
            # An escaped character is literal, as filepath.Match says. (Upstream hands `\x` to Go's
            # regexp, so `\d`-style escapes there mean character classes; no .dockerignore relies on it.)
            program.append((_Op.LIT, pattern[i]))
            i += 1
            kind = MatchType.REGEXP
        elif ch == "[":
            negated, ranges, i = _bracket(pattern, i)
            program.append((_Op.CLASS, negated, ranges))
            kind = MatchType.REGEXP
        elif ch == "]":
            program.append((_Op.LIT, ch))
            kind = MatchType.REGEXP
        elif ch == "^":
            program.append((_Op.START,))
        else:
            program.append((_Op.LIT, ch))
        first = False
    if kind is not MatchType.REGEXP:
        return kind, None
    return kind, _Automaton(tuple(program))


def _bracket(pattern: str, i: int) -> tuple[bool, tuple[tuple[str, str], ...], int]:
    """Parse the class starting after the `[` at pattern[i-1]: (negated, ranges, index past `]`).

    Syntax as filepath.Match: optional `^` (negation), then one or more characters or ranges
    `lo-hi`, where `\\` escapes a character and `-` or `]` must be escaped. Upstream passes the
    class to Go's regexp, which also rejects a reversed range (`[z-a]`); so do we, when compiling.
    Classes mean what filepath.Match says; upstream's regexp also reads `[[:alpha:]]`-style classes.
    """
    negated = pattern.startswith("^", i)
    i += negated
    ranges = []
    while not (pattern.startswith("]", i) and ranges):
        lo, i = _class_char(pattern, i)
        hi = lo
        if pattern.startswith("-", i):
            hi, i = _class_char(pattern, i + 1)
            if hi < lo:
                raise DockerignoreError("syntax error in pattern")
        ranges.append((lo, hi))
    return negated, tuple(ranges), i + 1


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) character of a class; `-`, `]` and the end of the pattern are errors."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise DockerignoreError("syntax error in pattern")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise DockerignoreError("syntax error in pattern")
    return pattern[i], i + 1


class _Automaton:
    """Runs a compiled pattern over a path in linear time, as Go's RE2 engine does.

    Python's re backtracks: `*a*a*a*a*b` or `**/**/**/x` would take exponential time there. Here
    the automaton is in a set of states (instruction indexes) at once; each step computes the
    next set, and steps are cached, so a walk over many paths mostly does dictionary lookups.
    """

    def __init__(self, program: tuple[tuple, ...]) -> None:
        self.program = program
        self.start = self._closure({0}, at_start=True)
        self._steps: dict[tuple[frozenset[int], str], frozenset[int]] = {}

    def fullmatch(self, path: str) -> bool:
        states = self.start
        for ch in replace_invalid(path):
            key = (states, ch)
            following = self._steps.get(key)
            if following is None:
                following = self._steps[key] = self._step(states, ch)
            if not following:
                return False
            states = following
        return len(self.program) in states  # the index past the last instruction: matched

    def _step(self, states: frozenset[int], ch: str) -> frozenset[int]:
        """The states after reading `ch` (`.` never matches a newline; classes and `[^/]` do)."""
        after = set()
        for n in states:
            if n == len(self.program):
                continue
            op, *args = self.program[n]
            match op:
                case _Op.LIT if ch == args[0]:
                    after.add(n + 1)
                case _Op.ANY if ch != "/":
                    after.add(n + 1)
                case _Op.CLASS if any(lo <= ch <= hi for lo, hi in args[1]) != args[0]:
                    after.add(n + 1)
                case _Op.STAR if ch != "/":
                    after.add(n)
                case _Op.REST if ch != "\n":
                    after.add(n)
                case _Op.DIRS_LOOP if ch != "\n":
                    after.add(n)  # still inside .*
                    if ch == "/":
                        after.add(n + 1)  # ... or this was the / that ends (.*/)
        return self._closure(after, at_start=False)

    def _closure(self, states: set[int], at_start: bool) -> frozenset[int]:
        """Add the states reachable without reading a character."""
        todo, seen = list(states), set(states)
        while todo:
            n = todo.pop()
            match self.program[n][0] if n < len(self.program) else None:
                case _Op.STAR | _Op.REST:
                    targets: tuple[int, ...] = (n + 1,)  # zero repetitions
                case _Op.START if at_start:
                    targets = (n + 1,)
                case _Op.DIRS:
                    targets = (n + 1, n + 2)  # enter (.*/) or skip it
                case _:
                    continue
            for t in targets:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return frozenset(seen)


class PatternMatcher:
    """Decides which paths a list of .dockerignore patterns excludes (patternmatcher.New)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[Pattern] = []
        self.exclusions = False  # whether any pattern is a `!` exception
        for p in patterns:
            p = trim_space(p)
            if not p:
                continue
            p = clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise DockerignoreError('illegal exclusion pattern: "!"')
                p = p[1:]
                self.exclusions = True
            # Upstream finds regexp errors (a reversed range) only when the pattern is first used;
            # we compile here, so every bad pattern is reported before anything is matched.
            self.patterns.append(Pattern(p, exclusion))

    def matches(self, path: str) -> bool:
        """Whether `path` (slash-separated, relative) is excluded: a pattern matches it or one of its
        parent directories, and no later exception matches it (MatchesOrParentMatches)."""
        parents = _parent_dirs(path)
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # an inclusion cannot change a match, nor an exception a non-match
            if pattern.match(path) or any(pattern.match(parent) for parent in parents):
                matched = not pattern.exclusion
        return matched

    def matches_exact(self, path: str) -> bool:
        """Like `matches`, but parent directories are not considered (MatchesExact)."""
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion == matched and pattern.match(path):
                matched = not pattern.exclusion
        return matched

    def matches_using_parent_results(
        self, path: str, parent_matched: Sequence[bool] = ()
    ) -> tuple[bool, list[bool]]:
        """`matches` for a walk, reusing the results of `path`'s directory (MatchesUsingParentResults).

        Returns whether `path` is excluded and its own per-pattern results, to pass for its
        children. With no parent results, parent directories are matched as in `matches`. The
        docker CLI packs the context with this function, so its answers are the ones that count.
        """
        if parent_matched and len(parent_matched) != len(self.patterns):
            raise ValueError("wrong number of values in parentMatched")
        matched = False
        results = []
        for n, pattern in enumerate(self.patterns):
            match = bool(parent_matched) and parent_matched[n]
            if not match:
                if pattern.exclusion != matched:
                    results.append(False)
                    continue
                match = pattern.match(path)
                if not match and not parent_matched:
                    match = any(pattern.match(parent) for parent in _parent_dirs(path))
            results.append(match)
            if match:
                matched = not pattern.exclusion
        return matched, results

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception could include something inside excluded `directory`, so the walk
        must still enter it. Like upstream, only an exception that starts with `directory/` counts."""
        prefix = directory + "/"
        return any(p.exclusion and (p.cleaned_pattern + "/").startswith(prefix) for p in self.patterns)


def excluded(path: str, patterns: Iterable[str]) -> bool:
    """Whether .dockerignore `patterns` exclude `path` (patternmatcher.MatchesOrParentMatches).

    The context root itself (`.`) is never excluded.
    """
    pm = PatternMatcher(patterns)
    path = clean(path)
    return path != "." and pm.matches(path)


def walk_context(
    root: str | os.PathLike[str],
    patterns: Iterable[str],
    always: Sequence[str] = ("Dockerfile", ".dockerignore"),
) -> Iterator[str]:
    """The paths under `root` that go into the build context, as the docker CLI picks them.

    Yields slash-separated paths relative to `root`, directories included, depth first in name
    order (like Go's filepath.WalkDir); symbolic links are yielded, never followed. A directory
    that is excluded is not entered unless an exception pattern starts inside it. The files
    named in `always` (the Dockerfile and .dockerignore) are sent even if a pattern excludes them:
    the docker CLI adds an exception for each (TrimBuildFilesFromExcludes).
    """
    patterns = list(patterns)
    pm = PatternMatcher(patterns)
    # The CLI decides with its older, one-parent-deep Matches, which with contrived patterns
    # (`sub/Dockerfile`, `!sub`) still leaves the Dockerfile out; we ask what the walk would do.
    exceptions = ["!" + name for name in always if _walk_excludes(pm, clean(name))]
    if exceptions:
        pm = PatternMatcher(patterns + exceptions)
    top = os.fspath(root)
    stack = [(_read_dir(top, ""), [])]
    while stack:
        entries, parent_results = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        rel, is_dir = entry
        skip, results = pm.matches_using_parent_results(rel, parent_results)
        if skip and not (is_dir and pm.may_include_below(rel)):
            continue
        if not skip:
            yield rel
        if is_dir:
            stack.append((_read_dir(top, rel), results))


def _walk_excludes(pm: PatternMatcher, path: str) -> bool:
    """Whether the walk would leave out `path`, matching each directory above it on the way down."""
    results: list[bool] = []
    for step in [*_parent_dirs(path), path]:
        skip, results = pm.matches_using_parent_results(step, results)
    return skip


def _read_dir(top: str, rel: str) -> Iterator[tuple[str, bool]]:
    """The entries of directory `rel` as (relative path, is a real directory), sorted by name bytes."""
    path = os.path.join(top, rel) if rel else top
    try:
        with os.scandir(path) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    except OSError as err:
        raise ContextError(f"can't stat '{os.path.abspath(path)}'") from err
    entries.sort(key=lambda e: os.fsencode(e[0]))
    return ((f"{rel}/{name}" if rel else name, is_dir) for name, is_dir in entries)
