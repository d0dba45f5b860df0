"""Go's json.Unmarshal messages, as dockerd passes them through, and containerd's platform parsing."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.api import jsondecode as jd
from minibuild.api import platforms
from minibuild.api.httputils import NumError, parse_int

MAP_PTR_STRING = jd.map_of(jd.ptr_to(jd.STRING))
ULIMITS = jd.slice_of(jd.ptr_to(jd.struct("units.Ulimit", Name=jd.STRING, Hard=jd.INT64, Soft=jd.INT64)))


def err(text, t):
    with pytest.raises(jd.GoJSONError) as info:
        jd.unmarshal(text, t)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unexpected end of JSON input"),
        ("{", "unexpected end of JSON input"),
        ("{not json", "invalid character 'n' looking for beginning of object key string"),
        ("bad", "invalid character 'b' looking for beginning of value"),
        ("notjson", "invalid character 'o' in literal null (expecting 'u')"),
        ("tx", "invalid character 'x' in literal true (expecting 'r')"),
        ('{"a" 1}', "invalid character '1' after object key"),
        ('{"a":1 "b"}', "invalid character '\"' after object key:value pair"),
        ("[1 2]", "invalid character '2' after array element"),
        ("[1] x", "invalid character 'x' after top-level value"),
        ('{"a":1,}', "invalid character '}' looking for beginning of object key string"),
        ('"\\q"', "invalid character 'q' in string escape code"),
        ('"\\u12x4"', "invalid character 'x' in \\u hexadecimal character escape"),
        ('"a\tb"', "invalid character '\\t' in string literal"),
        ("-x", "invalid character 'x' in numeric literal"),
        ("1.x", "invalid character 'x' after decimal point in numeric literal"),
        ("1ex", "invalid character 'x' in exponent of numeric literal"),
        ("'a'", "invalid character '\\'' looking for beginning of value"),
        ("\x01", "invalid character '\\x01' looking for beginning of value"),
    ],
)
def test_syntax_errors(text, message):
    assert err(text, MAP_PTR_STRING) == message


def test_type_errors():
    assert (
        err("[1,2]", MAP_PTR_STRING)
        == "json: cannot unmarshal array into Go value of type map[string]*string"
    )
    assert err('{"a":1}', MAP_PTR_STRING) == "json: cannot unmarshal number into Go value of type string"
    assert (
        err('{"a":true}', jd.map_of(jd.STRING)) == "json: cannot unmarshal bool into Go value of type string"
    )
    assert err('[{"Hard":"1"}]', ULIMITS) == (
        "json: cannot unmarshal string into Go struct field Ulimit.Hard of type int64"
    )
    assert err('[{"Hard":1.5}]', ULIMITS) == (
        "json: cannot unmarshal number 1.5 into Go struct field Ulimit.Hard of type int64"
    )
    assert err("[1]", ULIMITS) == "json: cannot unmarshal number into Go value of type units.Ulimit"


def test_go_decoding_rules():
    assert jd.unmarshal("null", MAP_PTR_STRING) is None
    assert jd.unmarshal('{"a":null,"b":"x"}', MAP_PTR_STRING) == {"a": None, "b": "x"}
    assert jd.unmarshal('[{"name":"n","HARD":2,"other":1}]', ULIMITS) == [{"Name": "n", "Hard": 2}]
    assert jd.decode_partial('{"a":1,"b":"x"}', jd.map_of(jd.STRING)) == {"a": None, "b": "x"}


@settings(deadline=None)  # no per-example time limit: the machine may be loaded
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_valid_json_never_has_syntax_errors(value):
    try:
        jd.unmarshal(json.dumps(value), MAP_PTR_STRING)
    except jd.GoJSONError as e:
        assert str(e).startswith("json: cannot unmarshal")


@settings(deadline=None)  # no per-example time limit: the machine may be loaded
@given(st.text())
def test_any_text_gives_a_go_error_or_a_value(text):
    try:
        jd.unmarshal(text, ULIMITS)
    except jd.GoJSONError:
        pass


def test_strconv_messages():
    assert parse_int("67108864") == 67108864
    assert parse_int("-5") == -5
    with pytest.raises(NumError, match=r'^strconv.ParseInt: parsing "abc": invalid syntax$'):
        parse_int("abc")
    with pytest.raises(NumError, match=r"value out of range$"):
        parse_int("99999999999999999999")
    with pytest.raises(NumError, match=r'^strconv.Atoi: parsing "1_0": invalid syntax$'):
        parse_int("1_0", "Atoi")
    with pytest.raises(NumError, match=r'^strconv.ParseInt: parsing "a\\"b\\n\\x01é": invalid syntax$'):
        parse_int('a"b\n\x01é')  # the input as strconv.Quote shows it


@pytest.mark.parametrize(
    ("spec", "formatted"),
    [
        ("linux", "linux/amd64"),
        ("linux/amd64", "linux/amd64"),
        ("Linux/X86_64", "linux/amd64"),
        ("windows/amd64", "windows/amd64"),
        ("linux/arm64", "linux/arm64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/aarch64/8", "linux/arm64/v8"),
        ("linux/arm", "linux/arm"),
        ("linux/armhf", "linux/arm"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("arm64", "linux/arm64"),
        ("macos/amd64", "darwin/amd64"),
        ("linux/i386", "linux/386"),
    ],
)
def test_platform_parse(spec, formatted, monkeypatch):
    monkeypatch.setattr(platforms, "host_arch", lambda: "amd64")
    assert platforms.parse(spec).format() == formatted


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus", '"bogus": unknown operating system or architecture: invalid argument'),
        ("", '"" is an invalid component of "": platform specifier component must match "^[A-Za-z0-9_-]+$": '
         "invalid argument"),
        ("linux/a.b", '"a.b" is an invalid component of "linux/a.b": platform specifier component must match '
         '"^[A-Za-z0-9_-]+$": invalid argument'),
        ("a/b/c/d", '"a/b/c/d": cannot parse platform specifier: invalid argument'),
        ("linux/*", '"linux/*": wildcards not yet supported: invalid argument'),
    ],
)  # fmt: skip
def test_platform_errors(spec, message):
    with pytest.raises(platforms.PlatformError) as info:
        platforms.parse(spec)
    assert str(info.value) == message
