"""A config as plain JSON data with every secret hidden, for the admin API and the dashboard.

Redaction is structural first: `SecretStr` fields, credentials inside URLs (userinfo and
password-like query parameters), credential-carrying header values, and every value that came
from a ``${VAR}`` in the file (shown as its reference instead). A final pass then removes any
remaining occurrence of a known secret value from every string, wherever it ended up.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

from spork_cli.config.model import GatewayConfig
from spork_cli.config.secret_names import HEADER_MAPS, is_secret_key
from spork_cli.config.secret_names import SECRET_NAME as SECRET_NAME

REDACTED = "[redacted]"
# Shorter values would blank out unrelated text everywhere; they are not secrets anyway.
MIN_SECRET = 4
# An environment variable named like a secret but not referenced by the file is only looked
# for when it is long enough not to collide with ordinary words ("none", "true").
MIN_UNREFERENCED_SECRET = 8
MIN_SHORTENED = 8  # the shortest start of a secret, shown before "...", that is removed
Path = tuple[str | int, ...]  # where a value is in the file's data: keys and array indexes

# The same grammar as the loader's: `$${` is a literal, not a reference.
_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*@)?([^?#]*)(\?[^#]*)?(#.*)?$", re.S)
# A URL inside other text (an error message quoting it), up to a space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_SECRET_ENV_NAME = re.compile(r"SECRET|TOKEN|PASSW|KEY|CREDENTIAL|AUTH", re.IGNORECASE)


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it hidden: the userinfo's password (all
    of the userinfo when it has no password: a bare token), and password-like query values."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: _redact_one_url(m.group(0)), text)


def _redact_one_url(text: str) -> str:
    match = _URL.match(text)
    if match is None:
        return text
    scheme, userinfo, rest, query, fragment = match.groups()
    if userinfo:
        user, colon, _password = userinfo[:-1].partition(":")
        userinfo = f"{user}:{REDACTED}@" if colon else f"{REDACTED}@"
    if query:
        parts = []
        for pair in query[1:].split("&"):
            name, equals, _value = pair.partition("=")
            parts.append(f"{name}={REDACTED}" if equals and SECRET_NAME.search(name) else pair)
        query = "?" + "&".join(parts)
    return f"{scheme}{userinfo or ''}{rest}{query or ''}{fragment or ''}"


def url_secrets(text: str) -> Iterator[str]:
    """The credential parts of a URL, as written and as decoded."""
    from urllib.parse import unquote

    match = _URL.match(text)
    if match is None:
        return
    _scheme, userinfo, _rest, query, _fragment = match.groups()
    found: list[str] = []
    if userinfo:
        user, colon, password = userinfo[:-1].partition(":")
        found.append(password if colon else user)
    for pair in (query or "?")[1:].split("&"):
        name, equals, value = pair.partition("=")
        if equals and SECRET_NAME.search(name):
            found.append(value)
    for value in found:
        yield value
        yield unquote(value)


def text_url_secrets(text: str) -> Iterator[str]:
    """The credential parts of ``text`` read as one URL, and of every URL inside it (a
    password may hold a quote or a space, which ends a URL in running text)."""
    yield from url_secrets(text)
    if "://" in text:
        for match in _URL_IN_TEXT.finditer(text):
            yield from url_secrets(match.group(0))


def file_secrets(text: str, env: Mapping[str, str] | None = None) -> set[str]:
    """What is secret in a config file that may not validate: every value the file holds at a
    secret key (read by tomllib, so however the key is spelled) and every URL credential,
    with the values of the environment a `Redactor` would hide."""
    found = _env_secrets(text, os.environ if env is None else env)
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        return found
    # Each table or array to read, the name of the key it is under, and whether it is secret.
    stack: list[tuple[Any, str | None, bool]] = [(raw, None, False)]
    while stack:
        node, parent, inside_secret = stack.pop()
        items: Iterable[tuple[Any, Any]] = (
            node.items() if isinstance(node, dict) else enumerate(node)
        )
        for key, value in items:
            name = key if isinstance(key, str) else parent
            secret = inside_secret or (isinstance(key, str) and is_secret_key(key, parent))
            if isinstance(value, dict | list):
                stack.append((value, name, secret))
                continue
            if secret and not isinstance(value, bool):
                found.add(str(value))
            if isinstance(value, str):
                found.update(text_url_secrets(value))
    found.discard("")
    return found


def _env_secrets(file_text: str | None, env: Mapping[str, str]) -> set[str]:
    secrets: set[str] = set()
    names = set(_ENV_REF.findall(file_text or ""))
    referenced = {name for literal, name in names if not literal}
    for name, value in env.items():
        # A value read from the environment may be a secret wherever it was used.
        if name in referenced and len(value) >= MIN_SECRET:
            secrets.add(value)
        elif _SECRET_ENV_NAME.search(name) and len(value) >= MIN_UNREFERENCED_SECRET:
            secrets.add(value)
    return secrets


class Redactor:
    """What is secret in one config: dumps it without them and scrubs other data of them.

    ``file_text`` is the config file as it is now (for its ``${VAR}`` references) and ``env``
    the environment those were read from.
    """

    def __init__(
        self,
        config: GatewayConfig,
        file_text: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.env = os.environ if env is None else env
        self.env_paths = _env_paths(file_text) if file_text is not None else {}
        secrets = {s for s in _model_secrets(config) if len(s) >= MIN_SECRET}
        secrets |= _env_secrets(file_text, self.env)
        # Longest first, so a secret that contains another is removed whole.
        self.secrets = sorted(secrets, key=len, reverse=True)

    def config_data(self) -> dict[str, Any]:
        """The config as JSON-ready data, every secret replaced by ``[redacted]``."""
        data = _dump(self.config)
        for path, template in self.env_paths.items():
            _replace_at(data, path, template)
        scrubbed: dict[str, Any] = self.scrub(data)
        return scrubbed

    def scrub(self, data: Any) -> Any:
        """``data`` (JSON-ready) with every known secret value removed from every string."""
        if isinstance(data, str):
            return self._scrub_text(data)
        if isinstance(data, dict):
            return {self._scrub_text(str(k)): self.scrub(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.scrub(v) for v in data]
        return data

    def _scrub_text(self, text: str) -> str:
        text = redact_url(text)
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "..." in text:
            text = self._scrub_shortened(text)
        return text

    def _scrub_shortened(self, text: str) -> str:
        """Messages shorten long values they quote ("found the string \"abc...\""): the
        part shown is removed too, when it is a long enough start of a secret."""
        for secret in self.secrets:
            for end in range(len(secret) - 1, MIN_SHORTENED - 1, -1):
                shown = secret[:end] + "..."
                if shown in text:
                    text = text.replace(shown, REDACTED)
                    break
        return text


def _model_secrets(model: BaseModel) -> Iterator[str]:
    for value in _leaves(model):
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, str):
            yield from url_secrets(value)


def _leaves(value: Any) -> Iterator[Any]:
    """Every value in ``value``; a header map's values sent under a secret name come as
    `SecretStr`, as they are secrets too."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            item = getattr(value, name)
            if (type(value), name) in HEADER_MAPS and isinstance(item, dict):
                for header, sent in item.items():
                    secret = isinstance(sent, str) and SECRET_NAME.search(header)
                    yield SecretStr(sent) if secret else sent
            else:
                yield from _leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _dump(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, BaseModel):
        out: dict[str, Any] = {}
        for name in type(value).model_fields:
            item = getattr(value, name)
            if (type(value), name) in HEADER_MAPS and isinstance(item, dict):
                out[name] = {
                    header: REDACTED if SECRET_NAME.search(header) else _dump(v)
                    for header, v in item.items()
                }
            else:
                out[name] = _dump(item)
        return out
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if isinstance(value, str):
        return redact_url(value)
    return value


