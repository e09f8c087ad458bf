"""The position scanner: where each key and value of a TOML document starts."""

from __future__ import annotations

import textwrap
import tomllib
from typing import Any

import pytest
import tomli_w
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from spork_cli.config.diagnostics import Path
from spork_cli.config.locate import Positions, locate


def doc(text: str) -> tuple[str, Positions]:
    text = textwrap.dedent(text)
    tomllib.loads(text)  # every fixture is valid TOML, as the scanner expects
    return text, locate(text)


def key_at(positions: Positions, path: Path) -> tuple[int, int]:
    return positions.line_col(positions.keys[path])


def value_at(positions: Positions, path: Path) -> tuple[int, int]:
    return positions.line_col(positions.values[path])


def test_keys_and_values_in_tables() -> None:
    _, p = doc(
        """\
        top = 1
        [server]
        host = "127.0.0.1"
          port   =   8080  # trailing comment
        [server.timeouts]
        request = "1m"
        """
    )
    assert (key_at(p, ("top",)), value_at(p, ("top",))) == ((1, 1), (1, 7))
    assert key_at(p, ("server",)) == (2, 2)
    assert (key_at(p, ("server", "host")), value_at(p, ("server", "host"))) == ((3, 1), (3, 8))
    assert (key_at(p, ("server", "port")), value_at(p, ("server", "port"))) == ((4, 3), (4, 14))
    assert key_at(p, ("server", "timeouts")) == (5, 9)
    assert value_at(p, ("server", "timeouts", "request")) == (6, 11)


def test_arrays_of_tables_are_indexed() -> None:
    _, p = doc(
        """\
        [[routes]]
        path = "/a"

        [[routes]]
        path = "/b"
        [routes.cache]
        ttl = "5s"

        [[routes]]
        path = "/c"
        """
    )
    assert key_at(p, ("routes", 0)) == (1, 3)
    assert key_at(p, ("routes", 1)) == (4, 3)
    assert key_at(p, ("routes", 2)) == (9, 3)
    assert value_at(p, ("routes", 0, "path")) == (2, 8)
    assert value_at(p, ("routes", 1, "path")) == (5, 8)
    assert key_at(p, ("routes", 1, "cache")) == (6, 9)
    assert value_at(p, ("routes", 1, "cache", "ttl")) == (7, 7)
    assert value_at(p, ("routes", 2, "path")) == (10, 8)


def test_nested_arrays_of_tables_follow_their_parent() -> None:
    _, p = doc(
        """\
        [[services]]
        name = "a"
        [[services.endpoints]]
        url = "http://a1"

        [[services]]
        name = "b"
        [[services.endpoints]]
        url = "http://b1"
        [[services.endpoints]]
        url = "http://b2"
        """
    )
    assert value_at(p, ("services", 0, "endpoints", 0, "url")) == (4, 7)
    assert value_at(p, ("services", 1, "endpoints", 0, "url")) == (9, 7)
    assert value_at(p, ("services", 1, "endpoints", 1, "url")) == (11, 7)
    assert key_at(p, ("services", 1, "endpoints", 1)) == (10, 12)
    assert ("services", 0, "endpoints", 1) not in p.keys


def test_header_prefix_keys_are_located() -> None:
    _, p = doc(
        """\
        # the parent table is only named inside headers
        [ state . redis . pool ]
        size = 1
        """
    )
    assert key_at(p, ("state",)) == (2, 3)
    assert key_at(p, ("state", "redis")) == (2, 11)
    assert key_at(p, ("state", "redis", "pool")) == (2, 19)


def test_inline_tables() -> None:
    _, p = doc(
        """\
        [[routes]]
        rate_limit = { requests = 10, per = "1m", authenticated = { requests = 100 } }
        cache = {}
        """
    )
    base = ("routes", 0, "rate_limit")
    assert value_at(p, base) == (2, 14)
    assert key_at(p, (*base, "requests")) == (2, 16)
    assert value_at(p, (*base, "requests")) == (2, 27)
    assert value_at(p, (*base, "per")) == (2, 37)
    assert key_at(p, (*base, "authenticated", "requests")) == (2, 61)
    assert value_at(p, (*base, "authenticated", "requests")) == (2, 72)
    assert value_at(p, ("routes", 0, "cache")) == (3, 9)


def test_arrays_single_line_multi_line_and_nested() -> None:
    _, p = doc(
        """\
        methods = ["GET", "POST"]
        proxies = [
          "10.0.0.0/8",   # a comment, with [brackets]
          # a whole-line comment
          "127.0.0.1/32",
        ]
        grid = [[1, 2], [3, [4]]]
        endpoints = [{ url = "http://a" }, { url = "http://b", weight = 2 }]
        """
    )
    assert value_at(p, ("methods", 0)) == (1, 12)
    assert value_at(p, ("methods", 1)) == (1, 19)
    assert value_at(p, ("proxies",)) == (2, 11)
    assert value_at(p, ("proxies", 0)) == (3, 3)
    assert value_at(p, ("proxies", 1)) == (5, 3)
    assert value_at(p, ("grid", 1, 1)) == (7, 21)
    assert value_at(p, ("grid", 1, 1, 0)) == (7, 22)
    assert value_at(p, ("endpoints", 1)) == (8, 36)
    assert key_at(p, ("endpoints", 1, "weight")) == (8, 56)
    assert value_at(p, ("endpoints", 1, "weight")) == (8, 65)


