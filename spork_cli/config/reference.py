"""docs/configuration.md, generated from the models so it can never drift from them.

Regenerate with ``python -m spork_cli.config.reference docs/configuration.md``.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from spork_cli.config.model import Cache, GatewayConfig
from spork_cli.config.restart import needs_restart, restart_fields
from spork_cli.config.units import format_duration, format_size, parse_duration, parse_size

INTRO = """\
# gateway.toml reference

Every key spork reads from `gateway.toml`, generated from the configuration models
(`python -m spork_cli.config.reference docs/configuration.md`). `spork check` validates a file
against exactly these rules; `spork schema` exports them as JSON Schema for editors.

- **Durations** are strings with a unit: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"`, or
  combined like `"1m30s"`.
- **Sizes** are strings with a unit (`"512KiB"`, `"1MiB"`, `"1GB"`) or a plain number of bytes.
- **Environment**: `${VAR}` in any string is replaced by the variable's value; `${VAR:-default}`
  uses `default` when `VAR` is unset; `$${` writes a literal `${`. A missing variable without
  a default is an error that names it.
- **Unknown keys are errors**, reported with their line and column and the closest known key.
- **Settings that need a restart** are marked *Needs a restart.* below: the listeners, the
  state store, metrics and logging ({restart}). A reload reports a change to one (log line,
  `/api/reloads`, the dashboard, `spork_config_restart_pending`) and keeps the running value;
  everything else is applied by hot reload.
"""


CACHE_RULES = """\
How the cache reads HTTP (RFC 9111 for a shared cache, RFC 5861, RFC 9213). `X-Cache` on every
answer of a cached route says what happened: `HIT` (fresh entry), `STALE` (stale entry, allowed
below), `REVALIDATED` (stale entry, confirmed by the upstream's 304), `MISS` (from the
upstream) or `BYPASS` (the cache took no part). `Age` and `X-Cache-Key` come with entries.

