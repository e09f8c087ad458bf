"""Secrets hidden from what spork prints about a config file: source lines and diagnostics.

The source is masked character for character (``*`` for each one), so every line and column a
diagnostic names still points at the same place: the values of secret keys (the model's
`SecretStr` fields, and other keys named like a secret, token, password, key or credential
header: `secret_names`) and the credentials of every URL. Keys and strings are read decoded,
as TOML reads them, so an escape or a dotted key spells a secret name like any other. Diagnostic
messages then lose every such value, wherever they quote it. The scan is lexical, so it works
on files that are not valid TOML too; what tomllib can still read of the file is added.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from spork_cli.config.redact import (
    REDACTED,
    Redactor,
    file_secrets,
    redact_url,
    text_url_secrets,
    url_secrets,
)
from spork_cli.config.secret_names import SECRET_NAME, is_secret_key

if TYPE_CHECKING:
    from spork_cli.config.diagnostics import Diagnostic
    from spork_cli.config.loaded import Loaded
    from spork_cli.config.model import GatewayConfig

__all__ = ["SECRET_NAME", "Masker", "mask_loaded", "masker_for_file"]

MASK = "*"
# Shorter values are only removed from messages as whole words ("found the integer 123").
MIN_ANYWHERE = 4
MIN_SHORTENED = 8  # the shortest start of a secret, shown before "...", that is removed

_TOKEN = re.compile(
    r"""(?P<ml>\"\"\"|''')
    |(?P<basic>"(?:[^"\\\n]|\\.)*"?)
    |(?P<literal>'[^'\n]*'?)
    |(?P<comment>\#[^\n]*)
    |(?P<punct>[=\[\]{},\n])
    |(?P<word>[^\s=\[\]{},"'\#]+)
    |(?P<space>\s+)""",
    re.VERBOSE,
)
_STRINGS = ("basic", "literal", "ml")
# What a key is made of. TOML allows no multi-line string in a key, nor an escape in a bare
# key; a broken file may hold either, and its key is still read for what it names.
_KEY_PARTS = ("word", *_STRINGS)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# A bare `${NAME}` stays readable in a masked value: it names a variable, it is not the secret.
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# TOML basic-string escapes (and a multi-line string's line-ending backslash). An escape TOML
# does not know reads as its character: the file is invalid, and the name is still checked.
_ESCAPE = re.compile(
    r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|x([0-9A-Fa-f]{2})|[ \t]*\r?\n\s*|(.))", re.S
)
_ESCAPED = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", "e": "\x1b"}

Token = tuple[str, int, int]
# Where keys are read: the name of the table or key they are under, and whether it is secret.
Place = tuple[str | None, bool]


class Masker:
    """What is secret in one config file: its source masked, and a scrubber for messages.

    ``config`` (when the file was valid) adds the values the file took from the environment
    into secret fields and URLs; ``env`` is the environment ``${VAR}`` references were read from.
    """

    def __init__(
        self,
        text: str,
        config: GatewayConfig | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self._out = list(text)
        self._found: set[str] = set()
        tokens = [t for t in _tokens(text) if t[0] not in ("space", "comment")]
        self._mask_secret_values(text, tokens)
        self._mask_url_strings(text, tokens)
        self._mask_url_credentials(text)
        self.source = "".join(self._out)
        secrets = set(self._found)
        for value in list(secrets):
            for name in _ENV_REF.findall(value):
                if env.get(name):
                    secrets.add(env[name])
        if config is not None:
            secrets.update(Redactor(config, text, env).secrets)
        else:
            secrets.update(file_secrets(text, env))
        secrets.discard("")
        self.secrets = sorted(secrets, key=len, reverse=True)

    # -- the source ---------------------------------------------------------------------------

    def _mask_secret_values(self, text: str, tokens: list[Token]) -> None:
        """Mask every value whose key path (tables, dotted and quoted keys, inline tables)
        names a secret. Brackets left open by a broken file do not hide the keys after them:
        any ``key =`` is read as a key."""
        table: Place = (None, False)
        # The open arrays and inline tables: their bracket and their place.
        stack: list[tuple[str, str | None, bool]] = []
        value: Place | None = None  # after `=`: the value's place
        not_a_key = 0  # tokens before this were read as a run of words with no `=` after
        i = 0
        while i < len(tokens):
            kind, start, end = tokens[i]
            char = text[start] if kind == "punct" else ""
            if char == "[" and not stack and value is None and _line_start(tokens, i, text):
                i, table = _table_header(tokens, i, text)
                continue
            if kind in _KEY_PARTS and i >= not_a_key:
                j = i
                while j < len(tokens) and tokens[j][0] in _KEY_PARTS:
                    j += 1
                not_a_key = j
                if j < len(tokens) and _is(tokens[j], "=", text) and value is None:
                    if stack and stack[-1][0] == "[":
                        stack.clear()  # an array left open: the file goes on with keys
                    value = _place(stack[-1][1:] if stack else table, tokens[i:j], text)
                    i = j + 1
                    continue
            if value is None and stack and stack[-1][0] == "[":
                value = (stack[-1][1], stack[-1][2])
            if char in ("[", "{") and value is not None:
                stack.append((char, *value))
            elif kind in ("word", *_STRINGS) and value is not None and value[1]:
                self._mask_token(text, kind, start, end)
            elif char in ("]", "}") and stack:
                closing = "[" if char == "]" else "{"
                while stack and stack.pop()[0] != closing:
                    pass
            value = None
            i += 1

    def _mask_token(self, text: str, kind: str, start: int, end: int) -> None:
        if kind == "word":
            self._mask_span(text, start, end)
            return
        body_start, body_end = _body(text, kind, start, end)
        self._mask_span(text, body_start, body_end)
        value = _decode(text, kind, start, end)
        if value.strip():
            self._found.add(value)

    def _mask_url_strings(self, text: str, tokens: list[Token]) -> None:
        """Mask the credentials of every string whose decoded value is, or holds, a URL with
        credentials. A string written with escapes is masked whole: where its credentials
        are in the source is not worth working out."""
        for kind, start, end in tokens:
            if kind not in _STRINGS:
                continue
            value = _decode(text, kind, start, end)
            secrets = {s for s in text_url_secrets(value) if s.strip()}
            if not secrets:
                continue
            self._found |= secrets
            body_start, body_end = _body(text, kind, start, end)
            masked = False
            if text[start] == "'" or "\\" not in text[body_start:body_end]:
                # Read as written, so each credential is in the source as it is in the value.
                for secret in secrets:
                    at = text.find(secret, body_start, body_end)
                    while at != -1:
                        self._mask_span(text, at, at + len(secret))
                        masked = True
                        at = text.find(secret, at + len(secret), body_end)
            if not masked:
                self._mask_span(text, body_start, body_end)

    def _mask_span(self, text: str, start: int, end: int) -> None:
        """Mask ``text[start:end]`` (newlines and bare ``${NAME}`` references kept)."""
        value = text[start:end]
        if not value.strip():
            return
        self._found.add(value)
        kept = {i for m in _ENV_REF.finditer(value) for i in range(m.start(), m.end())}
        for offset, char in enumerate(value):
            if char != "\n" and offset not in kept:
                self._out[start + offset] = MASK

    def _mask_url_credentials(self, text: str) -> None:
        for match in _URL_IN_TEXT.finditer(text):
            url = match.group(0)
            for secret in set(url_secrets(url)):
                if not secret:
                    continue
                at = url.find(secret, url.index("://") + 3)
                while at != -1:
                    self._mask_span(text, match.start() + at, match.start() + at + len(secret))
                    at = url.find(secret, at + len(secret))

    # -- messages -----------------------------------------------------------------------------

    def scrub(self, message: str) -> str:
        """``message`` without URL credentials or any secret value of the file."""
        message = redact_url(message)
        for secret in self.secrets:
            if len(secret) >= MIN_ANYWHERE:
                message = message.replace(secret, REDACTED)
            elif secret in message:
                pattern = rf"(?<![\w.-]){re.escape(secret)}(?![\w.-])"
                message = re.sub(pattern, REDACTED, message)
        if "..." in message:  # messages shorten long values they quote ("abcdefgh...")
            for secret in self.secrets:
                for end in range(len(secret) - 1, MIN_SHORTENED - 1, -1):
                    shown = secret[:end] + "..."
                    if shown in message:
                        message = message.replace(shown, REDACTED)
                        break
        return message

    def diagnostic(self, d: Diagnostic) -> Diagnostic:
        return dataclasses.replace(
            d,
            path=self.scrub(d.path),
            message=self.scrub(d.message),
            hint=None if d.hint is None else self.scrub(d.hint),
        )


def _tokens(text: str) -> Iterator[tuple[str, int, int]]:
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:  # cannot happen: `word` takes any other character
            at += 1
            continue
        kind = match.lastgroup or "space"
        end = match.end()
        if kind == "ml":
            close = text.find(match.group(0), end)
            end = len(text) if close == -1 else close + 3
        yield kind, at, end
        at = end


def _is(token: Token, char: str, text: str) -> bool:
    return token[0] == "punct" and text[token[1]] == char


def _line_start(tokens: list[Token], i: int, text: str) -> bool:
    return i == 0 or _is(tokens[i - 1], "\n", text)


def _table_header(tokens: list[Token], i: int, text: str) -> tuple[int, Place]:
    """Read ``[a.b]`` or ``[[a.b]]`` at ``tokens[i]``: the index past its line, its place."""
    while i < len(tokens) and _is(tokens[i], "[", text):
        i += 1
    j = i
    while j < len(tokens) and tokens[j][0] in _KEY_PARTS:
        j += 1
    place = _place((None, False), tokens[i:j], text)
    while j < len(tokens) and not _is(tokens[j], "\n", text):
        j += 1
    return j, place


def _place(under: tuple[str | None, bool], key: list[Token], text: str) -> tuple[str | None, bool]:
    """The place of a (dotted) key's value, the key read in the place ``under``."""
    parent, secret = under
    for name in _key_parts(key, text):
        secret = secret or is_secret_key(name, parent)
        parent = name
    return parent, secret


def _key_parts(tokens: list[Token], text: str) -> list[str]:
    """The parts of a key as TOML reads it: ``a . "b\\u0063"`` is ``["a", "bc"]``."""
    parts: list[str] = []
    current = ""
    for kind, start, end in tokens:
        if kind == "word":
            first, *rest = (_ESCAPE.sub(_unescape, p) for p in text[start:end].split("."))
            current += first
            for piece in rest:
                parts.append(current)
                current = piece
        else:
            current += _decode(text, kind, start, end)
    parts.append(current)
    return parts


def _body(text: str, kind: str, start: int, end: int) -> tuple[int, int]:
    """Where the characters of a string token are, without its quotes."""
    quote = 3 if kind == "ml" else 1
    delimiter = text[start : start + quote]
    closed = end - start >= 2 * quote and text[end - quote : end] == delimiter
    return start + quote, end - quote if closed else end


def _decode(text: str, kind: str, start: int, end: int) -> str:
    """A string token's value, as TOML reads it."""
    body_start, body_end = _body(text, kind, start, end)
    body = text[body_start:body_end]
    if kind == "ml" and body[:1] == "\n":
        body = body[1:]
    elif kind == "ml" and body[:2] == "\r\n":
        body = body[2:]
    if text[start] == "'":
        return body
    return _ESCAPE.sub(_unescape, body)


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1) or match.group(2) or match.group(3)
    if code is not None:
        return chr(int(code, 16)) if int(code, 16) <= 0x10FFFF else ""
    char = match.group(4)
    return "" if char is None else _ESCAPED.get(char, char)


def mask_loaded(loaded: Loaded, env: Mapping[str, str] | None = None) -> Loaded:
    """``loaded`` as it may be shown: its text masked, its diagnostics scrubbed."""
    masker = Masker(loaded.text, loaded.config, env)
    return dataclasses.replace(
        loaded,
        text=masker.source,
        diagnostics=[masker.diagnostic(d) for d in loaded.diagnostics],
    )


def masker_for_file(file: str | Path, config: GatewayConfig | None = None) -> Masker:
    """The masker of a config file as it is on disk now (an unreadable one hides URL
    credentials and the config's secrets only)."""
    try:
        text = Path(file).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return Masker(text, config)
