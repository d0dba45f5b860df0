"""The BuildKit-style builder (moby builder/builder-next; buildkit dockerfile2llb, solver, util/progress).

llb.py            vertices, states and their digests (buildkit client/llb)
dockerfile2llb.py Dockerfile -> graph + image config, only the stages the target needs
solver.py         runs the graph: parallel, pruned by the cache, cancellable (buildkit solver/)
cache.py          cache records persisted under the data root (buildkit cache/, solver/cachemanager)
ops.py            what vertices do for real: images, the context, RUN, COPY/ADD (buildkit llbsolver/ops)
pull.py           registry images: config resolution, layers pulled into the cache (moby containerimage)
progress.py       vertex events and the StatusResponse protobuf of `moby.buildkit.trace` messages
progressui.py     `--progress plain|tty` (buildkit util/progress/progressui)
timeline.py       a finished build as a timeline, and the solver on a virtual clock (SIMULATION)
graph.py          the graph drawn with graphviz
controller.py     solve requests: frontend, solver, exporter (buildkit control/)
builder.py        Builder.build for POST /build?version=2 (moby builder-next/builder.go)
"""
