"""Unit tests for minibuild.dockerfile.shell (beyond upstream's two tables, see test_shell_conformance.py)."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibuild.dockerfile.errors import DockerfileError
from minibuild.dockerfile.gotext import is_space
from minibuild.dockerfile.shell import (
    Lex,
    ShellError,
    build_envs,
    compile_substitution_pattern,
    reverse_pattern,
    search,
    trim_prefix,
    trim_suffix,
)

LEX = Lex()

# no per-example deadline: the machine may be loaded; generation may be slow there too
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def expand(word: str, **env: str) -> str:
    return LEX.process_word(word, env)


def error_of(word: str, lex: Lex = LEX, **env: str) -> str:
    with pytest.raises(ShellError) as info:
        lex.process_word(word, env)
    return str(info.value)


# --- ${NAME<modifier>word}: which names were used -------------------------------------------------

ENV = {"FOO": "xxx", "BAR": ""}


@pytest.mark.parametrize(
    "word,expected,matched,unmatched",
    [
        ("x", "x", set(), set()),
        ("x ${UNUSED}", "x ", set(), {"UNUSED"}),
        ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", "xxx  ccc", {"FOO", "BAR"}, {"BAZ"}),
        ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", "xxx bbb ccc", {"FOO", "BAR"}, {"BAZ"}),
        ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", "aaa bbb ", {"FOO", "BAR"}, {"BAZ"}),
        ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", "aaa  ", {"FOO", "BAR"}, {"BAZ"}),
        ("${FOO?aaa} ${BAR?bbb}", "xxx ", {"FOO", "BAR"}, set()),
        ("${FOO:?aaa}", "xxx", {"FOO"}, set()),
        ("${FOO:-}${ABC:-.}", "xxx.", {"FOO"}, {"ABC"}),
        ("$FOO$1$@", "xxx", {"FOO"}, {"1", "@"}),
    ],
)
def test_modifiers_and_matches(word, expected, matched, unmatched):
    res = LEX.process(word, ENV)
    assert (res.result, res.matched, res.unmatched) == (expected, matched, unmatched)
    assert LEX.process_word_with_matches(word, ENV) == (expected, matched)


@pytest.mark.parametrize(
    "word,message",
    [
        ("${BAZ?ccc}", "BAZ: ccc"),
        ("${BAZ?}", "BAZ: is not allowed to be unset"),
        ("${BAR:?bbb}", "BAR: bbb"),
        ("${BAR:?}", "BAR: is not allowed to be empty"),
        ("${BAZ:?}", "BAZ: is not allowed to be unset"),
        ("${BAZ:?$FOO here}", "BAZ: xxx here"),  # the message is expanded too
    ],
)
def test_mandatory_values(word, message):
    assert error_of(word, **ENV) == f'failed to process "{word}": {message}'


@pytest.mark.parametrize(
    "word,message",
    [
        ('"abc', "unexpected end of statement while looking for matching double-quote"),
        ('"abc\\', "unexpected end of statement while looking for matching double-quote"),
        ("'abc", "unexpected end of statement while looking for matching single-quote"),
        ("${", "syntax error: missing '}'"),
        ("${a:-b", "syntax error: missing '}'"),
        ("${a:-'}", "syntax error: missing '}'"),
        ("${}", "syntax error: bad substitution"),
        ("${:a}", "syntax error: bad substitution"),
        ("${{a}", "syntax error: bad substitution"),
        ("${a:=b}", "unsupported modifier (:=) in substitution"),
        ("${a=b}", "unsupported modifier (=) in substitution"),
        ("${a.b}", "unsupported modifier (.) in substitution"),
        ("${a:#b}", "unsupported modifier (:#) in substitution"),
        ("${a:%b}", "unsupported modifier (:%) in substitution"),
        ("${a", "unsupported modifier (\ufffd) in substitution"),  # upstream's wording for the end
        ("${a/b", "syntax error: missing '/' in ${}"),
        ("${a/b/c", "syntax error: missing '}'"),
    ],
)
def test_error_messages(word, message):
    msg = error_of(word, a="1")
    assert msg.startswith("failed to process ")
    assert msg.endswith(": " + message)


def test_error_quotes_the_word_like_go():
    assert error_of('"\t한\x00') == (
        'failed to process "\\"\\t한\\x00": '
        "unexpected end of statement while looking for matching double-quote"
    )


def test_shell_error_is_a_dockerfile_error():
    assert issubclass(ShellError, DockerfileError)


# --- quotes, escapes, words ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "word,expected",
    [
        ("a\\ b", "a b"),
        ('"a\\b"', "a\\b"),  # inside double quotes only \" \$ \\ are escapes
        ('"a\\"b\\$c\\\\"', 'a"b$c\\'),
        ("'a\\'", "a\\"),
        ("\"$FOO\"'$FOO'", "xxx$FOO"),
        ("$", "$"),
        ("$ x", "$ x"),
        ("\ufeff$FOO", "xxx"),  # Go's text/scanner skips a leading byte-order mark
        ("a\ufeff$FOO", "a\ufeffxxx"),
    ],
)
def test_quotes_and_escapes(word, expected):
    assert LEX.process_word(word, ENV) == expected


@pytest.mark.parametrize(
    "word,expected",
    [
        ("a  b", ["a", "b"]),
        ('a"  "b', ["a  b"]),
        ("a\\ \\ b", ["a  b"]),
        ("\"\" x ''", ["x"]),  # empty words are dropped
        ("$SP", ["a", "b"]),
        ('"$SP"', [" a  b "]),
        ("x${SP}y", ["x", "a", "b", "y"]),
        ("${NOPE:-a b}", ["a", "b"]),
        ("a\u3000b\x1cc", ["a", "b\x1cc"]),  # Go's whitespace, not Python's
    ],
)
def test_word_splitting(word, expected):
    assert LEX.process_words(word, {"SP": " a  b "}) == expected


def test_backtick_escape_token():
    lex = Lex("`")
    assert lex.process_word("C:\\dir\\$X", {"X": "file"}) == "C:\\dir\\file"
    assert lex.process_word("a`$X` b", {"X": "file"}) == "a$X b"
    assert lex.process_word('"a`"b``"', {}) == 'a"b`'
    assert lex.process_words("a` b c", {}) == ["a b", "c"]


def test_backslash_in_patterns_stays_the_pattern_escape_with_backtick_token():
    # upstream's pattern compiler always uses \, whatever the escape token
    assert Lex("`").process_word("${X%\\*}", {"X": "ab*"}) == "ab"


def test_options():
    env = {"SET": "v"}
    assert Lex(raw_quotes=True).process_word("'a'\"$SET\"", env) == "'a'\"v\""
    assert Lex(raw_escapes=True).process_word("a\\ b", env) == "a\\ b"
    assert Lex(skip_process_quotes=True).process_word("'$SET'", env) == "'v'"
    skip = Lex(skip_unset_env=True)
    assert skip.process_word("$SET $NO ${NO} ${NO:-d} ${NO/a/b} ${NO//a/b}", env) == (
        "v $NO ${NO} ${NO:-d} ${NO/a/b} ${NO//a/b}"
    )


def test_environment_forms():
    assert build_envs(["A=1", "B", "A=2", "C=x=y"]) == {"A": "2", "B": "", "C": "x=y"}
    assert build_envs({"pwd": "/"}, case_insensitive=True) == {"PWD": "/"}
    assert LEX.process_word("$A$B$C", ["A=1", "B", "A=2", "C=x=y"]) == "2x=y"
    assert LEX.process("$B", ["B"]).matched == {"B"}
    assert Lex(case_insensitive=True).process_word("$path", {"PATH": "/bin"}) == "/bin"
    assert LEX.process_word("$path", {"PATH": "/bin"}) == ""
    with pytest.raises(TypeError):
        LEX.process_word("$A", "A=1")


def test_unicode_names_and_values():
    assert LEX.process_word("${한국어}-$KOREAN", {"한국어": "ok", "KOREAN": "한국어"}) == "ok-한국어"


# --- ${NAME#pattern}, ${NAME%pattern}, ${NAME/pattern/replacement} --------------------------------


@pytest.mark.parametrize(
    "word,env,expected",
    [
        ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
        ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
        ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
        ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
        ("${FOO##*}", {"FOO": "xxyy"}, ""),
        ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
        ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
        ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
        ("${FOO%y*}", {"FOO": "xyxy"}, "xyx"),
        ("${FOO%%y*}", {"FOO": "xyxy"}, "x"),
        ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
        ("${FOO%}${FOO#}", {"FOO": "ab"}, "abab"),
        ("${NOPE#a}", {}, ""),
        ("${FOO%.*}", {"FOO": "archive.tar.gz"}, "archive.tar"),
        ("${FOO%%.*}", {"FOO": "archive.tar.gz"}, "archive"),
        ("${FOO#*.}", {"FOO": "archive.tar.gz"}, "tar.gz"),
        ("${FOO/$N/.} - ${FOO//$N/.}", {"FOO": "/foo*/*/*.txt", "N": "\\*/"}, "/foo.*/*.txt - /foo..*.txt"),
        ("${FOO/$N/} - ${FOO//$N/}", {"FOO": "/tmp/tmp/bar.txt", "N": "/tmp"}, "/tmp/bar.txt - /bar.txt"),
        (
            "${FOO/$N/$R} - ${FOO//$N/$R}",
            {"FOO": "/a/foo/b/c.txt", "N": "/?/", "R": "/"},
            "/foo/b/c.txt - /foo/c.txt",
        ),
        ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
        ("${FOO/$N/ww}", {"FOO": "xxyy", "N": ""}, "wwxxyy"),
        ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
        ("${FOO///}", {}, ""),
        ("${FOO/a*/b}", {"FOO": "xaaa"}, "xb"),  # * is greedy in substitutions
    ],
)
def test_pattern_modifiers(word, env, expected):
    assert LEX.process_word(word, env) == expected


def test_replace_all_follows_go_not_python():
    # Go skips an empty match right after a match (Python's re.sub would give "--")
    assert expand("${FOO//*/-}", FOO="ab") == "-"
    assert expand("${FOO//*/-}", FOO="") == "-"
    assert expand("${FOO//?/-}", FOO="ab") == "--"
    # Go's ReplaceAllString expands $0 (the match) in the replacement; a single replacement does not
    assert expand("${FOO//o/$R}", FOO="foo", R="<$0>") == "f<o><o>"
    assert expand("${FOO/o/$R}", FOO="foo", R="<$0>") == "f<$0>o"
    assert expand("${FOO//o/$R}", FOO="foo", R="$$|$1|${0}|$x|${0|$") == "f$||o||${0|$$||o||${0|$"
    assert expand("${FOO//o/\\$0}", FOO="foo") == "f\\o\\o"


@pytest.mark.parametrize(
    "word,message",
    [
        ("${FOO#\\x}", "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
        ("${FOO#$P}", "invalid pattern (a\\) in substitution: invalid escape '\\\ufffd'"),
        ("${FOO/\\a/b}", "invalid pattern (\\a) in substitution: invalid escape '\\a'"),
    ],
)
def test_bad_patterns(word, message):
    assert error_of(word, FOO="x", P="a\\").endswith(": " + message)


@pytest.mark.parametrize(
    "pattern,reversed_", [("a\\*c", "c\\*a"), ("\\\\\\ab", "b\\a\\\\"), ("ab\\", "\\ba"), ("\\\\b", "b\\\\")]
)
def test_reverse_pattern(pattern, reversed_):
    assert reverse_pattern(pattern) == reversed_


# --- properties ------------------------------------------------------------------------------------

plain_text = st.text(st.characters(blacklist_characters="$'\"\\", blacklist_categories=("Cs",))).filter(
    lambda s: not s.startswith("\ufeff")
)


@PROPERTY
@given(plain_text)
def test_plain_text_is_unchanged(text):
    assert LEX.process_word(text, {"A": "1"}) == text
    assert LEX.process_words(text, {}) == [w for w in _go_split(text) if w]


def _go_split(text: str) -> list[str]:
    words, word = [], []
    for ch in text:
        if is_space(ch):
            words.append("".join(word))
            word = []
        else:
            word.append(ch)
    return [*words, "".join(word)]


@PROPERTY
@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_values_are_inserted_verbatim(value):
    env = {"V": value}
    assert LEX.process_word("$V", env) == value
    assert LEX.process_word('"${V}"', env) == value
    assert LEX.process_words('"$V"', env) == ([value] if value else [])
    assert LEX.process_words("$V", env) == [w for w in _go_split(value) if w]


literal = st.text(st.characters(blacklist_characters="*?\\\ufeff", blacklist_categories=("Cs",)))


@PROPERTY
@given(literal, literal)
def test_literal_patterns_trim_like_str_methods(pattern, value):
    for greedy in (False, True):
        assert trim_prefix(pattern, value, greedy) == value.removeprefix(pattern)
        assert trim_suffix(pattern, value, greedy) == value.removesuffix(pattern)


def test_invalid_utf8_reads_as_go_does():
    # Dockerfiles are decoded with surrogateescape; Go's scanner reads each bad byte as U+FFFD,
    # while values are inserted as they are (and ${V%x} reverses them as runes upstream).
    env = {"V": "\udce9x"}
    assert LEX.process_word("a\udce9$V", env) == "a\ufffd\udce9x"
    assert LEX.process_word("${V#?}", env) == "x"
    assert LEX.process_word("${V%x}", env) == "\ufffd"
    assert error_of("'\udce9") == (
        'failed to process "\'\\xe9": unexpected end of statement while looking for matching single-quote'
    )


def reference_regex(pattern: str, greedy: bool) -> str:
    """Upstream's convertShellPatternToRegex for patterns without escapes, in Python's syntax."""
    star = ".*" if greedy else ".*?"
    return "".join(star if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


@PROPERTY
@given(st.text("ab*?", max_size=6), st.text("ab\n", max_size=8), st.booleans(), st.booleans())
def test_pike_vm_finds_what_a_backtracking_regexp_finds(pattern, text, greedy, anchored):
    regex = re.compile(reference_regex(pattern, greedy))
    expected = regex.match(text) if anchored else regex.search(text)
    got = search(compile_substitution_pattern(pattern, greedy), text, anchored=anchored)
    assert got == (expected.span() if expected else None)


def test_no_backtracking_blowup():
    # exponential for a backtracking regexp engine, linear here
    assert expand("${X#" + "*a" * 15 + "*b}", X="a" * 300) == "a" * 300
    assert expand("${X%%" + "*a" * 15 + "*b}", X="a" * 300 + "b") == ""
    assert expand("${X//" + "*a" * 15 + "*b/-}", X="a" * 300) == "a" * 300
