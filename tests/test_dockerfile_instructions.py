"""Typed instructions and stages: what each instruction keeps, and every refusal with Docker's wording."""

import pytest

from minibuild.dockerfile import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    CopyCommand,
    DockerfileError,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthCheckCommand,
    KeyValuePair,
    KeyValuePairOptional,
    LabelCommand,
    Mount,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    check_stage_name_available,
    has_stage,
    new_label_command,
    parse,
    parse_instruction,
    parse_instructions,
    parse_mount,
)


def stages_of(text: str):
    return parse_instructions(parse(text).ast)


def command(text: str):
    """The only command of `FROM scratch` + text."""
    stages, _ = stages_of("FROM scratch\n" + text)
    (cmd,) = stages[0].commands
    return cmd


def error_of(text: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        stages_of(text)
    return info.value


# ---- stages and meta args --------------------------------------------------------------------------


def test_stages_meta_args_and_commands():
    stages, meta = stages_of(
        "ARG BASE=busybox\nARG TAG\n"
        "FROM --platform=linux/arm64 ${BASE}:${TAG} AS Builder\nRUN make\n"
        "from scratch\nCOPY --from=builder /out /out\n"
    )
    assert [(a.line, a.args) for a in meta] == [
        (1, [KeyValuePairOptional("BASE", "busybox")]),
        (2, [KeyValuePairOptional("TAG", None)]),
    ]
    first, second = stages
    assert (first.name, first.base_name, first.platform, first.original, first.line) == (
        "builder",
        "${BASE}:${TAG}",
        "linux/arm64",
        "FROM --platform=linux/arm64 ${BASE}:${TAG} AS Builder",
        3,
    )
    assert (second.name, second.base_name, second.original, second.line) == ("", "scratch", "from scratch", 5)
    assert [type(c) for c in first.commands] == [RunCommand]
    assert [type(c) for c in second.commands] == [CopyCommand]
    assert str(second.commands[0]) == "COPY --from=builder /out /out"


def test_as_is_case_insensitive_and_names_lowercased():
    stages, _ = stages_of("FROM a as One\nFROM b aS two.2-x_y\n")
    assert [s.name for s in stages] == ["one", "two.2-x_y"]


def test_stage_name_helpers():
    stages, _ = stages_of("FROM a AS base\nFROM b AS BASE\nFROM c\n")
    assert has_stage(stages, "Base") == 0
    assert has_stage(stages, "nope") is None
    check_stage_name_available([], "base")
    check_stage_name_available(["other"], "")  # unnamed stages never clash
    with pytest.raises(DockerfileError, match="^a stage name already used$"):
        check_stage_name_available(["A"], "a")


def test_each_command_keeps_its_text_and_lines():
    stages, _ = stages_of("FROM a\nRUN x \\\n  y   \n\nENV a=b\n")
    run, env = stages[0].commands
    assert (run.name, run.original, run.line, run.end_line) == ("run", "RUN x   y", 2, 3)
    assert (env.name, env.original, env.line, env.end_line) == ("env", "ENV a=b", 5, 5)


# ---- each instruction --------------------------------------------------------------------------------


def test_env_and_label_pairs():
    env = command('ENV a=1 b="x y"\n')
    assert isinstance(env, EnvCommand)
    assert env.env == [KeyValuePair("a", "1"), KeyValuePair("b", '"x y"')]
    assert command("ENV PATH /usr/bin:$PATH\n").env == [KeyValuePair("PATH", "/usr/bin:$PATH", no_delim=True)]
    label = command('LABEL "com.example"="v" x=\n')
    assert isinstance(label, LabelCommand) and label.labels == [
        KeyValuePair('"com.example"', '"v"'),
        KeyValuePair("x", ""),
    ]


def test_expand_returns_an_expanded_copy():
    env = command("ENV $K=$V\n")
    expanded = env.expand(lambda word: word.replace("$K", "key").replace("$V", "value"))
    assert expanded.env == [KeyValuePair("key", "value")]
    assert env.env == [KeyValuePair("$K", "$V")]  # the parsed instruction is untouched
    assert command("WORKDIR $D\n").expand(str.lower).path == "$d"
    assert command("USER $U\n").expand(lambda w: "1000").user == "1000"
    assert command("VOLUME $A $B\n").expand(lambda w: w * 2).volumes == ["$A$A", "$B$B"]
    assert command("STOPSIGNAL $S\n").expand(lambda w: "SIGTERM").signal == "SIGTERM"
    arg = command("ARG A=$X B\n").expand(lambda w: w.replace("$X", "1"))
    assert arg.args == [KeyValuePairOptional("A", "1"), KeyValuePairOptional("B", None)]
    copy = command("COPY --chown=$U --chmod=$M $SRC $DST\n").expand(lambda w: w.strip("$").lower())
    assert (copy.chown, copy.chmod, copy.source_paths, copy.dest_path) == ("u", "m", ["src"], "dst")
    add = command("ADD --checksum=$C a b\n").expand(lambda w: w.strip("$"))
    assert add.checksum == "C"
    assert command("EXPOSE $PORTS\n").expand_ports(lambda w: ["80", "443"]).ports == ["80", "443"]


def test_labels_from_the_build_request_are_not_expanded():
    label = new_label_command("a", "$HOME", no_expand=True)
    assert (label.original, label.expand(lambda w: "X").labels) == (
        "LABEL a=$HOME",
        [KeyValuePair("a", "$HOME")],
    )


def test_copy_and_add_flags():
    copy = command(
        "COPY --from=build --chown=1:1 --chmod=644 --link --parents --exclude=*.md --exclude=x a b /d/\n"
    )
    assert (copy.from_, copy.chown, copy.chmod, copy.link, copy.parents) == (
        "build",
        "1:1",
        "644",
        True,
        True,
    )
    assert (copy.exclude_patterns, copy.source_paths, copy.dest_path) == (["*.md", "x"], ["a", "b"], "/d/")
    add = command("ADD --keep-git-dir=true --checksum=sha256:0 --link=false --chown=u https://x/y /z\n")
    assert isinstance(add, AddCommand)
    assert (add.keep_git_dir, add.checksum, add.link, add.chown, add.source_paths) == (
        True,
        "sha256:0",
        False,
        "u",
        ["https://x/y"],
    )
    assert command('COPY ["a b", "c"]\n').source_paths == ["a b"]


def test_copy_heredoc_sources():
    copy = command("COPY <<A <<-'B' plain /dest\nhello $X\nA\n\tquoted\n\tB\n")
    assert [(s.path, s.data, s.expand) for s in copy.source_contents] == [
        ("A", "hello $X\n", True),
        ("B", "quoted\n", False),
    ]
    assert copy.source_paths == ["plain"]


def test_run_forms_and_flags():
    shell = command("RUN --network=none --mount=type=cache,target=/c --security=insecure make all\n")
    assert isinstance(shell, RunCommand)
    assert (shell.cmd_line, shell.prepend_shell, shell.network, shell.security) == (
        ["make all"],
        True,
        "none",
        "insecure",
    )
    assert (shell.mount_specs, shell.flags_used) == (
        ["type=cache,target=/c"],
        ["network", "mount", "security"],
    )
    exec_form = command('RUN ["/bin/echo", "$HOME"]\n')
    assert (exec_form.cmd_line, exec_form.prepend_shell, exec_form.flags_used) == (
        ["/bin/echo", "$HOME"],
        False,
        [],
    )
    assert (exec_form.network, exec_form.security) == ("default", "sandbox")


def test_run_heredoc_files():
    run = command("RUN <<-EOF bash\n\techo hi\nEOF\n")
    assert run.cmd_line == ["<<-EOF bash"]
    assert [(f.name, f.data, f.chomp) for f in run.files] == [("EOF", "\techo hi\n", True)]


def test_cmd_entrypoint_shell():
    assert command("CMD echo hi\n") == CmdCommand(
        name="cmd", original="CMD echo hi", line=2, end_line=2, cmd_line=["echo hi"], prepend_shell=True
    )
    assert command("CMD []\n").cmd_line == []
    entrypoint = command("ENTRYPOINT []\n")
    assert isinstance(entrypoint, EntrypointCommand) and entrypoint.cmd_line is None
    assert command('ENTRYPOINT ["a"]\n').cmd_line == ["a"]
    shell = command('SHELL ["powershell", "-command"]\n')
    assert isinstance(shell, ShellCommand) and shell.shell == ["powershell", "-command"]


def test_healthcheck():
    check = command(
        "HEALTHCHECK --interval=1m30s --timeout=3s --start-period=0s --start-interval=1ms --retries=5 "
        "CMD curl -f x\n"
    )
    assert isinstance(check, HealthCheckCommand)
    health = check.health
    assert (health.test, health.interval, health.timeout, health.start_period) == (
        ["CMD-SHELL", "curl -f x"],
        90 * 10**9,
        3 * 10**9,
        0,
    )
    assert (health.start_interval, health.retries) == (10**6, 5)
    assert command('HEALTHCHECK CMD ["curl", "x"]\n').health.test == ["CMD", "curl", "x"]
    assert command("healthcheck none\n").health.test == ["NONE"]
    assert command("HEALTHCHECK --bogus NONE\n").health.test == ["NONE"]  # upstream checks no flags for NONE


def test_onbuild_keeps_the_trigger_text():
    onbuild = command("ONBUILD  RUN echo hi\n")
    assert isinstance(onbuild, OnbuildCommand) and onbuild.expression == "RUN echo hi"
    assert command("onbuild COPY <<F /f\nbody\nF\n").expression == "COPY <<F /f\nbody\nF"


def test_simple_instructions():
    assert isinstance(command("WORKDIR /a b\n"), WorkdirCommand)
    assert command("USER 1000:1000\n") == UserCommand(
        name="user", original="USER 1000:1000", line=2, end_line=2, user="1000:1000"
    )
    volume = command('VOLUME ["/a", "/b"]\n')
    assert isinstance(volume, VolumeCommand) and volume.volumes == ["/a", "/b"]
    assert command("EXPOSE 90 8080/tcp 100\n") == ExposeCommand(
        name="expose", original="EXPOSE 90 8080/tcp 100", line=2, end_line=2, ports=["100", "8080/tcp", "90"]
    )
    stop = command("STOPSIGNAL --ignored SIGKILL\n")  # upstream checks no flags for STOPSIGNAL
    assert isinstance(stop, StopSignalCommand) and stop.signal == "SIGKILL"
    assert command("MAINTAINER Jane <j@x>\n").maintainer == "Jane <j@x>"
    arg = command('ARG a=1 b c="x y" d=\n')
    assert isinstance(arg, ArgCommand) and arg.args == [
        KeyValuePairOptional("a", "1"),
        KeyValuePairOptional("b"),
        KeyValuePairOptional("c", '"x y"'),
        KeyValuePairOptional("d", ""),
    ]


def test_parse_instruction_alone_gives_bare_messages_with_location():
    node = parse("FROM a\n\nBOGUS x\n").ast.children[1]
    with pytest.raises(DockerfileError) as info:
        parse_instruction(node)
    assert (str(info.value), info.value.location) == ("unknown instruction: BOGUS", (3, 3))


# ---- refusals (build API reference 4.1, and upstream's instructions package) -------------------------

ERRORS = [
    ("FROM busybox\nFOO bar\n", "dockerfile parse error line 2: unknown instruction: FOO"),
    ("# comment\n\nFROM a\nRUN b\nbogus x y\n", "dockerfile parse error line 5: unknown instruction: BOGUS"),
    ("FROM\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
    (
        "FROM busybox:local foo\n",
        "dockerfile parse error line 1: FROM requires either one or three arguments",
    ),
    ("FROM a b c\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
    (
        "FROM busybox:local AS Bad_Name!\n",
        'dockerfile parse error line 1: invalid name for build stage: "Bad_Name!", '
        "name can't start with a number or contain symbols",
    ),
    (
        "FROM a AS 1st\n",
        'dockerfile parse error line 1: invalid name for build stage: "1st", '
        "name can't start with a number or contain symbols",
    ),
    ("RUN echo\n", "no build stage in current context"),
    ("ARG a\nENV b=c\n", "no build stage in current context"),
    ("FROM a\nENV\n", "dockerfile parse error line 2: ENV requires at least one argument"),
    (
        "FROM a\nCOPY onlyone\n",
        "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. "
        "Destination could not be determined",
    ),
    (
        "FROM a\nADD\n",
        "dockerfile parse error line 2: ADD requires at least two arguments, but only one was provided. "
        "Destination could not be determined",
    ),
    ("FROM a\nARG\n", "dockerfile parse error line 2: ARG requires at least one argument"),
    ("FROM a\nARG =x\n", "dockerfile parse error line 2: ARG names can not be blank"),
    ("FROM a\nLABEL\n", "dockerfile parse error line 2: LABEL requires at least one argument"),
    ("FROM a\nENV =x\n", "dockerfile parse error line 2: ENV names can not be blank"),
    ("FROM a\nWORKDIR\n", "dockerfile parse error line 2: WORKDIR requires exactly one argument"),
    ("FROM a\nUSER\n", "dockerfile parse error line 2: USER requires exactly one argument"),
    ("FROM a\nMAINTAINER\n", "dockerfile parse error line 2: MAINTAINER requires exactly one argument"),
    ("FROM a\nSTOPSIGNAL\n", "dockerfile parse error line 2: STOPSIGNAL requires exactly one argument"),
    ("FROM a\nEXPOSE\n", "dockerfile parse error line 2: EXPOSE requires at least one argument"),
    ("FROM a\nVOLUME\n", "dockerfile parse error line 2: VOLUME requires at least one argument"),
    (
        'FROM a\nVOLUME ["/a", " "]\n',
        "dockerfile parse error line 2: VOLUME specified can not be an empty string",
    ),
    ("FROM a\nONBUILD\n", "dockerfile parse error line 2: ONBUILD requires at least one argument"),
    ("FROM a\nHEALTHCHECK\n", "dockerfile parse error line 2: HEALTHCHECK requires at least one argument"),
    (
        "FROM a\nHEALTHCHECK --interval=abc CMD true\n",
        'dockerfile parse error line 2: time: invalid duration "abc"',
    ),
    (
        "FROM a\nHEALTHCHECK --timeout=5 CMD true\n",
        'dockerfile parse error line 2: time: missing unit in duration "5"',
    ),
    (
        "FROM a\nHEALTHCHECK --start-period=50us CMD true\n",
        'dockerfile parse error line 2: Interval "start-period" cannot be less than 1ms',
    ),
    (
        "FROM a\nHEALTHCHECK --retries=x CMD true\n",
        'dockerfile parse error line 2: strconv.ParseInt: parsing "x": invalid syntax',
    ),
    (
        "FROM a\nHEALTHCHECK --retries=3000000000 CMD true\n",
        'dockerfile parse error line 2: strconv.ParseInt: parsing "3000000000": value out of range',
    ),
    (  # dockerd 20.10.24's answers to both
        "FROM a\nHEALTHCHECK --retries=-1 CMD true\n",
        "dockerfile parse error line 2: --retries must be at least 1 (not -1)",
    ),
    (
        "FROM a\nHEALTHCHECK --retries=0 CMD true\n",
        "dockerfile parse error line 2: --retries must be at least 1 (not 0)",
    ),
    ("FROM a\nHEALTHCHECK NONE x\n", "dockerfile parse error line 2: HEALTHCHECK NONE takes no arguments"),
    ("FROM a\nHEALTHCHECK CMD\n", "dockerfile parse error line 2: Missing command after HEALTHCHECK CMD"),
    (
        "FROM a\nHEALTHCHECK CONNECT x\n",
        'dockerfile parse error line 2: Unknown type "CONNECT" in HEALTHCHECK (try CMD)',
    ),
    ("FROM a\nCOPY --bogus=1 a b\n", "dockerfile parse error line 2: Unknown flag: bogus"),
    ("FROM a\nMAINTAINER --boo joe\n", "dockerfile parse error line 2: Unknown flag: boo"),
    ("FROM a\nCOPY --from=a --from=b x y\n", "dockerfile parse error line 2: Duplicate flag specified: from"),
    ("FROM a\nCOPY --from x y\n", "dockerfile parse error line 2: Missing a value on flag: from"),
    ("FROM a\nCOPY --link= x y\n", "dockerfile parse error line 2: Missing a value on flag: link"),
    (
        "FROM a\nCOPY --link=maybe x y\n",
        "dockerfile parse error line 2: Expecting boolean value for flag link, not: maybe",
    ),
    ("FROM a\nADD --from=x a b\n", "dockerfile parse error line 2: Unknown flag: from"),
    (
        "FROM a\nCOPY a <<EOF\nEOF\n",
        "dockerfile parse error line 2: COPY cannot accept a heredoc as a destination",
    ),
    (
        "FROM a\nONBUILD FROM busybox:local\n",
        "dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger",
    ),
    (
        "FROM a\nONBUILD MAINTAINER x\n",
        "dockerfile parse error line 2: MAINTAINER isn't allowed as an ONBUILD trigger",
    ),
    (
        "FROM a\nONBUILD ONBUILD RUN x\n",
        "dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
    ),
    (
        "FROM a\nSHELL /bin/sh -c\n",
        "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form",
    ),
    ("FROM a\nSHELL []\n", "dockerfile parse error line 2: SHELL requires at least one argument"),
    ("FROM a\nRUN --network=bridge x\n", 'dockerfile parse error line 2: invalid network mode "bridge"'),
    ("FROM a\nRUN --security=root x\n", 'dockerfile parse error line 2: security "root" is not valid'),
    ("FROM a\nRUN --device=x y\n", "dockerfile parse error line 2: Unknown flag: device"),
    (
        "FROM a\nRUN --mount=type=bind,from=$STAGE x\n",
        "dockerfile parse error line 2: "
        "'from' doesn't support variable expansion, define alias stage instead",
    ),
    ("FROM a\nRUN --mount= x\n", "dockerfile parse error line 2: failed to parse csv mounts: EOF"),
    ("FROM a\nENV a b\n\nRUN \\\n  --x y\n", "dockerfile parse error line 4: Unknown flag: x"),
]


@pytest.mark.parametrize("text,message", ERRORS, ids=[m.split(": ", 1)[-1][:40] for _, m in ERRORS])
def test_refusals(text, message):
    assert str(error_of(text)) == message


def test_error_location_spans_the_instruction():
    err = error_of("FROM a\nCOPY \\\n  onlyone\n")
    assert (err.line, err.location) == (2, (2, 3))


def test_a_stage_name_used_twice_is_not_a_parse_error():
    stages, _ = stages_of("FROM a AS x\nFROM b AS X\n")
    assert [s.name for s in stages] == ["x", "x"]


# ---- RUN --mount -------------------------------------------------------------------------------------


def same(word: str) -> str:
    return word


def test_mounts_are_parsed_at_dispatch_with_expansion():
    run = command(
        "RUN --mount=type=cache,target=$DIR,id=c,sharing=locked,mode=0755,uid=1 --mount=type=secret,id=s x\n"
    )
    cache, secret = run.mounts(lambda w: w.replace("$DIR", "/cache"))
    assert cache == Mount(
        type="cache", target="/cache", cache_id="c", cache_sharing="locked", mode=0o755, uid=1
    )
    assert (secret.type, secret.cache_id, secret.read_only) == ("secret", "s", True)


def test_mount_defaults_and_flags():
    assert parse_mount("target=/x", same) == Mount(type="bind", target="/x", read_only=True)
    assert parse_mount("type=bind,target=/x,rw", same).read_only is False
    assert parse_mount("type=tmpfs,dst=/t,size=64m", same) == Mount(
        type="tmpfs", target="/t", size_limit=64 << 20
    )
    assert parse_mount('type=bind,"source=a,b",target=/x,from=st', same).source == "a,b"
    assert parse_mount("type=ssh,required", same).required is True
    assert parse_mount("type=cache,target=/c,ro=true", same).read_only is True


@pytest.mark.parametrize(
    "spec,message",
    [
        ("type=nfs", 'unsupported mount type "nfs"'),
        ("type=cache,sharing=all", 'unsupported sharing value "all"'),
        ("type=bind,mode=0755", 'mode not allowed for "bind" type mounts'),
        ("type=cache,mode=9", "invalid value 9 for mode"),
        ("type=cache,uid=-1", "invalid value -1 for uid"),
        ("type=bind,ro=maybe", "invalid value for ro: maybe"),
        ("type=bind,required", "unexpected key 'required' for mount type 'bind'"),
        ("type=bind,size=1m", "unexpected key 'size' for mount type 'bind'"),
        ("type=bind,colour=red", "unexpected key 'colour' in 'colour=red'"),
        ("type=bind,bogus", "invalid field 'bogus' must be a key=value pair"),
        ("type=secret,from=x,id=a", "secret mount should not have a from"),
        ("type=secret", "invalid secret mount. one of source, target required"),
        ("type=secret,source=a,id=b", "both source and id can't be set"),
        ("type=bind,sharing=shared", "invalid cache sharing set for bind mount"),
        (
            'type=bind,a"b',
            'failed to parse csv mounts: parse error on line 1, column 12: bare " in non-quoted-field',
        ),
        (
            '"type=bind',
            "failed to parse csv mounts: parse error on line 1, column 11: "
            'extraneous or missing " in quoted-field',
        ),
    ],
)
def test_mount_errors(spec, message):
    with pytest.raises(DockerfileError) as info:
        parse_mount(spec, same)
    assert str(info.value) == message
