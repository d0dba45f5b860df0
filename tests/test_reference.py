"""Docker's reference grammar and normalization (docker/distribution reference)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.image.reference import (
    DigestReference,
    InvalidReference,
    Reference,
    familiar_name,
    familiar_string,
    parse,
    parse_any_reference,
    parse_named,
    parse_normalized_named,
    tag_name_only,
    with_digest,
    with_tag,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox", "busybox"),
        ("busybox:latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("library/busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("docker.io/library/busybox", "docker.io/library/busybox", "busybox"),
        ("index.docker.io/busybox", "docker.io/library/busybox", "busybox"),
        ("user/app", "docker.io/user/app", "user/app"),
        ("docker.io/library/a/b", "docker.io/library/a/b", "library/a/b"),
        ("localhost/app:v1", "localhost/app:v1", "localhost/app:v1"),
        ("localhost:5000/team/app", "localhost:5000/team/app", "localhost:5000/team/app"),
        ("registry.example.com/app@" + DIGEST, "registry.example.com/app@" + DIGEST,
         "registry.example.com/app@" + DIGEST),
        ("app:v1@" + DIGEST, "docker.io/library/app:v1@" + DIGEST, "app:v1@" + DIGEST),
        ("u/a.b_c__d-e---f", "docker.io/u/a.b_c__d-e---f", "u/a.b_c__d-e---f"),
        ("Example.COM/app", "Example.COM/app", "Example.COM/app"),  # upper case is fine in a domain
        ("mbref-img:Tag_1.2-x", "docker.io/library/mbref-img:Tag_1.2-x", "mbref-img:Tag_1.2-x"),
        ("88bb", "docker.io/library/88bb", "88bb"),
        ("sha256:88bb", "docker.io/library/sha256:88bb", "sha256:88bb"),  # a name with a tag!
    ],
)  # fmt: skip
def test_normalization_and_familiar_form(text, full, familiar):
    ref = parse_normalized_named(text)
    assert str(ref) == full
    assert familiar_string(ref) == familiar


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("BUSYBOX:local", "invalid reference format: repository name must be lowercase"),
        ("Foo/bar", "invalid reference format: repository name must be lowercase"),
        ("localhost:5000/Foo", "invalid reference format: repository name must be lowercase"),
        ("", "invalid reference format"),  # docker.io/library/ with an empty remainder
        ("foo:bad!", "invalid reference format"),
        ("foo//bar", "invalid reference format"),
        ("-foo", "invalid reference format"),
        ("foo_", "invalid reference format"),
        ("foo:" + "t" * 129, "invalid reference format"),
        ("a" * 256, "repository name must not be more than 255 characters"),
        ("a" * 240, "repository name must not be more than 255 characters"),  # docker.io/library/ counts
        ("app@sha256:abc", "invalid reference format"),
        ("app@sha256:" + "a" * 63 + "g", "invalid reference format"),
        ("app@sha256:" + "a" * 40, "invalid checksum digest length"),
        ("app@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("ab" * 32, f"invalid repository name ({'ab' * 32}), cannot specify 64-byte hexadecimal strings"),
    ],
)
def test_invalid_references(text, message):
    with pytest.raises(InvalidReference) as err:
        parse_normalized_named(text)
    assert str(err.value) == message


def test_parse_without_normalizing():
    ref = parse("localhost:5000/app:v1")
    assert (ref.domain, ref.path, ref.tag) == ("localhost:5000", "app", "v1")
    assert parse("busybox") == Reference("", "busybox")
    with pytest.raises(InvalidReference, match="repository name must have at least one component"):
        parse("")
    with pytest.raises(InvalidReference, match="must be lowercase"):
        parse("Busybox")


def test_parse_named_requires_canonical_form():
    assert str(parse_named("docker.io/library/busybox:latest")) == "docker.io/library/busybox:latest"
    with pytest.raises(InvalidReference, match="repository name must be canonical"):
        parse_named("busybox")


def test_parse_any_reference():
    assert parse_any_reference("ab" * 32) == DigestReference("sha256:" + "ab" * 32)
    assert parse_any_reference(DIGEST) == DigestReference(DIGEST)
    assert isinstance(parse_any_reference("busybox"), Reference)
    assert familiar_string(parse_any_reference(DIGEST)) == DIGEST


def test_tags_and_digests():
    ref = parse_normalized_named("busybox")
    assert familiar_string(tag_name_only(ref)) == "busybox:latest"
    assert tag_name_only(with_tag(ref, "v1")).tag == "v1"
    assert tag_name_only(with_digest(ref, DIGEST)).tag == ""  # a digest is enough, no :latest added
    with pytest.raises(InvalidReference, match="^invalid tag format$"):
        with_tag(ref, "BAD!")
    with pytest.raises(InvalidReference, match="^invalid tag format$"):
        with_tag(ref, ".starts-with-dot")
    with pytest.raises(InvalidReference, match="invalid digest format"):
        with_digest(ref, "nope")
    assert familiar_name(parse_normalized_named("user/app:1")) == "user/app"


def test_pathological_inputs_finish():
    """Python's regex engine backtracks; the rewritten grammar must not explode on long garbage."""
    long_inputs = ["a" * 50_000 + "!", "a-" * 20_000 + "!", "a." * 20_000 + "/", "a/b" * 9_000 + "@"]
    for text in long_inputs:
        with pytest.raises(InvalidReference):
            parse_normalized_named(text)


_component = st.from_regex(r"[a-z0-9]{1,4}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,4}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)


@settings(deadline=None)  # a loaded machine must not fail it
@given(st.lists(_component, min_size=1, max_size=3), st.one_of(st.none(), _tag))
def test_round_trip(components, tag):
    text = "/".join(components) + (f":{tag}" if tag else "")
    ref = parse_normalized_named(text)
    assert parse_normalized_named(str(ref)) == ref
    assert parse_normalized_named(familiar_string(ref)) == ref


@settings(deadline=None)  # a loaded machine must not fail it
@given(st.text(max_size=80))
def test_only_our_error_escapes(text):
    try:
        ref = parse_any_reference(text)
    except InvalidReference:
        return
    assert str(ref)
