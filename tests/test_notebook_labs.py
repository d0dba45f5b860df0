"""The labs' self-checks (notebooks/08-labs.py) refuse wrong answers: nbval shows that the worked answers
pass; here the same check functions, run on the unchanged exercises or on broken answers, must fail
with a message that says what is wrong."""

import base64
import json
import os
import re
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here"),
]
LABS = Path(__file__).resolve().parent.parent / "notebooks" / "08-labs.py"


@pytest.fixture(scope="module")
def lab():
    """The notebook's code run as a module: its setup, tools, exercises and check functions, without
    the cells that call the checks on the worked answers."""
    cells = LABS.read_text().split("\n# %%")
    code = [c for c in cells if not c.startswith(" [markdown]")]
    namespace: dict = {}
    sys.path.insert(0, str(LABS.parent))  # its helper module _setup, as a kernel in notebooks/ finds it
    try:
        for cell in code:
            if "check_exercise_" in cell and "def check_exercise_" not in cell:
                cell = "\n".join(line for line in cell.splitlines() if not line.startswith("check_exercise_"))
            if "daemon.stop()" in cell:
                continue
            exec(compile(cell, str(LABS), "exec"), namespace)
    finally:
        sys.path.remove(str(LABS.parent))
    yield namespace
    namespace["session"].close()
    namespace["client"].close()
    namespace["daemon"].stop()


def test_exercise_1_refuses_the_unchanged_dockerfile(lab):
    with pytest.raises(AssertionError, match="slow RUN ran again"):
        lab["check_exercise_1"](lab["ORIGINAL_1"])


def test_exercise_1_refuses_a_different_image(lab):
    without_deps = lab["ANSWER_1"].replace('"dependencies installed"', '"something else"')
    with pytest.raises(AssertionError, match="not the same image.*deps.txt"):
        lab["check_exercise_1"](without_deps)


def test_exercise_2_refuses_a_parallel_build_with_other_contents(lab):
    missing_part = lab["ANSWER_2"].replace("COPY --from=part8 /part8 /part8\n", "")
    with pytest.raises(AssertionError, match="not the same image.*part8"):
        lab["check_exercise_2"](missing_part)


def test_exercise_3_refuses_wrong_requests(lab):
    answers = dict(lab["ANSWER_3"])
    answers["b"] = ({"dockerfile": "/etc/passwd"}, "FROM busybox:local\n")
    refused = re.escape("b: got 500 'Cannot locate specified Dockerfile: /etc/passwd'")
    with pytest.raises(AssertionError, match=refused):
        lab["check_exercise_3"](answers)


def test_exercise_4_refuses_wrong_readings(lab):
    with pytest.raises(AssertionError, match=re.escape("4a: the build announced N = {6}, you said 8")):
        lab["check_exercise_4"](8, "newImageBuildOptions", 2)
    with pytest.raises(AssertionError, match=re.escape("4b: the trace says newImageBuildOptions refused it")):
        lab["check_exercise_4"](6, "(*Backend).Build", 2)
    with pytest.raises(AssertionError, match="4c: the solver visited 2 vertices"):
        lab["check_exercise_4"](6, "newImageBuildOptions", 7)


def test_exercise_5_refuses_a_header_the_daemon_cannot_read(lab):
    def config_json_as_is(config_json: dict) -> str:  # the auths, still base64 "user:password": wrong
        return base64.urlsafe_b64encode(json.dumps(config_json["auths"]).encode()).decode()

    with pytest.raises(AssertionError, match="the daemon decodes your header as"):
        lab["check_exercise_5"](config_json_as_is)
