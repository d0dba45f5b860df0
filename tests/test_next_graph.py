"""The build graph drawn with graphviz: BuildKit's vertex names, one edge per input."""

import asyncio
import shutil

import pytest

from minibuild.builder.next import llb
from minibuild.builder.next.dockerfile2llb import ConvertOpt, dockerfile_to_llb
from minibuild.builder.next.graph import states_from_progress, to_dot
from minibuild.builder.next.progress import Vertex as ProgressVertex

DOCKERFILE = b"""FROM busybox AS a
RUN echo a > /a.txt
FROM busybox AS b
RUN echo b > /b.txt
FROM busybox AS unused
RUN exit 1
FROM busybox AS c
COPY --from=a /a.txt /
COPY --from=b /b.txt /
"""


def graph():
    context = llb.State(llb.source("context://x", name="context"))
    result = asyncio.run(
        dockerfile_to_llb(DOCKERFILE, ConvertOpt(build_context=context, build_platform="linux/amd64"))
    )
    return llb.marshal(result.state)


def test_dot_source_has_the_vertices_and_edges():
    definition = graph()
    source = to_dot(definition, title="fanout").source
    assert "[c 2/3] COPY --from=a /a.txt /" in source
    assert "exit 1" not in source  # the unused stage is not in the graph
    edges = [line for line in source.splitlines() if "->" in line]
    assert len(edges) == sum(len(v.inputs) for v in definition)


def test_states_color_the_nodes():
    definition = graph()
    run = next(v for v in definition if v.kind == "exec")
    states = states_from_progress([ProgressVertex(run.digest, [], run.name, started=1.0, completed=2.0)])
    source = to_dot(definition, states=states).source
    assert "lightblue" in source and "dashed" in source


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")
def test_renders_svg():
    svg = to_dot(graph()).pipe(format="svg")
    assert svg.startswith(b"<?xml") and b"[c 3/3] COPY" in svg and b"from=b /b.txt" in svg
