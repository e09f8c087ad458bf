"""`spork init`: render a template from templates/ into a directory, with fresh keys."""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from spork_cli.errors import TemplateError, UsageError

SCHEMA_FILE = "gateway.schema.json"


def templates_dir() -> Path:
    """Templates ship inside the wheel; in a source checkout they sit at the top level."""
    packaged = Path(__file__).parent / "templates"
    if (packaged / "index.toml").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    keys: str | None  # "hs256", "es256" or None
    root: Path


def list_templates() -> list[Template]:
    base = templates_dir()
    try:
        index = tomllib.loads((base / "index.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TemplateError(f"the template index at {base} cannot be read: {exc}") from exc
    return [
        Template(name, entry["description"], entry.get("keys"), base / name)
        for name, entry in index.items()
    ]


def get_template(name: str) -> Template:
    templates = {t.name: t for t in list_templates()}
    if name not in templates:
        raise UsageError(
            f"unknown template '{name}'; choose one of: {', '.join(sorted(templates))}"
        )
    return templates[name]


def plan(template: Template) -> dict[str, bytes]:
    """Every file the template writes, relative path -> content, keys freshly generated."""
    from spork_cli.cli.schema import schema_text

    values = {"hs256_secret": secrets.token_urlsafe(48)}
    files: dict[str, bytes] = {}
    if template.keys == "es256":
        private, public = es256_keypair()
        files["keys/jwt-private.pem"] = private
        files["keys/jwt-public.pem"] = public
    for source in sorted(template.root.rglob("*")):
        if source.is_file():
            text = source.read_text(encoding="utf-8")
            for key, value in values.items():
                text = text.replace("{{ " + key + " }}", value)
            files[source.relative_to(template.root).as_posix()] = text.encode()
    files[SCHEMA_FILE] = schema_text().encode()
    return files


def render(template: Template, target: Path, force: bool = False) -> list[Path]:
    """Write the template into ``target``; refuse to overwrite unless ``force``."""
    files = plan(template)
    existing = [name for name in files if (target / name).exists()]
    if existing and not force:
        raise UsageError(
            f"{target / existing[0]} already exists; use --force to overwrite"
            + (f" ({len(existing)} files)" if len(existing) > 1 else "")
        )
    written: list[Path] = []
    try:
        for name, content in files.items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            private = name.endswith("-private.pem")
            _write(path, content, 0o600 if private else 0o644)
            written.append(path)
    except OSError as exc:
        raise TemplateError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return written


def _write(path: Path, content: bytes, mode: int) -> None:
    """Write via a temp file and rename, so a private key is never readable by others."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def es256_keypair() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public
