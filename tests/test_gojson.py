import json

from hypothesis import given
from hypothesis import strategies as st

from minibuild import gojson


def test_go_escapes_html_characters():
    assert (
        gojson.dumps({"stream": " ---> a & <b>\n"}) == '{"stream":" ---\\u003e a \\u0026 \\u003cb\\u003e\\n"}'
    )


def test_control_characters_as_go_writes_them():
    assert gojson.dumps("\x1b[91m\b\f\t") == '"\\u001b[91m\\u0008\\u000c\\t"'
    assert gojson.dumps("\\b") == '"\\\\b"'  # an escaped backslash followed by b stays as it is


def test_non_ascii_stays_utf8():
    assert gojson.dumps({"k": "한국어"}) == '{"k":"한국어"}'


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=10,
    )
)
def test_round_trips_through_json(value):
    assert json.loads(gojson.dumps(value)) == value
