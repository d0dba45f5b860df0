"""`python -m minibuild.dockerfile FILE`: print a Dockerfile's AST (buildkit
frontend/dockerfile/parser/dumper/main.go).

One s-expression per instruction, as upstream's conformance `result` files show it. `-` reads standard
input. `--check` also builds the instructions, so their errors (unknown instruction, bad flags...) show
too. An error goes to standard error with its line number, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys

from minibuild.dockerfile import DockerfileError, parse, parse_instructions


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m minibuild.dockerfile", description=__doc__.split("\n\n")[1])
    cli.add_argument("file", help="the Dockerfile, or - for standard input")
    cli.add_argument("--check", action="store_true", help="also validate the instructions")
    args = cli.parse_args(argv)
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                data = f.read()
    except OSError as e:
        print(f"{args.file}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        result = parse(data)
        if args.check:
            parse_instructions(result.ast)
    except DockerfileError as e:
        where = f":{e.location[0]}" if e.location else ""
        print(f"{args.file}{where}: {e}", file=sys.stderr)
        return 1
    result.print_warnings(sys.stderr)
    sys.stdout.write(result.ast.dump() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
