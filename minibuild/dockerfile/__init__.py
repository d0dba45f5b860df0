"""The Dockerfile front end shared by both builders (buildkit frontend/dockerfile: parser, instructions).

    result = parse(data)                          # bytes -> AST (Result.ast is the root Node)
    stages, meta_args = parse_instructions(result.ast)   # AST -> typed instructions, grouped in stages

Both raise DockerfileError (ParseError for what the parser itself refuses); `daemon_message` words an
error the way dockerd answers it.
"""

from minibuild.dockerfile.errors import DockerfileError, ParseError, daemon_message
from minibuild.dockerfile.heredoc import Heredoc
from minibuild.dockerfile.instructions import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    Command,
    CopyCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthCheckCommand,
    HealthConfig,
    KeyValuePair,
    KeyValuePairOptional,
    LabelCommand,
    MaintainerCommand,
    Mount,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    ShellInlineFile,
    SourceContent,
    Stage,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    check_stage_name_available,
    has_stage,
    new_label_command,
    parse_instruction,
    parse_mount,
)
from minibuild.dockerfile.instructions import parse as parse_instructions
from minibuild.dockerfile.parser import Node, ParseWarning, Result, parse

__all__ = [
    "AddCommand",
    "ArgCommand",
    "CmdCommand",
    "Command",
    "CopyCommand",
    "DockerfileError",
    "EntrypointCommand",
    "EnvCommand",
    "ExposeCommand",
    "HealthCheckCommand",
    "HealthConfig",
    "Heredoc",
    "KeyValuePair",
    "KeyValuePairOptional",
    "LabelCommand",
    "MaintainerCommand",
    "Mount",
    "Node",
    "OnbuildCommand",
    "ParseError",
    "ParseWarning",
    "Result",
    "RunCommand",
    "ShellCommand",
    "ShellInlineFile",
    "SourceContent",
    "Stage",
    "StopSignalCommand",
    "UserCommand",
    "VolumeCommand",
    "WorkdirCommand",
    "check_stage_name_available",
    "daemon_message",
    "has_stage",
    "new_label_command",
    "parse",
    "parse_instruction",
    "parse_instructions",
    "parse_mount",
]
