"""How fast the Dockerfile front end reads a large file: parser + instructions on a 10,000-line Dockerfile.

    .venv/bin/python bench/parse_dockerfile.py [--lines N] [--runs N]

The file mixes every instruction kind, JSON and shell forms, continuations (with comments and blank
lines inside), heredocs, comments and blank lines. Prints the median of several runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from minibuild.dockerfile import parse, parse_instructions


def generate(lines: int, seed: int = 1) -> str:
    """A valid Dockerfile of at least `lines` physical lines."""
    rng = random.Random(seed)
    out = ["# syntax=docker/dockerfile:1", "ARG BASE=busybox:local", "FROM ${BASE} AS stage0"]
    words = ["build", "install", "--no-cache", "/usr/local/bin", "$HOME", "make", "-j4", "&&", "echo", "ok"]
    stage = 0
    while len(out) < lines:
        kind = rng.randrange(12)
        text = "echo " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 7)))
        if kind == 0:
            out += ["", "# build step"]
        elif kind == 1:
            out += [f"RUN {text} \\", "    # keep going", f"    && {text} \\", "", f"    && {text}"]
        elif kind == 2:
            out += ["RUN <<EOF", *[f"echo line {i} {text}" for i in range(rng.randint(1, 4))], "EOF"]
        elif kind == 3:
            out.append(f'CMD ["{rng.choice(words)}", "{rng.choice(words)}"]')
        elif kind == 4:
            out.append(f'ENV KEY{len(out)}="{text}" OTHER=value\\ with\\ spaces')
        elif kind == 5:
            out.append(f"COPY --chown=1000:1000 --from=stage0 src/{len(out)} /dst/")
        elif kind == 6:
            out.append(f'LABEL org.example.k{len(out)}="v" maintainer="team"')
        elif kind == 7:
            out.append("HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD wget -q localhost || exit 1")
        elif kind == 8:
            out.append(f"WORKDIR /app/{len(out)}")
        elif kind == 9:
            out += ["COPY <<-CONF /etc/app.conf", "\tkey = value", f"\tother = {text}", "\tCONF"]
        elif kind == 10:
            out.append(f"ONBUILD RUN {text}")
        else:
            stage += 1
            out.append(f"FROM stage{stage - 1} AS stage{stage}")
    return "\n".join(out) + "\n"  # the last instruction may end a few lines past `lines`


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--lines", type=int, default=10_000)
    cli.add_argument("--runs", type=int, default=7)
    args = cli.parse_args()
    data = generate(args.lines).encode()
    line_count = data.count(b"\n")
    timings = []
    for _ in range(args.runs):
        start = time.perf_counter()
        result = parse(data)
        stages, _ = parse_instructions(result.ast)
        timings.append(time.perf_counter() - start)
    median = statistics.median(timings)
    instructions = len(result.ast.children)
    print(
        f"Dockerfile: {line_count} lines, {len(data)} bytes, "
        f"{instructions} instructions, {len(stages)} stages"
    )
    print(f"parse + instructions, median of {args.runs}: {median * 1000:.1f} ms")
    print(f"throughput: {line_count / median:,.0f} lines/s ({instructions / median:,.0f} instructions/s)")


if __name__ == "__main__":
    main()
