"""Go's url.Parse: what it refuses, with its messages (the texts dockerd 20.10 answered), and the parts."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minibuild import gourl


@pytest.mark.parametrize(
    ("raw", "message"),
    [("https://a b", 'parse "https://a b": invalid character " " in host name'),
     ("https://a^b", 'parse "https://a^b": invalid character "^" in host name'),
     ("https://127.0.0.1:abc", 'parse "https://127.0.0.1:abc": invalid port ":abc" after host'),
     ("https://[::1]x", 'parse "https://[::1]x": invalid port "x" after host'),
     ("https://[::1", "parse \"https://[::1\": missing ']' in host"),
     ("https://127.0.0.1%zz", 'parse "https://127.0.0.1%zz": invalid URL escape "%zz"'),
     ("https://%41", 'parse "https://%41": invalid URL escape "%41"'),  # ASCII may not be escaped in a host
     ("https://a\x01b", 'parse "https://a\\x01b": net/url: invalid control character in URL'),
     ("https://a b@c", 'parse "https://a b@c": net/url: invalid userinfo'),
     ("https://h:1/%zz", 'parse "https://h:1/%zz": invalid URL escape "%zz"'),
     ("https://h:1#%g", 'parse "https://h:1#%g": invalid URL escape "%g"'),
     ("https://h:1/x#%", 'parse "https://h:1/x#%": invalid URL escape "%"'),
     ("https://https:foo", 'parse "https://https:foo": invalid port ":foo" after host'),
     (":x", 'parse ":x": missing protocol scheme'),
     ("1a:b/c", 'parse "1a:b/c": first path segment in URL cannot contain colon'),
     ("https://h:1/x\x7f#y", 'parse "https://h:1/x\\x7f": net/url: invalid control character in URL')],
)  # fmt: skip
def test_refusals_read_as_gos(raw, message):
    with pytest.raises(gourl.URLParseError) as err:
        gourl.parse(raw)
    assert str(err.value) == message


def test_the_parts():
    assert gourl.parse("https://u:p%40ss@Host:5000/v1/a%20b?q=1#frag") == gourl.URL(
        "https", "", "u:p@ss", "Host:5000", "/v1/a b", "q=1", "frag"
    )
    assert gourl.parse("HTTPS://[fe80::1%25en0]:80/").host == "[fe80::1%en0]:80"  # a zone may escape
    assert gourl.parse("https://h%C3%A9st").host == "hést"  # non-ASCII bytes may be escaped
    assert gourl.parse("https://x@y@z").host == "z"  # the last @ ends the userinfo
    assert gourl.parse("https:///v1/") == gourl.URL("https", path="/v1/")  # an empty host is no error
    assert gourl.parse("https://h:/").host == "h:"  # an empty port is allowed
    assert gourl.parse("mailto:someone").opaque == "someone"
    assert gourl.parse("/just/a/path?") == gourl.URL(path="/just/a/path")
    assert gourl.parse("https://h#a\x01").fragment == "a\x01"  # control characters only matter before #


@given(st.text(max_size=30))
def test_any_text_parses_or_is_refused_with_gos_error(text):
    try:
        url = gourl.parse("https://" + text)
    except gourl.URLParseError as err:
        assert str(err).startswith('parse "https://')
    else:
        assert url.scheme == "https"
