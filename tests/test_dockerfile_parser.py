"""The Dockerfile parser: lines, directives, continuations, flags, argument shapes, heredocs, the dumper."""

import io
import subprocess
import sys

import pytest

from minibuild.dockerfile import DockerfileError, ParseError, daemon_message, parse
from minibuild.dockerfile.gotext import parse_duration, quote
from minibuild.dockerfile.parser import extract_builder_flags, parse_json_array, parse_words


def dump(text: str | bytes) -> list[str]:
    return [f"({child.dump()})" for child in parse(text).ast.children]


def node(text: str | bytes, index: int = 0):
    return parse(text).ast.children[index]


# ---- physical and logical lines -------------------------------------------------------------------


def test_keyword_is_lowercased_and_arguments_kept():
    assert dump("FrOm\tubuntu:14.04 AS base\n") == ['(from "ubuntu:14.04" "AS" "base")']


def test_comments_and_blank_lines_are_skipped_and_lines_counted():
    ast = parse("# c\n\n  # indented comment\nFROM a\n\n\nRUN b\n").ast
    assert [(c.value, c.start_line, c.end_line) for c in ast.children] == [("from", 4, 4), ("run", 7, 7)]
    assert (ast.start_line, ast.end_line) == (4, 7)


def test_hash_inside_a_line_is_text():
    assert dump("RUN echo a # not a comment\n") == ['(run "echo a # not a comment")']


def test_crlf_and_missing_final_newline():
    assert dump(b"FROM a\r\nRUN b\r\r\nRUN c") == ['(from "a")', '(run "b")', '(run "c")']


def test_utf8_bom_is_dropped_only_at_the_start():
    assert dump(b"\xef\xbb\xbfFROM a\n") == ['(from "a")']
    assert dump("FROM a\n\ufeffRUN b\n")[1] == '(\ufeffrun "")'  # later, it is part of the keyword


def test_original_keeps_continuation_spacing_as_step_lines_show_it():
    # build API reference 5.2: `RUN a \` + `    && b` is shown as `RUN a     && b`
    assert node("RUN a \\\n    && b   \n").original == "RUN a     && b"


def test_continuation_rules():
    assert node("RUN echo hello  \\  \nworld\n").args == ["echo hello  world"]
    assert node("RUN a\\\\\nRUN b\n").args == ["a\\\\"]  # escaped escape: no continuation
    assert node("RUN a \\\n# comment \\\n\nb\n").args == ["a b"]
    assert node("RUN a \\\n\\\n  \\\nb\n").args == ["a   b"]


def test_lone_escape_line_starts_an_instruction():
    ast = parse("\\\nRUN x\n").ast
    assert [(c.value, c.args, c.start_line, c.end_line) for c in ast.children] == [("run", ["x"], 1, 2)]


def test_continuation_at_end_of_file_is_not_an_error():
    assert dump("FROM a\nRUN b \\") == ['(from "a")', '(run "b")']


def test_empty_continuation_lines_warn():
    result = parse("FROM a\nRUN a \\\n\n    b\nRUN c \\\n  # comment\n  d\n")
    assert [w.short for w in result.warnings] == ["Empty continuation line found in: RUN a     b"]
    assert result.warnings[0].line == 4
    out = io.StringIO()
    result.print_warnings(out)
    assert out.getvalue() == (
        "[WARNING]: Empty continuation line found in: RUN a     b\n"
        "[WARNING]: Empty continuation lines will become errors in a future release.\n"
    )


def test_no_instructions_is_a_parse_error():
    for text in ("", "\n\n", "# only\n# comments\n", "# escape=`\n"):
        with pytest.raises(ParseError) as info:
            parse(text)
        assert str(info.value) == "file with no instructions"
        assert daemon_message(info.value) == "failed to parse Dockerfile: file with no instructions"


