"""gateway.toml files for tests: one builder, and replacing a file the way editors do."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from tests.support.net import LOOPBACK


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to a sibling temporary file, then rename it over ``path``, as editors do."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def gateway_toml(
    port: int,
    admin_port: int,
    services: Mapping[str, str | list[str]],
    routes: Mapping[str, str],
    *,
    server_extra: str = "",
    service_extra: str = "",
    route_extra: str = "",
    extra: str = "",
) -> str:
    """A gateway.toml: ``services`` maps a name to endpoint URLs, ``routes`` a path to a service.

    ``*_extra`` lines are added to every [server], [[services]] and [[routes]] table; ``extra``
    is appended at the end of the file.
    """
    lines = [
        "[server]",
        f'host = "{LOOPBACK}"',
        f"port = {port}",
        server_extra,
        "",
        "[admin]",
        f'host = "{LOOPBACK}"',
        f"port = {admin_port}",
        "",
    ]
    for name, urls in services.items():
        endpoints = ", ".join(f'"{url}"' for url in ([urls] if isinstance(urls, str) else urls))
        lines += ["[[services]]", f'name = "{name}"', f"endpoints = [{endpoints}]"]
        lines += [service_extra, ""]
    for path, service in routes.items():
        lines += ["[[routes]]", f'path = "{path}"', f'service = "{service}"', route_extra, ""]
    lines.append(extra)
    return "\n".join(lines) + "\n"