| response | what the gateway does |
| --- | --- |
| `s-maxage`, else `max-age`, else `Expires` minus `Date` | freshness, capped by `ttl`; malformed, conflicting or past: stale at once |
| none of those | `default_ttl` if set, else the `heuristic` (10% of the age of `Last-Modified`) if on, else stale at once |
| `CDN-Cache-Control`, else `Surrogate-Control` (or `targeted`) | replaces `Cache-Control` and `Expires` for this cache when valid (a directive targeted at a named surrogate, `max-age=60;edge`, is not); with `Surrogate-Control`, a `no-store` or `private` in `Cache-Control` still keeps the response out; passed on unchanged |
| `no-store`, `private`, `Set-Cookie` | never stored |
| `no-cache` | stored, revalidated before every reuse |
| `must-revalidate`, `proxy-revalidate`, `s-maxage` | never served stale, not even for `stale-if-error` or `max-stale` |
| `stale-while-revalidate=N` (else the route's) | up to N s stale: served at once while one background request refreshes it (at most 32 refreshes run at once per process; past that, a later request refreshes) |
| `stale-if-error=N` (else the route's) | up to N s stale: served instead of a 500, 502, 503, 504, an unreachable upstream or an open breaker |
| `ETag`, `Last-Modified` | a stale entry is kept `keep` long and revalidated with `If-None-Match` / `If-Modified-Since`; a 304 updates its headers, `Content-Type` included, but not `ETag`, `Content-Length`, `Content-Encoding`, `Content-Range` or a digest of the content (`Content-MD5`, `Content-Digest`, `Repr-Digest`, `Digest`) |
| `Vary` | stored only when every header named is in `vary` (never for `*`) |
| stale windows | an entry is kept past its freshness at most the larger of `keep`, `stale_while_revalidate` and `stale_if_error` (so that an invalidation always outlives what it invalidates) |
| `Age` | counted in the entry's age; of a list (`7200, 0`) the first member counts; a value that is not delta-seconds is ignored |
| status | 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501 (the default `statuses`); another status listed in `statuses` only with explicit freshness or `public` |
| a HEAD's 200 for a stored GET | the same `ETag`, `Last-Modified`, length and `Content-Type`: the entry's headers are updated as by a 304; different ones: the entry is dropped |

| request | what the gateway does |
| --- | --- |
| `Cache-Control: no-cache`, `max-age=0`, `Pragma: no-cache` | revalidates (or fetches) before answering |
| `no-store` | neither served from nor stored in the cache |
| `max-age=N`, `min-fresh=N` | an entry older than N, or fresh for less than N more, is not used |
| `max-stale[=N]` | a stale entry (up to N s) is served |
| `only-if-cached` | 504 problem `not-cached` when no entry may be used |
| `stale-if-error=N` | as the response directive |
| `If-None-Match`, `If-Modified-Since` | a 304 from a fresh entry; on a miss, the whole response is fetched and stored first |
| `If-Match`, `If-Unmodified-Since` | bypass: conditions on the resource's state are the upstream's to evaluate |
| `Cookie` | bypass, unless every cookie is in `cookies` (which are then in the key); `auth.cookie` aside |
| `Authorization` | bypass on `auth = "none"`; else one entry per user, roles, scopes and every claim `auth.forward_claims` sends upstream |
| `Range` | bypass |
| `POST`, `PUT`, `PATCH`, `DELETE` (any method but GET, HEAD, OPTIONS, TRACE) | on a 2xx or 3xx, the entries of its URI, and of its `Location` and `Content-Location` on the same host, are not served again, on any instance sharing the state; an answer to a GET sent upstream before the write is not stored |

The request directives are ignored with `request_directives = false`. The key is the path and
query, the `Host`, the scheme (and the `X-Forwarded-*` and `Forwarded` of trusted proxies),
the user with their roles, scopes and forwarded claims, the `cookies` and the `vary` headers.
Concurrent misses of one key are one upstream request per gateway process; instances sharing
Redis do not wait on each other (a lock across instances would add a round trip to every
miss), so N instances ask at most N times.

A reload applies the route's new settings to entries already stored: a lower `ttl` shortens
their freshness, shorter stale windows drop what they no longer cover. When the state store
cannot take an invalidation (Redis unreachable), the gateway tries again every second until
it does, and meanwhile answers that URL from the upstream, never from the cache.
"""

# Text after a section's table, for what a table of keys cannot say.
NOTES: dict[type[BaseModel], str] = {Cache: CACHE_RULES}


def render() -> str:
    restart = ", ".join(f"`{name}`" for name in restart_fields(GatewayConfig))
    sections: list[str] = [INTRO.replace("{restart}", restart)]
    seen: dict[type[BaseModel], str] = {}
    for name, field in GatewayConfig.model_fields.items():
        model = _model_in(field.annotation)
        if model is None:
            continue
        is_array = _is_list(field.annotation)
        header = f"[[{name}]]" if is_array else f"[{name}]"
        _section(sections, header, name, model, field, seen)
    return "\n".join(sections).rstrip() + "\n"


def _section(
    out: list[str],
    header: str,
    dotted: str,
    model: type[BaseModel],
    field: FieldInfo | None,
    seen: dict[type[BaseModel], str],
) -> None:
    level = "#" * min(2 + dotted.count("."), 4)
    out.append(f"{level} `{header}`\n")
    doc = (model.__doc__ or "").strip()
    if field is not None and field.description:
        doc = f"{field.description} {doc}".strip()
    if doc:
        out.append(doc + "\n")
    if model in seen:
        out.append(f"The same keys as `{seen[model]}`.\n")
        return
    seen[model] = header
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, FieldInfo, type[BaseModel], bool]] = []
    for name, sub in model.model_fields.items():
        sub_model = _model_in(sub.annotation)
        if sub_model is not None and not _is_dict(sub.annotation):
            nested.append((name, sub, sub_model, _is_list(sub.annotation)))
            continue
        rows.append(f"| `{name}` | {_type(sub)} | {_default(sub)} | {_describe(sub)} |")
    if len(rows) > 2:
        out.append("\n".join(rows) + "\n")
        out.append(_example(header, model))
    if model in NOTES:
        out.append(NOTES[model])
    for name, sub, sub_model, is_array in nested:
        path = f"{dotted}.{name}"
        _section(out, f"[[{path}]]" if is_array else f"[{path}]", path, sub_model, sub, seen)


def _example(header: str, model: type[BaseModel]) -> str:
    """A TOML snippet setting every scalar key of the section (defaults or examples)."""
    lines = ["```toml", header]
    for name, field in model.model_fields.items():
        if _model_in(field.annotation) is not None and not _is_dict(field.annotation):
            continue
        if field.examples:
            value = field.examples[0]
        elif field.is_required():
            continue
        else:
            value = field.get_default(call_default_factory=True)
            kind = _kind(field)
            if value is None:
                lines.append(f"# {name} = ...")
                continue
            if kind == "duration":
                value = format_duration(value)
            elif kind == "size":
                value = format_size(value)
        lines.append(f"{name} = {_toml(value)}")
    lines.append("```\n")
    return "\n".join(lines)


def _describe(field: FieldInfo) -> str:
    text = (field.description or "").replace("|", "\\|")
    if needs_restart(field):
        text = f"{text} *Needs a restart.*".strip()
    if field.examples:
        example = " ".join(f"`{_toml(e)}`" for e in field.examples)
        text = f"{text} Example: {example}".strip().replace("|", "\\|")
    return text


def _kind(field: FieldInfo) -> str | None:
    """ "duration" or "size" for fields of those types, also inside ``X | None``."""
    metadata = list(field.metadata)
    for arg in typing.get_args(field.annotation):
        if typing.get_origin(arg) is typing.Annotated:
            metadata.extend(arg.__metadata__)
    for meta in metadata:
        func = getattr(meta, "func", None)
        if func is parse_duration:
            return "duration"
        if func is parse_size:
            return "size"
    return None


def _type(field: FieldInfo) -> str:
    kind = _kind(field)
    optional = _is_optional(field.annotation)
    text = kind or _annotation(field.annotation)
    if field.is_required():
        text += ", required"
    elif optional and field.default is None:
        text += ", optional"
    return text


def _annotation(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _annotation(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_annotation(a) for a in args)
    if origin is Literal:
        return " \\| ".join(f'`"{a}"`' for a in typing.get_args(annotation))
    if origin is list:
        return f"array of {_annotation(args[0])}"
    if origin is dict:
        return f"table of {_annotation(args[1])}"
    if annotation is SecretStr:
        return "string (secret)"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if annotation in names:
        return names[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return ""
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return ""
    kind = _kind(field)
    if kind == "duration":
        return f'`"{format_duration(value)}"`'
    if kind == "size":
        return f'`"{format_size(value)}"`'
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {_toml(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is list:
        return True
    return any(_is_list(a) for a in typing.get_args(annotation) if typing.get_origin(a))


def _is_dict(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict


def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def main(argv: list[str]) -> int:
    text = render()
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
