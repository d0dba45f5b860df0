"""Whatever metadata instructions a Dockerfile holds, the classic builder either builds it or refuses it
with one of minibuild's errors (Docker's messages): it never fails with an exception of Python's own."""

import os

import pytest
from golden.harness import BuildBench
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibuild import errdefs
from minibuild.api.jsonmessage import JSONError

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="steps need root (or user namespaces) here"),
]
WORDS = st.text(st.sampled_from("ab$1=:/-.*[]\\\"' {}"), min_size=1, max_size=8)
INSTRUCTIONS = st.one_of(
    st.builds("ENV {}={}".format, WORDS, WORDS),
    st.builds("LABEL {}={}".format, WORDS, WORDS),
    st.builds("ARG {}".format, WORDS),
    st.builds("EXPOSE {}".format, WORDS),
    st.builds("USER {}".format, WORDS),
    st.builds("WORKDIR {}".format, WORDS),
    st.builds("STOPSIGNAL {}".format, WORDS),
    st.builds("VOLUME {}".format, WORDS),
    st.builds("CMD {}".format, WORDS),
    st.builds("ENTRYPOINT {}".format, WORDS),
    st.builds("HEALTHCHECK --interval={} CMD {}".format, WORDS, WORDS),
    st.builds("COPY {} {}".format, WORDS, WORDS),
    st.builds("ONBUILD ENV {}={}".format, WORDS, WORDS),
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return BuildBench(tmp_path_factory.mktemp("root"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["scratch", "busybox:local"]), st.lists(INSTRUCTIONS, max_size=4))
def test_builds_or_refuses_with_dockers_errors(bench, base, instructions):
    dockerfile = "\n".join([f"FROM {base}", *instructions]) + "\n"
    built = bench.build(dockerfile, {"a": b"a", "b/c": b"c"})
    assert built.error is None or isinstance(built.error, errdefs.DockerError | JSONError), repr(built.error)
    if built.error is None and base == "busybox:local":
        assert bench.service.get_image(built.image_id)
