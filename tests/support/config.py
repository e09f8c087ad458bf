"""gateway.toml files for tests: one builder, and replacing a file the way editors do."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.net import LOOPBACK


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to a sibling temporary file, then rename it over ``path``, as editors do."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def gateway_toml(
    port: int | None,
    admin_port: int | None,
    services: Mapping[str, str | Sequence[str]],
    routes: Mapping[str, str],
    *,
    server_extra: str = "",
    admin_extra: str = "",
    service_extra: str = "",
    route_extra: str = "",
    service_lines: Mapping[str, str] | None = None,
    extra: str = "",
) -> str:
    """A gateway.toml: ``services`` maps a name to endpoint URLs, ``routes`` a path to a service.

    ``*_extra`` lines are added to the [server] and [admin] tables and to every [[services]]
    and [[routes]] table;
    ``service_lines`` adds lines (sub-tables too, such as ``[services.health]``) after the
    named services' tables; ``extra`` is appended at the end of the file. A ``port`` of None
    leaves [server] and [admin] out, for commands that only read the services.
    """
    lines: list[str] = []
    if port is not None:
        lines += ["[server]", f'host = "{LOOPBACK}"', f"port = {port}", server_extra, ""]
    if admin_port is not None:
        lines += ["[admin]", f'host = "{LOOPBACK}"', f"port = {admin_port}", admin_extra, ""]
    for name, urls in services.items():
        endpoints = ", ".join(f'"{url}"' for url in ([urls] if isinstance(urls, str) else urls))
        lines += ["[[services]]", f'name = "{name}"', f"endpoints = [{endpoints}]"]
        lines += [service_extra, (service_lines or {}).get(name, ""), ""]
    for path, service in routes.items():
        lines += ["[[routes]]", f'path = "{path}"', f'service = "{service}"', route_extra, ""]
    lines.append(extra)
    return "\n".join(lines) + "\n"
