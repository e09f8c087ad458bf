"""`spork init`: every template renders, passes `spork check`, and validates against the schema."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import jsonschema
import pytest

from spork_cli import scaffold
from spork_cli.config.load import check_file
from spork_cli.config.schema import json_schema
from spork_cli.errors import UsageError
from tests.support import PROJECT_ROOT, SporkRunner

TEMPLATES = [t.name for t in scaffold.list_templates()]
# Production templates read their secrets from the environment and fail closed without them.
TEMPLATE_ENV: dict[str, dict[str, str]] = {
    "deploy": {
        "SPORK_JWT_SECRET": "test-only-hs256-secret-of-at-least-32-bytes",
        "SPORK_ADMIN_TOKEN": "test-only-admin-token",
        "SPORK_REDIS_URL": "redis://redis.example:6379/0",
    },
}


def test_at_least_three_templates_including_minimal_and_full() -> None:
    assert {"minimal", "full", "microservices"} <= set(TEMPLATES)


@pytest.mark.parametrize("name", TEMPLATES)
def test_rendered_template_passes_check_strictly(name: str, tmp_path: Path) -> None:
    scaffold.render(scaffold.get_template(name), tmp_path)
    loaded = check_file(str(tmp_path / "gateway.toml"), env=TEMPLATE_ENV.get(name, {}))
    assert loaded.config is not None
    assert [d.one_line() for d in loaded.diagnostics] == []


@pytest.mark.parametrize("name", TEMPLATES)
def test_rendered_template_starts_with_schema_line_and_validates(name: str, tmp_path: Path) -> None:
    scaffold.render(scaffold.get_template(name), tmp_path)
    text = (tmp_path / "gateway.toml").read_text()
    assert text.splitlines()[0] == "#:schema ./gateway.schema.json"
    schema = json.loads((tmp_path / "gateway.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(tomllib.loads(text))


def test_repo_gateway_toml_and_examples_validate_against_the_schema() -> None:
    validator = jsonschema.Draft7Validator(json_schema())
    files = [PROJECT_ROOT / "gateway.toml"]
    files += [f for f in (PROJECT_ROOT / "examples").glob("*.toml") if f.name != "broken.toml"]
    for file in files:
        text = file.read_text()
        assert text.startswith("#:schema ./gateway.schema.json\n"), file
        validator.validate(tomllib.loads(text))
        loaded = check_file(str(file), env={})
        assert loaded.diagnostics == [], file


def test_broken_example_fails_the_schema_too() -> None:
    validator = jsonschema.Draft7Validator(json_schema())
    data = tomllib.loads((PROJECT_ROOT / "examples" / "broken.toml").read_text())
    assert not validator.is_valid(data)


def test_hs256_template_gets_a_fresh_strong_secret(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    scaffold.render(scaffold.get_template("full"), first)
    scaffold.render(scaffold.get_template("full"), second)
    secrets = []
    for base in (first, second):
        loaded = check_file(str(base / "gateway.toml"), env={})
        assert loaded.config is not None and loaded.config.auth is not None
        assert loaded.config.auth.secret is not None
        secrets.append(loaded.config.auth.secret.get_secret_value())
    assert secrets[0] != secrets[1]
    assert all(len(s.encode()) >= 32 for s in secrets)
    assert "{{" not in (first / "gateway.toml").read_text()


def test_es256_template_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    scaffold.render(scaffold.get_template("microservices"), tmp_path)
    private = tmp_path / "keys" / "jwt-private.pem"
    public = tmp_path / "keys" / "jwt-public.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes()
    assert b"BEGIN PUBLIC KEY" in public.read_bytes()

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    scaffold.render(scaffold.get_template("minimal"), tmp_path)
    (tmp_path / "gateway.toml").write_text("# mine\n")
    with pytest.raises(UsageError, match="already exists"):
        scaffold.render(scaffold.get_template("minimal"), tmp_path)
    assert (tmp_path / "gateway.toml").read_text() == "# mine\n"
    scaffold.render(scaffold.get_template("minimal"), tmp_path, force=True)
    assert (tmp_path / "gateway.toml").read_text() != "# mine\n"


def test_unknown_template_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="minimal"):
        scaffold.get_template("nope")


def test_init_cli_exit_codes(run_spork: SporkRunner, tmp_path: Path) -> None:
    listed = run_spork("init", "--list")
    assert listed.returncode == 0
    assert all(name in listed.stdout for name in TEMPLATES)
    made = run_spork("init", str(tmp_path / "new"), "--template", "full")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "new" / "gateway.toml").is_file()
    again = run_spork("init", str(tmp_path / "new"), "--template", "full")
    assert again.returncode == 2
    assert again.stderr.startswith("spork: ") and "--force" in again.stderr
    assert "Traceback" not in again.stderr
    unknown = run_spork("init", str(tmp_path / "x"), "--template", "nope")
    assert unknown.returncode == 2 and "unknown template 'nope'" in unknown.stderr
    checked = run_spork("check", str(tmp_path / "new" / "gateway.toml"))
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize("name", [*TEMPLATES, "repo"])
async def test_every_template_compiles_with_its_keys(name: str, tmp_path: Path) -> None:
    from spork_cli.config.load import load_config
    from spork_cli.gateway.compile import Resources, close_table, compile_table

    if name == "repo":
        file = PROJECT_ROOT / "gateway.toml"
    else:
        scaffold.render(scaffold.get_template(name), tmp_path)
        file = tmp_path / "gateway.toml"
    config = load_config(file, env=TEMPLATE_ENV.get(name, {}))
    table = await compile_table(config, None, Resources(base_dir=file.parent))
    try:
        assert len(table.routes) == len(config.routes)
        assert (table.verifier is not None) is (config.auth is not None)
    finally:
        await close_table(table, 0)
