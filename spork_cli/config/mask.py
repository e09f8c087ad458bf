"""Secrets hidden from what spork prints about a config file: source lines and diagnostics.

The source is masked character for character (``*`` for each one), so every line and column a
diagnostic names still points at the same place: the values of secret keys (the model's
`SecretStr` fields, and keys named like a secret, token, password or credential header) and the
credentials of every URL. Diagnostic messages then lose every such value, wherever they quote it.
The scan is lexical, so it works on files that are not valid TOML too.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

from spork_cli.config.redact import REDACTED, Redactor, redact_url, url_secrets

if TYPE_CHECKING:
    from spork_cli.config.diagnostics import Diagnostic
    from spork_cli.config.load import Loaded
    from spork_cli.config.model import GatewayConfig

MASK = "*"
# Shorter values are only removed from messages as whole words ("found the integer 123").
MIN_ANYWHERE = 4
MIN_SHORTENED = 8  # the shortest start of a secret, shown before "...", that is removed

_SECRET_NAME = re.compile(
    r"secret|token|passw|pwd|credential|authorization|cookie|api[-_]?key", re.IGNORECASE
)
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
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# A bare `${NAME}` stays readable in a masked value: it names a variable, it is not the secret.
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@cache
def _model_secret_names() -> frozenset[str]:
    """Names of the `SecretStr` fields anywhere in the config model."""
    from spork_cli.config.model import GatewayConfig

    names: set[str] = set()
    seen: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [GatewayConfig]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            for kind in _types_in(info.annotation):
                if kind is SecretStr:
                    names.add(name)
                elif isinstance(kind, type) and issubclass(kind, BaseModel):
                    todo.append(kind)
    return frozenset(names)


def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _types_in(typing.get_args(annotation)[0])
    elif origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _types_in(arg)


def is_secret_name(name: str) -> bool:
    """Is a key of this name a secret (its value is never printed)?"""
    return name in _model_secret_names() or _SECRET_NAME.search(name) is not None


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
        self._mask_secret_values(text)
        self._mask_url_credentials(text)
        self.source = "".join(self._out)
        secrets = set(self._found)
        for value in list(secrets):
            for name in _ENV_REF.findall(value):
                if env.get(name):
                    secrets.add(env[name])
        if config is not None:
            secrets.update(Redactor(config, text, env).secrets)
        secrets.discard("")
        self.secrets = sorted(secrets, key=len, reverse=True)

    # -- the source ---------------------------------------------------------------------------

    def _mask_secret_values(self, text: str) -> None:
        tokens = list(_tokens(text))
        solid = [t for t in tokens if t[0] not in ("space", "comment")]
        for i, (kind, start, _end) in enumerate(solid):
            if kind != "punct" or text[start] != "=" or i == 0:
                continue
            key_kind, key_start, key_end = solid[i - 1]
            key = text[key_start:key_end]
            if key_kind == "word":
                name = key.rsplit(".", 1)[-1]
            elif key_kind in ("basic", "literal"):
                name = key[1:-1] if len(key) > 1 else ""
            else:
                continue
            if is_secret_name(name):
                for part in _value(solid, i + 1, text):
                    self._mask_token(text, *part)

    def _mask_token(self, text: str, kind: str, start: int, end: int) -> None:
        if kind == "word":
            self._mask_span(text, start, end)
        elif kind in ("basic", "literal"):
            closed = end - start > 1 and text[end - 1] == text[start]
            self._mask_span(text, start + 1, end - 1 if closed else end)
        elif kind == "ml":
            self._mask_span(text, start + 3, max(end - 3, start + 3))

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


def _value(solid: list[tuple[str, int, int]], i: int, text: str) -> list[tuple[str, int, int]]:
    """The tokens of the value that starts at ``solid[i]``: one, or a bracketed array/table."""
    if i >= len(solid):
        return []
    kind, start, _end = solid[i]
    if kind != "punct" or text[start] not in "[{":
        return [] if kind == "punct" else [solid[i]]
    depth = 0
    found = []
    for token in solid[i:]:
        char = text[token[1]] if token[0] == "punct" else ""
        depth += (char in "[{") - (char in "]}")
        if token[0] != "punct":
            found.append(token)
        if depth <= 0:
            break
    return found


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
