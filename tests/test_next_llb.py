"""LLB vertices: digests of canonical definitions, identical vertices collapse, metadata stays out."""

import hashlib
import json

from minibuild.builder.next import llb


def image(ref: str = "docker.io/library/busybox:latest") -> llb.State:
    return llb.State(llb.source("docker-image://" + ref, name="FROM " + ref))


def test_digest_is_sha256_of_the_marshalled_definition():
    v = image().output
    assert v.digest == "sha256:" + hashlib.sha256(v.marshal()).hexdigest()
    decoded = json.loads(v.marshal())
    assert decoded == {"inputs": [], "op": v.op}


def test_names_and_no_cache_do_not_change_the_digest():
    a = image().run(["/bin/sh", "-c", "true"], name="[a 2/2] RUN true").output
    b = image().run(["/bin/sh", "-c", "true"], name="[b 2/2] RUN true", ignore_cache=True).output
    assert a.digest == b.digest
    assert a.name != b.name


def test_digest_depends_on_op_and_inputs():
    base = image()
    run = base.run(["/bin/sh", "-c", "true"], name="x").output
    assert run.digest != base.run(["/bin/sh", "-c", "false"], name="x").output.digest
    assert (
        run.digest
        != image("docker.io/library/alpine:latest").run(["/bin/sh", "-c", "true"], name="x").output.digest
    )
    assert run.digest != base.add_env("A", "1").run(["/bin/sh", "-c", "true"], name="x").output.digest
    assert run.digest != base.with_dir("/app").run(["/bin/sh", "-c", "true"], name="x").output.digest
    assert run.digest != base.with_user("1000").run(["/bin/sh", "-c", "true"], name="x").output.digest


def test_identical_vertices_collapse_in_the_definition():
    a = image().run(["/bin/sh", "-c", "echo hi > /x"], name="[a 2/2] RUN echo hi > /x")
    b = image().run(["/bin/sh", "-c", "echo hi > /x"], name="[b 2/2] RUN echo hi > /x")
    final = image().file(llb.copy(a, "/x", "/a").copy(b, "/x", "/b"), name="COPY both")
    definition = llb.marshal(final)
    # FROM once, RUN once (two stages wrote it), the file op: three vertices.
    assert len(definition) == 3
    assert [v.kind for v in definition] == ["source", "exec", "file"]
    file_op = definition.target
    assert len(file_op.inputs) == 2  # the base image, and the one RUN both copies read
    assert file_op.inputs[1] is definition.vertices[1]
    assert definition.vertices[1].name == "[a 2/2] RUN echo hi > /x"  # the first one met keeps its name


def test_definition_orders_inputs_first_and_round_trips_to_bytes():
    st = image()
    for i in range(5):
        st = st.run(["/bin/sh", "-c", f"echo {i}"], name=f"step {i}")
    definition = llb.marshal(st)
    seen = set()
    for v in definition:
        assert all(i.digest in seen for i in v.inputs)
        seen.add(v.digest)
    lines = definition.to_bytes().splitlines()
    assert len(lines) == len(definition) + 1
    assert [hashlib.sha256(line).hexdigest() for line in lines[:-1]] == [v.digest[7:] for v in definition]
    assert json.loads(lines[-1])[definition.target.digest]["name"] == "step 4"


def test_deep_chains_marshal_without_recursion():
    st = image()
    for i in range(5000):
        st = st.run(["true", str(i)], name=str(i))
    assert len(llb.marshal(st)) == 5001


def test_scratch_file_op_and_exec_mounts():
    inline = llb.State().file(llb.mkfile("/f", 0o644, b"data"), name="inline")
    assert inline.output.op["base"] == -1 and inline.output.inputs == ()
    assert inline.output.op["actions"][0]["data"] == b"data".hex()
    ctx = image("docker.io/library/ctx:latest")
    run = image().run(
        ["true"],
        name="run",
        mounts=[
            llb.Mount("/src", ctx, selector="/sub", readonly=True),
            llb.Mount("/cache", type="cache", cache_id="c"),
        ],
    )
    mounts = run.output.op["mounts"]
    assert mounts[0] == {"dest": "/", "input": 0, "output": 0}
    assert mounts[1] == {"dest": "/src", "type": "bind", "input": 1, "selector": "/sub", "readonly": True}
    assert mounts[2]["type"] == "cache" and mounts[2]["cache_id"] == "c"


def test_state_env_is_ordered_and_replaced():
    st = llb.State().add_env("A", "1").add_env("B", "2").add_env("A", "3")
    assert st.env_list() == ["B=2", "A=3"]
    assert st.get_env("A") == "3" and st.get_env("C") is None