def test_line_too_long():
    ok = "FROM a\nLABEL x=" + "a" * (65535 - len("LABEL x=")) + "\n"
    assert parse(ok).ast.children[1].args[1] == "a" * (65535 - len("LABEL x="))
    with pytest.raises(ParseError, match="dockerfile line greater than max allowed size of 65535") as info:
        parse("FROM a\nLABEL x=" + "a" * 65536 + "\nRUN b\n")
    assert info.value.location == (2, 2)
    with pytest.raises(ParseError, match="file with no instructions"):  # nothing parsed before it
        parse("# c\n" + "a" * 70000)


# ---- parser directives ----------------------------------------------------------------------------


def test_escape_directive_spellings():
    for text in (
        "#escape=`\n",
        "# ESCAPE = `\n",
        "  #  escape=`  \n",
        "# syntax=x\n# check=skip=all\n# escape=`\n",
    ):
        result = parse(text + "FROM a\nRUN b `\n  c\n")
        assert result.escape_token == "`"
        assert result.ast.children[1].args == ["b   c"]


def test_backslash_is_plain_text_with_backtick_escape():
    assert node("# escape=`\nRUN dir c:\\\nRUN b\n").args == ["dir c:\\"]


def test_directives_stop_at_the_first_other_line():
    for text in ("# comment\n# escape=`\n", "\n# escape=`\n", "# foo=bar\n# escape=`\n", "#escape =\n"):
        assert parse(text + "FROM a\n").escape_token == "\\"


def test_bad_directives():
    with pytest.raises(ParseError, match="only one escape parser directive can be used") as info:
        parse("# escape=\\\n# escape=`\nFROM a\n")
    assert info.value.location == (2, 2)
    with pytest.raises(ParseError) as info:
        parse("# escape=x\nFROM a\n")
    assert (
        daemon_message(info.value)
        == "failed to parse Dockerfile: invalid escape token 'x' does not match ` or \\"
    )
    with pytest.raises(ParseError, match="only one syntax parser directive"):
        parse("# syntax=a\n# SYNTAX=b\nFROM a\n")


# ---- keyword, flags and argument shapes ----------------------------------------------------------


def test_flags_are_kept_whole_and_quotes_removed():
    assert dump("COPY --chown=a:b --from=\"my stage\" --x='1 2' src dst\n") == [
        '(copy ["--chown=a:b" "--from=my stage" "--x=1 2"] "src" "dst")'
    ]


def test_double_dash_ends_flags():
    assert dump("COPY --a=1 -- --b c\n") == ['(copy ["--a=1"] "--b" "c")']
    assert dump("CMD --x -- [ ]\n") == ['(cmd ["--x"])']


def test_flag_escapes_and_blank_flags():
    assert extract_builder_flags("--a=x\\ y rest") == ("rest", ["--a=x y"])
    assert extract_builder_flags('--a="" rest') == ("rest", ["--a="])
    assert extract_builder_flags("--a=x\\") == ("", ["--a=x"])
    assert extract_builder_flags("--a=x` y z", "`") == ("z", ["--a=x y"])


def test_non_ascii_flags_are_scanned_as_bytes_like_upstream():
    # each UTF-8 byte of é (C3 A9) becomes one character, as Go's byte-wise scan does
    assert extract_builder_flags("--a=é rest") == ("rest", ["--a=\u00c3\u00a9"])
    # byte 0xA0 counts as a space in that scan: the U+00A0 inside a word ends the flag
    rest, flags = extract_builder_flags("--a=x\u00a0y z")
    assert flags == ["--a=x\u00c2"] and rest.encode("utf-8", "surrogateescape") == b"y z"


def test_json_form_and_its_fallbacks():
    assert (node('CMD ["a", "b"]\n').args, node('CMD ["a", "b"]\n').json) == (["a", "b"], True)
    assert dump('CMD []\nCMD [""]\n') == ["(cmd)", '(cmd "")']
    assert dump("CMD ['a']\n") == ["(cmd \"['a']\")"]
    assert dump('ADD [ "a", \n') == ['(add "[" "\\"a\\",")']
    assert dump('CMD ["a"] x\n') == ['(cmd "[\\"a\\"] x")']
    assert not node("RUN ['a']\n").json


