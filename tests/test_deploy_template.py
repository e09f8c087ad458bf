"""`spork init --template deploy`: the Dockerfile, Kubernetes manifests and alert rules agree
with the gateway config they ship and with the endpoints the gateway really serves."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from spork_cli.cli import app
from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.admin import build_admin_app
from spork_cli.gateway.app import build_app
from spork_cli.gateway.keys import TABLE
from tests.support import PROJECT_ROOT, Processes, SporkRunner
from tests.test_templates import TEMPLATE_ENV

ENV = TEMPLATE_ENV["deploy"]
CMD = ["spork", "serve", "-c", "/etc/spork/gateway.toml", "--no-reload"]
ENV_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("deploy") / "app"
    result = CliRunner().invoke(app, ["init", str(target), "--template", "deploy"])
    assert result.exit_code == 0, result.output
    return target


@pytest.fixture(scope="module")
def objects(rendered: Path) -> dict[str, dict[str, Any]]:
    """The Kubernetes objects of k8s/, by kind; each kind appears once."""
    found: dict[str, dict[str, Any]] = {}
    for file in sorted((rendered / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            assert doc["kind"] not in found, f"{file.name}: a second {doc['kind']}"
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def config(rendered: Path) -> dict[str, Any]:
    return tomllib.loads((rendered / "gateway.toml").read_text())


def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def container_port(spec: dict[str, Any], port: int | str) -> int:
    """A probe or Service port, by number or by the container port's name."""
    by_name = {p["name"]: p["containerPort"] for p in spec["ports"]}
    if isinstance(port, str):
        assert port in by_name, f"no container port named {port!r}"
        return by_name[port]
    assert port in by_name.values(), f"{port} is not a container port"
    return port


def env_refs(value: Any) -> set[str]:
    """Every ${VAR} in the string values of a parsed config (comments do not count)."""
    if isinstance(value, str):
        return set(ENV_REF.findall(value))
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*(env_refs(v) for v in value))
    return set()


