"""The canonical path: one spelling of every path, or a refusal, for routing and forwarding."""

from __future__ import annotations

import re
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spork_cli.gateway.canonical import BadPath, canonical_path, canonical_target, is_canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        # dot segments, RFC 3986 5.2.4
        ("/a/../b", "/b"),
        ("/a/b/..", "/a/"),
        ("/..", "/"),
        ("/../../x", "/x"),
        ("/a/./b", "/a/b"),
        ("/a/.", "/a/"),
        ("/a//../b", "/b"),
        ("/a/%2e", "/a/"),
        ("/open/%2e%2E/private/x", "/private/x"),
        ("/.well-known/x", "/.well-known/x"),
        ("/a/.../b", "/a/.../b"),
        ("/x/..//evil.example/s", "/evil.example/s"),
        ("/", "/"),
        # unreserved characters decoded, other escapes upper-cased
        ("/svc/%61dmin/secret", "/svc/admin/secret"),
        ("/svc/%41%44MIN", "/svc/ADMIN"),
        ("/a/%7e%2D%5f%2e", "/a/~-_."),
        ("/a/%3b%3D%40", "/a/%3B%3D%40"),
        ("/a/%25", "/a/%25"),
        ("/a/%c3%a9", "/a/%C3%A9"),
        # characters a path may not hold raw are encoded
        ('/a/"b"', "/a/%22b%22"),
        ("/a/|{}^`[]", "/a/%7C%7B%7D%5E%60%5B%5D"),
        ("/a/x y", "/a/x%20y"),
        # sub-delims and ":" "@" stay raw
        ("/a/b;c=d,e!$&'()*+:@", "/a/b;c=d,e!$&'()*+:@"),
        # merged slashes
        ("//a", "/a"),
        ("/a//b///c", "/a/b/c"),
        ("/a/b//", "/a/b/"),
    ],
)
def test_canonical_path(raw: str, canonical: str) -> None:
    assert canonical_path(raw) == canonical
    assert canonical_path(canonical) == canonical  # idempotent
    if raw != canonical:
        assert not is_canonical(raw)  # the fast path never passes a path that would change


def test_slashes_are_kept_when_merging_is_off() -> None:
    assert canonical_path("/a//b", merge_slashes=False) == "/a//b"
    assert canonical_path("/a//b/", merge_slashes=False) == "/a//b/"
    # Even so, a path never starts with two slashes, which reads as a host name.
    assert canonical_path("//evil.example/x", merge_slashes=False) == "/evil.example/x"


@pytest.mark.parametrize(
    ("raw", "slug"),
    [
        ("/svc/admin%2fsecret", "ambiguous-path"),
        ("/svc/admin%2Fsecret", "ambiguous-path"),
        ("/svc/admin%5csecret", "ambiguous-path"),
        ("/svc/admin\\secret", "ambiguous-path"),
        ("/a/b%2F..%2Fc", "ambiguous-path"),
        ("/x/..;/admin", "ambiguous-path"),
        ("/x/..;", "ambiguous-path"),
        ("/x/.;a/admin", "ambiguous-path"),
        ("/x/%2e%2E%5Cadmin", "ambiguous-path"),
        ("/a%00b", "bad-path"),
        ("/a%0ab", "bad-path"),
        ("/a%7Fb", "bad-path"),
        ("/a\tb", "bad-path"),
        ("/a%zz", "bad-path"),
        ("/a%4", "bad-path"),
        ("/a%", "bad-path"),
        ("a/b", "bad-path"),
    ],
)
def test_what_cannot_be_made_unambiguous_is_refused(raw: str, slug: str) -> None:
    with pytest.raises(BadPath) as refused:
        canonical_path(raw)
    assert refused.value.slug == slug
    assert not is_canonical(raw)


def test_a_raw_fragment_is_refused_and_the_query_is_kept_as_sent() -> None:
    with pytest.raises(BadPath, match="'#'"):
        canonical_target("/svc/admin#x")
    with pytest.raises(BadPath, match="'#'"):
        canonical_target("/svc/x?a=1#frag")
    assert canonical_target("/svc/%61dmin?q=%61/../x&b=%2F") == "/svc/admin?q=%61/../x&b=%2F"
    assert canonical_target("/svc/admin?q=%2F") is None  # canonical already: nothing to do


# --- the property: one meaning for every spelling -----------------------------------------------

SEGMENT = st.text(alphabet="abcdAZ09-._~!$&'()*+,;=:@%/ \"|", min_size=0, max_size=6)


@st.composite
def spellings(draw: st.DrawFn) -> str:
    """Paths built from segments, with characters percent-encoded at random (either hex case),
    dot segments and repeated slashes among them."""
    segments = draw(
        st.lists(st.one_of(SEGMENT, st.sampled_from([".", "..", "%2e", ""])), max_size=6)
    )
    out = []
    for segment in segments:
        chars = []
        for char in segment:
            if draw(st.booleans()) or char in '% "|':
                escape = f"%{ord(char):02x}"
                chars.append(escape.upper() if draw(st.booleans()) else escape)
            else:
                chars.append(char)
        out.append("".join(chars))
    return "/" + "/".join(out)


def decoded_segments(path: str) -> list[str]:
    """What a server that splits on "/" and then percent-decodes each segment sees (Starlette,
    aiohttp and Werkzeug all decode this way for routing), dot segments resolved and empty
    segments merged."""
    kept: list[str] = []
    for raw in path.split("/")[1:]:
        segment = urllib.parse.unquote(raw, errors="strict")
        if segment == ".":
            continue
        if segment == "..":
            if kept:
                kept.pop()
            continue
        if segment:
            kept.append(segment)
    return kept


@settings(max_examples=400, deadline=None)
@given(spellings())
def test_every_spelling_means_what_its_canonical_form_means(raw: str) -> None:
    try:
        canonical = canonical_path(raw)
    except BadPath:
        assert not is_canonical(raw)
        return  # refused: nothing reaches a route or an upstream
    if is_canonical(raw):
        assert canonical == raw
    assert canonical_path(canonical) == canonical
    assert decoded_segments(canonical) == decoded_segments(raw)
    # Nothing left that a server could decode into a separator, a dot segment or a NUL.
    assert not re.search(r"%(2f|5c|00|2e)", canonical, re.IGNORECASE)