def test_json_with_non_strings_is_an_error():
    for text in ('CMD ["a", 1]', 'CMD [["a"]]', "RUN [null]", 'VOLUME [{"a": "b"}]', "CMD [true]"):
        with pytest.raises(ParseError, match="arrays must be comprised of strings only"):
            parse(text + "\n")


def test_json_edge_cases_decided_as_go_does():
    assert parse_json_array("[NaN]") is None  # not JSON for Go: shell form, no error
    assert parse_json_array('["a", 1e400]') is None  # does not fit a float64: Go's decode fails
    assert parse_json_array('["\\ud800x", "\\ud83d\\ude00"]') == ["\ufffdx", "\U0001f600"]
    assert parse_json_array('["a"\v]') is None  # \v is not JSON whitespace
    deep = "[" * 10001 + "]" * 10001
    assert parse_json_array(deep) is None  # deeper than encoding/json accepts
    with pytest.raises(ParseError):
        parse_json_array("[" * 10000 + "]" * 10000)
    assert parse_json_array(' [ "a" ,"b" ] \n\t') == ["a", "b"]
    assert parse_json_array('["a",]') is None


def test_invalid_utf8_in_json_strings_becomes_replacement_characters():
    assert node(b'CMD ["a\xffb"]\n').args == ["a\ufffdb"]


def test_argument_shapes_per_instruction():
    text = "\n".join(
        [
            "FROM a  b\tc",
            "EXPOSE 80   443/tcp",
            "VOLUME /a /b",
            "WORKDIR /a b",
            "USER a b",
            "MAINTAINER Jane Doe <j@d>",
            "STOPSIGNAL SIG TERM",
            "RUN a   b",
            'ARG a="x y" b',
            "FOO --x bar",
            "",
        ]
    )
    assert dump(text) == [
        '(from "a" "b" "c")',
        '(expose "80" "443/tcp")',
        '(volume "/a" "/b")',
        '(workdir "/a b")',
        '(user "a b")',
        '(maintainer "Jane Doe <j@d>")',
        '(stopsignal "SIG TERM")',
        '(run "a   b")',
        '(arg "a=\\"x y\\"" "b")',
        '(foo ["--x"] "")',
    ]


def test_env_and_label_forms():
    assert dump('ENV a b c\nLABEL a=1 b="x y" c=\nENV d\\ e f\n') == [
        '(env "a" "b c" "")',
        '(label "a" "1" "=" "b" "\\"x y\\"" "=" "c" "" "=")',
        '(env "d\\\\" "e f" "")',
    ]
    assert dump("ENV\n") == ["(env)"]
    with pytest.raises(ParseError, match="^LABEL must have two arguments$"):
        parse("LABEL a\n")
    with pytest.raises(ParseError) as info:
        parse("ENV a=1 b\n")
    assert str(info.value) == 'Syntax error - can\'t find = in "b". Must be of the form: name=value'


def test_parse_words():
    assert parse_words("foo bar 'abc xyz'") == ["foo", "bar", "'abc xyz'"]
    assert parse_words('föo bàr "âbc xÿz"') == ["föo", "bàr", '"âbc xÿz"']
    assert parse_words("a\\ b 'c\\' d") == ["a\\ b", "'c\\'", "d"]  # no escape inside '...'
    assert parse_words('"e\\" f" g') == ['"e\\" f"', "g"]
    assert parse_words('"" a\\') == ['""', "a"]
    assert parse_words("a `b c", "`") == ["a", "`b", "c"]
    assert parse_words("'unterminated quote") == ["'unterminated quote"]


