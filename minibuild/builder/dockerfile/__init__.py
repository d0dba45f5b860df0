"""The classic builder, `docker build` before BuildKit (moby builder/dockerfile).

builder.py      BuildManager.build and the loop, dispatch_dockerfile_with_cancellation
evaluator.py    dispatch (one switch over the instruction types) and the state it changes
dispatchers.py  one handler per instruction, FROM's initialize_stage
internals.py    commit, probe_cache, create, perform_copy: what every step shares
containers.py   the build's containers: created, run, removed
imagecontext.py base images (local or pulled) and writable layers on top of them
imageprobe.py   the build cache: same parent, same step config
copy.py         COPY and ADD: sources, hashes, wildcards, directory rules, downloads
buildargs.py    --build-arg, ARG and the unused-args warning
"""
