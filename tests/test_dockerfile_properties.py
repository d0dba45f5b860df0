"""Properties of the front end (hypothesis).

1. Any input, bytes or text, is either parsed or refused with DockerfileError: nothing else escapes.
2. Dockerfiles generated from a grammar of instructions parse to the AST the grammar predicts, with the
   line ranges it predicts, whatever the layout (keyword case, continuations, comments and blank lines
   inside them, the backtick escape, heredocs).
3. Rendering a parsed AST back to Dockerfile text and parsing that again gives the same AST.
"""

import json
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibuild.dockerfile import DockerfileError, Node, parse, parse_instructions
from minibuild.dockerfile.gotext import quote
from minibuild.dockerfile.heredoc import _Lexer, shell_words
from minibuild.dockerfile.parser import parse_json_array

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRAMMAR_SETTINGS = settings(SETTINGS, max_examples=200)  # generating whole Dockerfiles is the slow part


def parse_all(data) -> None:
    """Parser then instructions, as a builder runs them."""
    parse_instructions(parse(data).ast)


# ---- 1. nothing but DockerfileError ------------------------------------------------------------------

KEYWORDS = ["FROM", "RUN", "CMD", "COPY", "ADD", "ENV", "LABEL", "ARG", "EXPOSE", "VOLUME", "WORKDIR", "USER"]
KEYWORDS += ["HEALTHCHECK", "ONBUILD", "SHELL", "STOPSIGNAL", "MAINTAINER", "ENTRYPOINT", "BOGUS", "from", ""]
TRICKY = [
    "\\",
    "`",
    '"',
    "'",
    "[",
    "]",
    "{",
    "}",
    "$",
    "${",
    "<<",
    "<<-",
    "-",
    "--",
    "=",
    "#",
    " ",
    "\t",
    "\r",
]
TRICKY += [
    "\u00a0",
    "\u2028",
    "\x00",
    "\ufeff",
    "EOF",
    "AS",
    "NONE",
    "CMD",
    "# escape=`",
    "# escape=\\",
    ":",
    ",",
]
TRICKY += [
    '["a"]',
    "[1]",
    "--mount=",
    "type=",
    "from=",
    "--interval=",
    "1s",
    "--from=",
    "\\\n",
    "é",
    "\ud7ff",
]

fragment = st.one_of(st.sampled_from(TRICKY), st.text(max_size=4))
line = st.builds(
    lambda kw, parts: (kw + " " if kw else "") + "".join(parts),
    st.sampled_from(KEYWORDS),
    st.lists(fragment, max_size=8),
)
dockerfile_like = st.lists(line, max_size=12).map("\n".join)


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_dockerfile_error(data):
    try:
        parse_all(data)
    except DockerfileError:
        pass


@SETTINGS
@given(dockerfile_like, st.booleans())
def test_dockerfile_like_text_parses_or_raises_dockerfile_error(text, as_bytes):
    try:
        parse_all(text.encode("utf-8", "surrogatepass") if as_bytes else text)
    except DockerfileError:
        pass


@SETTINGS
@given(st.lists(st.text(max_size=6), max_size=6))
def test_json_arrays_of_strings_decode_like_json(strings):
    for ensure_ascii in (True, False):
        assert parse_json_array(json.dumps(strings, ensure_ascii=ensure_ascii)) == strings


@SETTINGS
@given(st.text(alphabet=st.sampled_from("ab-=.\t \u00a0\u2028\x85\x1cé\ufeff"), max_size=12), st.booleans())
def test_heredoc_word_splitting_shortcut_agrees_with_the_lexer(text, raw):
    full = _Lexer(text, raw, raw).process_stop_on("", raw)[1]
    assert shell_words(text, raw_quotes=raw, raw_escapes=raw) == full


# ---- 2. a grammar of Dockerfiles -----------------------------------------------------------------------

word = st.from_regex(r"[a-z][a-z0-9_./:$-]{0,6}", fullmatch=True)
words = st.lists(word, min_size=1, max_size=4)
shell_token = st.one_of(word, st.sampled_from(["&&", "|", "'a b'", '"x y"', ">", "2>&1", ";"]))
json_string = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)


@dataclass
class Instruction:
    """One generated instruction: its logical text split in tokens, and what the parser must make of it."""

    keyword: str
    tokens: list[str]  # the text after the keyword; pieces may go on separate physical lines
    expected: str  # the dump
    heredocs: list[tuple[str, list[str], bool]] = field(default_factory=list)  # (name, body lines, chomp)


def q(values: list[str]) -> str:
    return "".join(" " + quote(v) for v in values)