def test_healthcheck_shapes():
    assert dump(
        'HEALTHCHECK\nHEALTHCHECK NONE\nHEALTHCHECK   CMD   a b\nHEALTHCHECK --retries=3 CMD ["x"]\n'
    ) == [
        "(healthcheck)",
        '(healthcheck "NONE")',
        '(healthcheck "CMD" "a b")',
        '(healthcheck ["--retries=3"] "CMD" "x")',
    ]
    assert node('HEALTHCHECK CMD ["x"]\n').json


def test_onbuild_nests_an_instruction():
    assert dump('ONBUILD RUN ["a"]\nONBUILD\nONBUILD --f COPY --from=x . /\nONBUILD BOGUS y\n') == [
        '(onbuild (run "a"))',
        "(onbuild)",
        '(onbuild ["--f"] (copy ["--from=x"] "." "/"))',
        '(onbuild (bogus ""))',
    ]
    nested = node("ONBUILD RUN a\n").nested
    assert (nested.value, nested.original, nested.args) == ("run", "RUN a", ["a"])


def test_dump_quotes_as_go_does():
    assert dump(b"RUN \x01\x7f\xff \xe2\x99\xa5 \xe2\x80\x8b\xc2\xa0.\n") == [
        '(run "\\x01\\x7f\\xff \u2665 \\u200b\\u00a0.")'
    ]
    assert dump("RUN a\u00a0\n") == ['(run "a")']  # Unicode spaces are trimmed like ASCII ones
    assert quote('\a\b\f\n\r\t\v"\\') == '"\\a\\b\\f\\n\\r\\t\\v\\"\\\\"'
    assert quote("\U0001f600\U000e0001") == '"\U0001f600\\U000e0001"'
    assert quote("한국어") == '"한국어"'


# ---- heredocs ------------------------------------------------------------------------------------

HEREDOCS = """\
FROM a
RUN <<EMPTY
EMPTY
RUN 3<<EOF
EOF
RUN "<<NOHEREDOC"
RUN <<-UNINDENT
\tbaz
\t\tUNINDENT
RUN <<-'NOEXPAND' python3
\t$HOME # raw body
NOEXPAND
COPY <<X <<Y /dest
Y
X
X
Y
RUN <<eo'f'
eof
RUN <<eo\\'f
eo'f
RUN <<'one two'
one two
RUN <<  $EOF  > out
$EOF
RUN ["<<JSON"]
USER <<NOTHERE
NOTHERE
"""


def test_heredoc_bodies_names_and_flags():
    children = parse(HEREDOCS).ast.children
    got = [[(h.name, h.content, h.expand, h.chomp, h.file_descriptor) for h in c.heredocs] for c in children]
    assert got == [
        [],
        [("EMPTY", "", True, False, 0)],
        [("EOF", "", True, False, 3)],
        [],
        [("UNINDENT", "\tbaz\n", True, True, 0)],
        [("NOEXPAND", "\t$HOME # raw body\n", False, True, 0)],
        [("X", "Y\n", True, False, 0), ("Y", "X\n", True, False, 0)],
        [("eof", "", False, False, 0)],
        [("eo'f", "", True, False, 0)],
        [("one two", "", False, False, 0)],
        [("$EOF", "", True, False, 0)],
        [],
        [],
        [],  # NOTHERE: USER takes no heredoc, so this line is an (unknown) instruction
    ]
    assert [c.value for c in children[-3:]] == ["run", "user", "nothere"]


def test_heredoc_lines_count_and_render_from_the_line_alone():
    ast = parse("FROM a\nCOPY <<A <<B /dest\na\nA\nb\nB\nRUN x\n").ast
    assert [(c.start_line, c.end_line) for c in ast.children] == [(1, 1), (2, 6), (7, 7)]
    assert ast.children[1].dump() == 'copy "<<A" "<<B" "/dest"'


