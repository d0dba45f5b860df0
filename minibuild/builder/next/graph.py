"""The build graph drawn with graphviz (buildkit cmd/buildctl/debug/dumpllb.go, `buildctl debug
dump-llb --dot`).

One node per vertex, named as BuildKit names it (`[stage-3 2/4] COPY --from=a /a.txt /`) with its short
digest; an edge from each input to the vertex that reads it. Sources, RUNs and file ops have their own
shapes; a finished build can color its nodes by what happened (`states`: digest -> "cached", "ran",
"error", or absent for vertices the build never needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from minibuild.builder.next.llb import Definition, State, Vertex, marshal

_SHAPES = {"source": "box", "exec": "ellipse", "file": "note"}
_COLORS = {"cached": "lightgray", "ran": "lightblue", "error": "salmon"}


def label(vertex: Vertex) -> str:
    """The node's text: the vertex name (or its op when unnamed) and the start of its digest."""
    name = vertex.name or _describe(vertex)
    return f"{name}\n{vertex.digest[7:19]}"


def _describe(vertex: Vertex) -> str:
    op = vertex.op
    if op["type"] == "source":
        return op["identifier"]
    if op["type"] == "exec":
        return " ".join(op["args"])
    if op["type"] == "file":
        return ", ".join(a["action"] for a in op["actions"])
    return op.get("name", op["type"])


def to_dot(
    target: Vertex | State | Definition, *, states: Mapping[str, str] | None = None, title: str = ""
) -> Any:
    """A graphviz.Digraph of everything `target` depends on (the package is only needed here)."""
    import graphviz

    definition = target if isinstance(target, Definition) else marshal(target)
    dot = graphviz.Digraph("llb", graph_attr={"rankdir": "TB", "label": title, "fontname": "Helvetica"})
    dot.attr("node", fontname="Helvetica", fontsize="10")
    for v in definition:
        attrs = {"shape": _SHAPES.get(v.kind, "box")}
        state = (states or {}).get(v.digest)
        if state in _COLORS:
            attrs.update(style="filled", fillcolor=_COLORS[state])
        elif states is not None:
            attrs.update(style="dashed")  # never needed by this build
        dot.node(v.digest[7:19], label(v), **attrs)
        for i in v.inputs:
            dot.edge(i.digest[7:19], v.digest[7:19])
    return dot


def states_from_progress(vertices: Mapping[str, Any] | list[Any]) -> dict[str, str]:
    """digest -> cached / ran / error, from progress vertices (a ProgressWriter's or decoded traces)."""
    items = vertices.values() if isinstance(vertices, Mapping) else vertices
    out: dict[str, str] = {}
    for v in items:
        if v.error:
            out[v.digest] = "error"
        elif v.cached:
            out[v.digest] = "cached"
        elif v.started is not None:
            out[v.digest] = "ran"
    return out