def dockerfile(rendered: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (rendered / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_writes_the_expected_files(rendered: Path) -> None:
    names = {p.relative_to(rendered).as_posix() for p in rendered.rglob("*") if p.is_file()}
    assert {
        "gateway.toml",
        "gateway.schema.json",
        "Dockerfile",
        "k8s/deployment.yaml",
        "k8s/configmap.yaml",
        "k8s/secret.yaml",
        "k8s/service.yaml",
        "k8s/hpa.yaml",
        "monitoring/alerts.yml",
    } <= names


def test_every_yaml_file_parses_and_every_object_is_named(rendered: Path) -> None:
    files = sorted([*rendered.rglob("*.yaml"), *rendered.rglob("*.yml")])
    assert len(files) == 6
    for file in files:
        docs = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
        assert docs, file
        if file.parent.name == "k8s":
            for doc in docs:
                assert doc.get("apiVersion") and doc.get("kind"), file
                assert doc.get("metadata", {}).get("name"), file
    assert {"Deployment", "ConfigMap", "Secret", "Service", "HorizontalPodAutoscaler"} <= set(
        kind for file in files for kind in re.findall(r"^kind: (\w+)$", file.read_text(), re.M)
    )


async def test_probes_hit_routes_the_admin_listener_serves_without_its_token(
    objects: dict[str, dict[str, Any]], config: dict[str, Any], aiohttp_client: Any
) -> None:
    gateway = await aiohttp_client(build_app(GatewayConfig()))
    admin = build_admin_app(gateway.app[TABLE])
    routed = {r.canonical for r in admin.router.resources()}
    spec = container(objects)
    probes = {kind: spec[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/health"
    assert probes["readinessProbe"]["path"] == "/health/ready"
    for kind, probe in probes.items():
        assert probe["path"] in routed, f"{kind}: the admin app has no {probe['path']}"
        # Probes send no bearer token; the admin guard demands one under /api/.
        assert not probe["path"].startswith("/api/"), kind
        assert container_port(spec, probe["port"]) == config["admin"]["port"] == 9901, kind


def test_service_and_container_ports_match_the_config(
    objects: dict[str, dict[str, Any]], config: dict[str, Any]
) -> None:
    spec = container(objects)
    assert config["server"] == {**config["server"], "host": "0.0.0.0", "port": 8080}
    assert config["admin"]["host"] == "0.0.0.0"
    (port,) = objects["Service"]["spec"]["ports"]
    assert container_port(spec, port["targetPort"]) == config["server"]["port"]
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_configmap_holds_the_rendered_config_where_the_image_reads_it(
    rendered: Path, objects: dict[str, dict[str, Any]]
) -> None:
    configmap = objects["ConfigMap"]
    assert configmap["data"] == {"gateway.toml": (rendered / "gateway.toml").read_text()}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (mount,) = [m for m in container(objects)["volumeMounts"] if m["name"] == volume["name"]]
    assert f"{mount['mountPath']}/gateway.toml" == CMD[CMD.index("-c") + 1]


def test_secret_supplies_every_variable_the_config_reads(
    objects: dict[str, dict[str, Any]], config: dict[str, Any]
) -> None:
    wanted = env_refs(config)
    assert wanted == set(ENV) == {"SPORK_JWT_SECRET", "SPORK_ADMIN_TOKEN", "SPORK_REDIS_URL"}
    secret = objects["Secret"]
    assert wanted <= set(secret["stringData"])
    assert all("REPLACE-ME" in v for v in secret["stringData"].values())
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container(objects)["env"]}
    assert wanted <= set(env)
    for name in wanted:
        assert env[name] == {"name": secret["metadata"]["name"], "key": name}


def test_hpa_scales_the_deployment_on_cpu(objects: dict[str, dict[str, Any]]) -> None:
    hpa, deployment = objects["HorizontalPodAutoscaler"], objects["Deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # CPU utilisation is measured against the request; without one the HPA cannot scale.
    resources = container(objects)["resources"]
    assert resources["requests"]["cpu"] and resources["limits"]["memory"]


def test_config_passes_check_with_its_variables_and_fails_closed_without(
    rendered: Path, run_spork: SporkRunner
) -> None:
    file = str(rendered / "gateway.toml")
    checked = run_spork("check", file, env=ENV)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    unset = run_spork("check", file, env=dict.fromkeys(ENV))
    assert unset.returncode == 1
    assert all(f"{name} is not set" in unset.stdout for name in ENV), unset.stdout


def test_alert_rules_are_the_full_templates_and_promtool_accepts_them(
    rendered: Path, processes: Processes
) -> None:
    alerts = rendered / "monitoring" / "alerts.yml"
    full = PROJECT_ROOT / "templates" / "full" / "monitoring" / "alerts.yml"
    assert alerts.read_text() == full.read_text()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found; scripts/system-deps.sh installs it", pytrace=False)
    result = processes.run(promtool, "check", "rules", str(alerts), timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_and_serves_the_mounted_config(
    rendered: Path, objects: dict[str, dict[str, Any]], config: dict[str, Any]
) -> None:
    instructions = dockerfile(rendered)
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2
    assert all(" AS " in s.upper() for s in stages)
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    # The last stage is what runs: its user must come after its FROM.
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    assert any(op == "USER" for op, _ in instructions[last_from:])
    (cmd,) = [args for op, args in instructions if op == "CMD"]
    assert json.loads(cmd) == CMD
    (expose,) = [args.split() for op, args in instructions if op == "EXPOSE"]
    assert {int(p) for p in expose} == {config["server"]["port"], config["admin"]["port"]}
    (health,) = [args for op, args in instructions if op == "HEALTHCHECK"]
    assert f"127.0.0.1:{config['admin']['port']}/health'" in health
    # The pod pins the same numeric user, so the kubelet can verify runAsNonRoot.
    security = objects["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == int(users[-1].split(":")[0])