def test_heredoc_body_without_final_newline_and_crlf_terminator():
    assert node("RUN <<E\nx\r\nE\r\n").heredocs[0].content == "x\r\n"
    assert node("RUN <<E\nlast\nE").heredocs[0].content == "last\n"


def test_heredoc_in_onbuild():
    onbuild = node("ONBUILD RUN <<E\nhi\nE\n")
    assert [(h.name, h.content) for h in onbuild.heredocs] == [("E", "hi\n")]


def test_unterminated_heredoc():
    with pytest.raises(ParseError, match="^unterminated heredoc$") as info:
        parse("FROM a\nRUN <<EOF\nbody\n")
    assert info.value.location == (2, 3)


def test_a_line_the_shell_lexer_rejects_opens_no_heredoc():
    assert node("RUN <<EOF 'oops\nEOF\n").heredocs == []


def test_heredoc_terminator_that_is_not_shell_syntax_is_an_error():
    # the line lexes (escapes are processed inside ${...}), the terminator `${a:-'}` then does not
    with pytest.raises(ParseError) as info:
        parse("RUN <<${a:-\\'}\nx\n")
    assert str(info.value) == "failed to process \"${a:-'}\": syntax error: missing '}'"
    assert parse("RUN <<${\nx\n").ast.children[0].heredocs == []  # the line itself fails: no heredoc


# ---- Go primitives ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,ns",
    [
        ("0", 0),
        ("1h30m", 5400 * 10**9),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("1.s", 10**9),
        ("-2us", -2000),
        ("+5ms", 5_000_000),
        ("1µs", 1000),
        ("1h1m1s1ms1us1ns", 3661001001001),
        ("9223372036854775807ns", 9223372036854775807),
        ("-9223372036854775808ns", -9223372036854775808),
        ("0.000000001s", 1),
        ("1.0000000000000000000001s", 10**9),
    ],
)
def test_parse_duration(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    "text,message",
    [
        ("", 'time: invalid duration ""'),
        ("abc", 'time: invalid duration "abc"'),
        ("1", 'time: missing unit in duration "1"'),
        ("1e3s", 'time: unknown unit "e" in duration "1e3s"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("1µ", 'time: unknown unit "\\xc2\\xb5" in duration "1\\xc2\\xb5"'),
        (".s", 'time: invalid duration ".s"'),
        ("-", 'time: invalid duration "-"'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("3000000h", 'time: invalid duration "3000000h"'),
    ],
)
def test_parse_duration_errors(text, message):
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


# ---- the dumper command ----------------------------------------------------------------------------


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "minibuild.dockerfile", *args], input=stdin, capture_output=True, timeout=60
    )


def test_cli_dumps_a_file(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_bytes(b"FROM a\nCOPY --from=b /x /y\n")
    done = run_cli(str(path))
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        b'(from "a")\n(copy ["--from=b"] "/x" "/y")\n',
        b"",
    )


def test_cli_reads_stdin_and_reports_errors_with_the_line():
    assert run_cli("-", stdin=b'CMD ["x"]\n').stdout == b'(cmd "x")\n'
    done = run_cli("-", stdin=b"FROM a\nENV x\n")
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr == b"-:2: ENV must have two arguments\n"
    done = run_cli("--check", "-", stdin=b"FROM a\nBOGUS x\n")
    assert (done.returncode, done.stderr) == (
        1,
        b"-:2: dockerfile parse error line 2: unknown instruction: BOGUS\n",
    )


def test_cli_missing_file(tmp_path):
    done = run_cli(str(tmp_path / "nope"))
    assert done.returncode == 1 and b"No such file or directory" in done.stderr


def test_errors_are_dockerfile_errors():
    assert issubclass(ParseError, DockerfileError)
    err = DockerfileError("COPY failed", 3)
    assert (str(err), err.location) == ("dockerfile parse error line 3: COPY failed", (3, 3))
    assert daemon_message(err) == str(err)  # only parser errors get dockerd's prefix