@st.composite
def from_instruction(draw):
    image = draw(word)
    if draw(st.booleans()):
        name = draw(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True))
        return Instruction("FROM", [image, "AS", name], f"(from{q([image, 'AS', name])})")
    return Instruction("FROM", [image], f"(from{q([image])})")


@st.composite
def command_line_instruction(draw):
    keyword = draw(st.sampled_from(["RUN", "CMD", "ENTRYPOINT"]))
    if draw(st.booleans()):
        values = draw(st.lists(json_string, max_size=3))
        return Instruction(keyword, [json.dumps(values)], f"({keyword.lower()}{q(values)})")
    tokens = draw(st.lists(shell_token, min_size=1, max_size=5))
    return Instruction(keyword, tokens, f"({keyword.lower()}{q([' '.join(tokens)])})")


@st.composite
def copy_instruction(draw):
    keyword = draw(st.sampled_from(["COPY", "ADD"]))
    flags = draw(
        st.lists(st.sampled_from(["--from=build", "--chown=1:1", "--link", "--chmod=644"]), unique=True)
    )
    paths = draw(st.lists(word, min_size=2, max_size=4))
    flag_dump = (" [" + " ".join(quote(f) for f in flags) + "]") if flags else ""
    if draw(st.booleans()):
        return Instruction(keyword, [*flags, json.dumps(paths)], f"({keyword.lower()}{flag_dump}{q(paths)})")
    return Instruction(keyword, [*flags, *paths], f"({keyword.lower()}{flag_dump}{q(paths)})")


@st.composite
def env_instruction(draw):
    keyword = draw(st.sampled_from(["ENV", "LABEL"]))
    if draw(st.booleans()):  # old form: key, then the rest of the line verbatim
        key, value = draw(word), draw(words)
        return Instruction(keyword, [key, *value], f"({keyword.lower()}{q([key, ' '.join(value), ''])})")
    pairs = draw(
        st.lists(st.tuples(word, st.one_of(word, st.just('"a b"'), st.just(""))), min_size=1, max_size=3)
    )
    expected = [part for key, value in pairs for part in (key, value, "=")]
    return Instruction(keyword, [f"{k}={v}" for k, v in pairs], f"({keyword.lower()}{q(expected)})")


@st.composite
def simple_instruction(draw):
    keyword = draw(
        st.sampled_from(["ARG", "EXPOSE", "VOLUME", "WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"])
    )
    tokens = draw(words)
    if keyword in ("ARG", "EXPOSE", "VOLUME"):
        return Instruction(keyword, tokens, f"({keyword.lower()}{q(tokens)})")
    return Instruction(keyword, tokens, f"({keyword.lower()}{q([' '.join(tokens)])})")


@st.composite
def healthcheck_instruction(draw):
    kind = draw(st.sampled_from(["NONE", "shell", "json"]))
    if kind == "NONE":
        return Instruction("HEALTHCHECK", ["NONE"], '(healthcheck "NONE")')
    flags = draw(st.lists(st.sampled_from(["--interval=5s", "--retries=3", "--timeout=1m"]), unique=True))
    flag_dump = (" [" + " ".join(quote(f) for f in flags) + "]") if flags else ""
    if kind == "json":
        values = draw(st.lists(json_string, min_size=1, max_size=3))
        return Instruction(
            "HEALTHCHECK",
            [*flags, "CMD", json.dumps(values)],
            f"(healthcheck{flag_dump}{q(['CMD', *values])})",
        )
    tokens = draw(st.lists(shell_token, min_size=1, max_size=4))
    return Instruction(
        "HEALTHCHECK", [*flags, "CMD", *tokens], f"(healthcheck{flag_dump}{q(['CMD', ' '.join(tokens)])})"
    )


@st.composite
def heredoc_instruction(draw):
    name = draw(st.sampled_from(["EOF", "END", "X1"]))
    chomp = draw(st.booleans())
    body = draw(st.lists(st.text(alphabet="ab $#\\\"'\t", max_size=8), max_size=3))
    body = [line for line in body if line.lstrip("\t") != name]
    marker = ("<<-" if chomp else "<<") + draw(st.sampled_from([name, f"'{name}'", f'"{name}"']))
    if draw(st.booleans()):
        tokens = [marker, "/dest"]
        return Instruction("COPY", tokens, f"(copy{q(tokens)})", [(name, body, chomp)])
    tokens = [marker, *draw(st.lists(word, max_size=2))]
    return Instruction("RUN", tokens, f"(run{q([' '.join(tokens)])})", [(name, body, chomp)])


@st.composite
def onbuild_instruction(draw):
    inner = draw(st.one_of(command_line_instruction(), copy_instruction(), env_instruction()))
    return Instruction("ONBUILD", [inner.keyword, *inner.tokens], f"(onbuild {inner.expected})")