def _env_paths(text: str) -> dict[Path, str]:
    """Where the file takes a value from the environment, and its reference without any
    default (a default may itself be a secret)."""
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        return {}
    found: dict[Path, str] = {}
    stack: list[tuple[Any, Path]] = [(raw, ())]
    while stack:
        node, path = stack.pop()
        items: Iterable[tuple[Any, Any]] = (
            node.items() if isinstance(node, dict) else enumerate(node)
        )
        for key, value in items:
            child = (*path, key)
            if isinstance(value, str) and any(not m.group(1) for m in _ENV_REF.finditer(value)):
                found[child] = _ENV_REF.sub(_bare_reference, value)
            elif isinstance(value, dict | list):
                stack.append((value, child))
    return found


def _bare_reference(match: re.Match[str]) -> str:
    return match.group(0) if match.group(1) else f"${{{match.group(2)}}}"


def _replace_at(data: Any, path: Path, template: str) -> None:
    """Put ``template`` where ``path`` leads; where the model reshaped a string (an endpoint
    URL became a table), hide every string below that point instead."""
    node = data
    for part in path[:-1]:
        node = _child(node, part)
        if node is None:
            return
    last = path[-1]
    target = _child(node, last)
    if isinstance(target, str):
        node[last] = template
    elif isinstance(target, dict | list):
        _hide_strings(target)
    # A number or a boolean read from the environment is shown: it cannot be a secret.


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict) and isinstance(part, str):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _hide_strings(node: Any) -> None:
    items: Iterable[tuple[Any, Any]] = (
        list(node.items()) if isinstance(node, dict) else list(enumerate(node))
    )
    for key, value in items:
        if isinstance(value, str):
            node[key] = REDACTED
        elif isinstance(value, dict | list):
            _hide_strings(value)