def test_strings_with_escaped_quotes_and_comment_marks() -> None:
    _, p = doc(
        """\
        a = "say \\"hi\\" # not a comment ] }"
        b = 'C:\\dir\\'
        c = "ends in a backslash \\\\"
        d = 1
        """
    )
    assert value_at(p, ("b",)) == (2, 5)
    assert value_at(p, ("c",)) == (3, 5)
    assert (key_at(p, ("d",)), value_at(p, ("d",))) == ((4, 1), (4, 5))


def test_multi_line_strings() -> None:
    text, p = doc(
        '''\
        a = """
        looks = "like TOML"
        [not.a.table]
        """
        b = \'\'\'
        [[also.not]] "quotes" inside
        \'\'\'
        c = """two quotes end it"\"\"""
        d = true
        '''
    )
    assert set(p.keys) == {("a",), ("b",), ("c",), ("d",)}
    assert value_at(p, ("b",)) == (5, 5)
    assert value_at(p, ("c",)) == (8, 5)
    assert (key_at(p, ("d",)), value_at(p, ("d",))) == ((9, 1), (9, 5))
    assert tomllib.loads(text)["c"] == 'two quotes end it""'


def test_dotted_keys() -> None:
    _, p = doc(
        """\
        [[routes]]
        rate_limit.requests = 5
        rate_limit . per = "1s"
        "quoted.part".x = 1
        """
    )
    assert key_at(p, ("routes", 0, "rate_limit")) == (2, 1)
    assert key_at(p, ("routes", 0, "rate_limit", "requests")) == (2, 12)
    assert value_at(p, ("routes", 0, "rate_limit", "requests")) == (2, 23)
    assert key_at(p, ("routes", 0, "rate_limit", "per")) == (3, 14)
    assert value_at(p, ("routes", 0, "rate_limit", "per")) == (3, 20)
    assert key_at(p, ("routes", 0, "quoted.part", "x")) == (4, 15)


def test_quoted_keys_with_escapes() -> None:
    _, p = doc(
        """\
        "a\\"b" = 1
        'lit\\eral' = 2
        "caf\\u00e9" = 3
        """
    )
    assert key_at(p, ('a"b',)) == (1, 1)
    assert value_at(p, ('a"b',)) == (1, 10)
    assert key_at(p, ("lit\\eral",)) == (2, 1)
    assert value_at(p, ("café",)) == (3, 15)


def test_crlf_line_endings() -> None:
    text = '[server]\r\nhost = "h"\r\n\r\n[[routes]]\r\npath = "/"\r\n'
    p = locate(text)
    assert value_at(p, ("server", "host")) == (2, 8)
    assert value_at(p, ("routes", 0, "path")) == (5, 8)


def test_other_values_datetimes_and_specials() -> None:
    _, p = doc(
        """\
        when = 1979-05-27T07:32:00Z
        inf = -inf
        hex = 0xDEAD_BEEF
        after = 1
        """
    )
    assert value_at(p, ("when",)) == (1, 8)
    assert value_at(p, ("hex",)) == (3, 7)
    assert value_at(p, ("after",)) == (4, 9)


def test_find_prefers_value_then_key_then_nearest_ancestor() -> None:
    _, p = doc(
        """\
        [[routes]]
        path = "/a"
        cache = { ttl = "1s" }
        """
    )
    assert p.find(("routes", 0, "path")) == (2, 8)
    assert p.find(("routes", 0, "path"), prefer="key") == (2, 1)
    assert p.find(("routes", 0, "cache", "statuses", 0)) == (3, 9)
    assert p.find(("routes", 0, "nothing")) == (1, 3)
    assert p.find(("elsewhere", "deep")) == (1, 1)
    assert p.find(()) == (1, 1)


def test_line_col_at_line_starts_and_end() -> None:
    p = locate("a = 1\nb = 2")
    assert p.line_col(0) == (1, 1)
    assert p.line_col(5) == (1, 6)
    assert p.line_col(6) == (2, 1)
    assert p.line_col(11) == (2, 6)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[",
        "[[",
        "a",
        "a =",
        'a = "unterminated',
        "a = '''open",
        "a = [1, 2",
        "a = { b = ",
        "= 1",
        "[a.]\n",
        "a = " + "[" * 5000,
        "\x00\udcff",
    ],
)
def test_invalid_text_never_raises(text: str) -> None:
    p = locate(text)
    assert p.find(("a", 0, "b")) >= (1, 1)


# --- every key and value of generated documents ------------------------------------------------

simple = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.dates(),
)
toml_values = st.recursive(
    simple,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=6), children, max_size=3),
    ),
    max_leaves=12,
)


def _walk(node: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    out: list[tuple[Path, Any]] = [(path, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _walk(value, (*path, index))
    return out


@settings(max_examples=150, deadline=None)
@given(document=st.dictionaries(st.text(max_size=6), toml_values, max_size=5))
def test_every_key_and_scalar_of_a_generated_document_is_located(
    document: dict[str, Any],
) -> None:
    try:
        text = tomli_w.dumps(document)
    except (TypeError, ValueError):
        assume(False)
        raise
    p = locate(text)
    for path, value in _walk(document)[1:]:
        last = path[-1]
        if isinstance(last, str):
            assert path in p.keys, (path, text)
            offset = p.keys[path]
            assert text.startswith(last, offset) or text[offset] in "\"'", (path, text)
        if not isinstance(value, dict | list):
            assert path in p.values, (path, text)
            literal = tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")
            assert text.startswith(literal, p.values[path]), (path, text)