instruction = st.one_of(
    from_instruction(),
    command_line_instruction(),
    copy_instruction(),
    env_instruction(),
    simple_instruction(),
    healthcheck_instruction(),
    heredoc_instruction(),
    onbuild_instruction(),
    st.builds(lambda w: Instruction("SHELL", [json.dumps(w)], f"(shell{q(w)})"), st.lists(word, min_size=1)),
    st.builds(lambda w: Instruction("FOO", w, '(foo "")'), words),
)


@dataclass
class Layout:
    escape: str
    lines: list[str] = field(default_factory=list)
    expected: list[tuple[str, int, int, list]] = field(default_factory=list)  # dump, start, end, heredocs


@st.composite
def dockerfiles(draw):
    layout = Layout(escape=draw(st.sampled_from(["\\", "`"])))
    if layout.escape == "`" or draw(st.booleans()):
        layout.lines.append(f"# escape={layout.escape}")
    for ins in draw(st.lists(instruction, min_size=1, max_size=8)):
        layout.lines += draw(
            st.lists(st.sampled_from(["", "# a comment", "   ", "\t# indented"]), max_size=2)
        )
        keyword = draw(st.sampled_from([ins.keyword, ins.keyword.lower(), ins.keyword.capitalize()]))
        pieces = [keyword, *ins.tokens]
        start = len(layout.lines) + 1
        current = draw(st.sampled_from(["", "  "])) + pieces[0]
        for piece in pieces[1:]:
            if draw(st.integers(0, 3)) == 0:  # break the line here with a continuation
                layout.lines.append(current + " " + layout.escape + draw(st.sampled_from(["", " ", "\t "])))
                layout.lines += draw(st.lists(st.sampled_from(["# inside", "", "  "]), max_size=2))
                current = piece
            else:
                current += " " + piece
        layout.lines.append(current)
        heredocs = []
        for name, body, chomp in ins.heredocs:
            layout.lines += body
            layout.lines.append(("\t" if chomp else "") + name)
            heredocs.append((name, "".join(line + "\n" for line in body)))
        layout.expected.append((ins.expected, start, len(layout.lines), heredocs))
    layout.lines += draw(st.lists(st.sampled_from(["", "# trailing comment"]), max_size=2))
    return layout


@GRAMMAR_SETTINGS
@given(dockerfiles(), st.booleans())
def test_generated_dockerfiles_parse_as_the_grammar_predicts(layout, final_newline):
    text = "\n".join(layout.lines) + ("\n" if final_newline else "")
    result = parse(text)
    assert result.escape_token == layout.escape
    got = [
        (f"({child.dump()})", child.start_line, child.end_line, [(h.name, h.content) for h in child.heredocs])
        for child in result.ast.children
    ]
    assert got == layout.expected
    ast = result.ast
    assert (ast.start_line, ast.end_line) == (layout.expected[0][1], layout.expected[-1][2])


# ---- 3. render and parse again -------------------------------------------------------------------------


def render_word(text: str, escape: str) -> str:
    return "".join(escape + ch if ch in " \t'\"" + escape else ch for ch in text)


def render_instruction(node: Node, escape: str) -> str:
    """Dockerfile text for one AST node."""
    parts = [node.value.upper(), *(render_word(flag, escape) for flag in node.flags)]
    args = node.args
    if node.nested is not None:
        parts.append(render_instruction(node.nested, escape))
    elif node.json:
        if node.value == "healthcheck":
            parts += [args[0], json.dumps(args[1:])]
        else:
            parts.append(json.dumps(args))
    elif node.value in ("env", "label") and args:
        triples = list(zip(args[::3], args[1::3], args[2::3], strict=True))
        if triples[0][2] == "":
            parts += [triples[0][0], triples[0][1]]
        else:
            parts += [f"{key}={value}" for key, value, _ in triples]
    elif node.value not in ("env", "label") and args != [""]:
        parts += args
    return " ".join(parts)


def render(node_list: list[Node], escape: str) -> str:
    lines = [f"# escape={escape}"]
    for node in node_list:
        lines.append(render_instruction(node, escape))
        for heredoc in node.heredocs:
            lines.append(heredoc.content + ("\t" if heredoc.chomp else "") + heredoc.name)
    return "\n".join(lines) + "\n"


def shape(result) -> list:
    return [
        (c.dump(), c.json, [(h.name, h.content, h.expand, h.chomp) for h in c.heredocs])
        for c in result.ast.children
    ]


@GRAMMAR_SETTINGS
@given(dockerfiles())
def test_render_then_parse_again_gives_the_same_ast(layout):
    first = parse("\n".join(layout.lines) + "\n")
    again = parse(render(first.ast.children, first.escape_token))
    assert shape(again) == shape(first)
