"""deploy/'s container image, compose setup, Kubernetes manifests and Grafana files, checked
against the code they run: every file parses, the manifests pass the Kubernetes API schemas
(kubernetes-validate, strict), and ports, probe paths, commands and flags, environment variables
and config paths agree with the gateway's argparse parsers, routes and configs. A renamed flag,
port, probe path or variable fails here. The image builds where docker can build."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from gateway.aggregator.cli import add_arguments as add_aggregate_arguments
from gateway.cli import build_parser
from gateway.config.loader import load_config
from gateway.providers.base import MOCK_PORT
from gateway.providers.mock.cli import build_parser as mock_parser
from tests.deploy.artifacts import (
    COMPOSE,
    COMPOSE_CONFIG,
    DASHBOARDS,
    DEPLOY,
    K8S,
    ROOT,
    dashboards,
    load_yaml,
    manifests,
    panels,
)

DOCKERFILE = DEPLOY / "Dockerfile"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise (HPA v2, PDB v1, ...)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def dockerfile_instruction(name: str) -> str:
    """The last `name` instruction of the final stage, with its continuation lines."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = [line[len(name) + 1 :] for line in text.splitlines() if line.startswith(name + " ")]
    assert found, f"no {name} in {DOCKERFILE}"
    return found[-1].strip()


def entrypoint() -> list[str]:
    value: list[str] = json.loads(dockerfile_instruction("ENTRYPOINT"))
    return value


def check_spendgate_command(argv: list[str]) -> Any:
    """Parse a `spendgate ...` command line with the real parsers; a renamed flag fails."""
    assert argv[0] == "spendgate", argv
    if argv[1] == "mock-upstream":
        return mock_parser().parse_args(argv[2:])
    return build_parser().parse_args(argv[1:])


def env_names(path: Path) -> tuple[set[str], set[str]]:
    """(${VARS} without a default, ${VARS:-with one}) of a config file, outside comments."""
    text = "\n".join(line.split(" #")[0] for line in path.read_text().splitlines())
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    required, optional = set(), set()
    for name, default in _ENV_REF.findall(text):
        (optional if default else required).add(name)
    return required, optional


def app_routes() -> set[str]:
    from gateway.app.handlers import healthz, metrics, readyz  # noqa: F401 (the handlers exist)
    from gateway.app.server import create_app

    config = load_config(ROOT / "tests" / "fixtures" / "gateway.yaml", env=_test_env())
    app = create_app(config, None)
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


def _test_env() -> dict[str, str]:
    return {"SPENDGATE_UPSTREAM_URL": "http://127.0.0.1:9/v1", "SPENDGATE_ADMIN_KEY": "x" * 24}


# --- the image ------------------------------------------------------------------------------


def test_the_image_runs_serve_on_the_config_port_as_a_non_root_user() -> None:
    argv = entrypoint()
    args = check_spendgate_command(argv)
    assert args.command == "serve" and args.host == "0.0.0.0"
    port = load_config(ROOT / "gateway" / "defaults" / "gateway.yaml").server.port
    assert dockerfile_instruction("EXPOSE") == str(port)
    health = dockerfile_instruction("HEALTHCHECK")
    assert f"http://127.0.0.1:{port}/healthz" in health
    assert "/healthz" in app_routes()
    user = dockerfile_instruction("USER").split(":")[0]
    assert user.isdigit() and int(user) != 0
    # The writable volume is the working directory, where relative spool/archive paths land.
    assert dockerfile_instruction("WORKDIR") == "/var/lib/spendgate"
    assert json.loads(dockerfile_instruction("VOLUME")) == ["/var/lib/spendgate"]
    text = DOCKERFILE.read_text()
    assert text.count("FROM ") == 2 and "AS build" in text  # multi-stage
    assert "COPY --from=build /opt/spendgate /opt/spendgate" in text


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied.update(line.split()[1:-1])
    assert copied and copied <= allowed
    assert all((ROOT / path).exists() for path in copied)


def test_the_image_builds_where_docker_can_build(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        pytest.skip(f"docker cannot build here (no engine): {info.stderr.strip()[:200]}")
    build = subprocess.run(
        [docker, "build", "-f", str(DOCKERFILE), "-t", "spendgate:test", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    image = ["--read-only", "--entrypoint", "spendgate", "spendgate:test"]
    run = subprocess.run(
        [docker, "run", "--rm", *image, "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0 and run.stdout.startswith("spendgate "), run.stderr


# --- docker compose -------------------------------------------------------------------------


def test_compose_services_run_real_commands_on_the_configs_ports() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    config = load_config(COMPOSE_CONFIG, env={})
    port = config.server.port
    gateways = [name for name in services if name.startswith("gateway-")]
    assert len(gateways) == 2
    for name in gateways:
        service = services[name]
        args = check_spendgate_command(entrypoint() + service.get("command", []))
        assert args.command == "serve"
        assert service["ports"][0].endswith(f":{port}")
        assert service["ports"][0].startswith("127.0.0.1:")  # not published to the network
        assert service["read_only"] is True
        assert int(service["stop_grace_period"].rstrip("s")) > config.server.drain_s
    # Each replica spools in a volume of its own.
    volumes = [services[name]["volumes"][-1].split(":")[0] for name in gateways]
    assert len(set(volumes)) == 2 and set(volumes) <= set(compose["volumes"])

    aggregator = services["aggregator"]
    args = check_spendgate_command(aggregator["entrypoint"] + aggregator["command"])
    assert args.command == "aggregate" and args.metrics_host == "0.0.0.0"
    mock = services["mock-upstream"]
    mock_args = check_spendgate_command(mock["entrypoint"] + mock["command"])
    assert mock_args.port == MOCK_PORT
    # The config's default upstream is that service, and its store is the redis service, with AOF.
    upstream = config.providers["upstream"].base_url
    assert upstream == f"http://mock-upstream:{mock_args.port}/v1"
    assert config.store.url == "redis://redis:6379/0"
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == (
        "yes"
    )

    # Prometheus scrapes every gateway and the aggregator where they listen, and loads the rules.
    prometheus = load_yaml(DEPLOY / "compose" / "prometheus.yml")
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in prometheus["scrape_configs"]
    }
    assert sorted(jobs["spendgate-gateway"]) == sorted(f"{g}:{port}" for g in gateways)
    assert jobs["spendgate-aggregator"] == [f"aggregator:{args.metrics_port}"]
    mounts = services["prometheus"]["volumes"]
    assert "../prometheus/alerts.yml:/etc/prometheus/rules/spendgate-alerts.yml:ro" in mounts


def test_compose_mounts_and_env_match_the_config() -> None:
    compose = load_yaml(COMPOSE)
    base = compose["x-spendgate"]
    env = base["environment"]
    # The config is read from the mounted folder, by the variable the CLI reads.
    assert env["SPENDGATE_CONFIG"] == "/etc/spendgate/gateway.yaml"
    assert "./config:/etc/spendgate:ro" in base["volumes"]
    assert (DEPLOY / "compose" / "config" / "gateway.yaml").is_file()
    required, optional = env_names(COMPOSE_CONFIG)
    assert required == set()  # `docker compose up` works with nothing set
    passed = set(env) - {"SPENDGATE_CONFIG"}
    assert passed <= optional  # every variable compose passes is one the config reads
    assert {"SPENDGATE_UPSTREAM_URL", "SPENDGATE_UPSTREAM_API_KEY"} <= passed
    # Each relative path of the config lands on the service's volume (the image's WORKDIR).
    config = load_config(COMPOSE_CONFIG, env={})
    assert not Path(config.store.spool_dir).is_absolute()
    assert not Path(config.aggregator.archive_dir).is_absolute()

    grafana = compose["services"]["grafana"]["volumes"]
    provisioning = load_yaml(DEPLOY / "compose" / "grafana" / "dashboards.yaml")
    path = provisioning["providers"][0]["options"]["path"]
    assert f"../grafana/dashboards:{path}:ro" in grafana
    for mount in grafana:
        source = mount.split(":")[0]
        if source.startswith("."):
            assert (COMPOSE.parent / source).exists(), mount


# --- Kubernetes ------------------------------------------------------------------------------


def test_every_manifest_passes_the_kubernetes_schemas() -> None:
    resources = manifests()
    assert len(resources) == len(load_yaml(K8S / "kustomization.yaml")["resources"])
    for name, doc in resources.items():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc}")


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    doc = json.loads(json.dumps(manifests()["Deployment/spendgate-gateway"]))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def pod(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = manifests()[f"Deployment/{name}"]["spec"]["template"]["spec"]
    return spec


def test_the_gateway_deployment_matches_the_code() -> None:
    resources = manifests()
    deployment = resources["Deployment/spendgate-gateway"]
    spec = pod("spendgate-gateway")
    (container,) = spec["containers"]
    args = check_spendgate_command(entrypoint() + container["args"])
    config_file = Path(args.config)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == str(config_file.parent) and "subPath" not in mount
    generated = load_yaml(K8S / "kustomization.yaml")["configMapGenerator"][0]
    assert [Path(f).name for f in generated["files"]] == [config_file.name]
    assert {v["name"]: v for v in spec["volumes"]}["config"]["configMap"]["name"] == (
        generated["name"]
    )
    config = load_config(K8S / "config" / "gateway.yaml", env=secrets_example_env())
    (port,) = container["ports"]
    assert port["containerPort"] == config.server.port
    routes = app_routes()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["port"] == port["name"] and check["path"] in routes
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["timeoutSeconds"] >= 1  # /readyz answers within 0.5 s
    # The pod may take the whole drain, after its preStop pause, before it is killed.
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert spec["terminationGracePeriodSeconds"] >= pause + config.server.drain_s + 5
    # Writable: the spool (the config's absolute spool_dir is on the data volume) and /tmp only.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    data = next(m for m in container["volumeMounts"] if m["name"] == "data")["mountPath"]
    assert Path(config.store.spool_dir).is_relative_to(data)
    assert spec["securityContext"]["runAsUser"] != 0
    # Service, HPA and PDB point at these pods and this port.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = resources["Service/spendgate-gateway"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == port["name"]
    assert (
        resources["PodDisruptionBudget/spendgate-gateway"]["spec"]["selector"][
            "matchLabels"
        ].items()
        <= labels.items()
    )
    target = resources["HorizontalPodAutoscaler/spendgate-gateway"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "spendgate-gateway")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.server.port)
    assert annotations["prometheus.io/path"] in routes


def test_the_aggregator_deployment_matches_the_code() -> None:
    resources = manifests()
    spec = pod("spendgate-aggregator")
    (container,) = spec["containers"]
    args = check_spendgate_command(container["command"] + container["args"])
    assert args.command == "aggregate"
    (port,) = container["ports"]
    assert port["containerPort"] == args.metrics_port and args.metrics_host == "0.0.0.0"
    config = load_config(K8S / "config" / "gateway.yaml", env=secrets_example_env())
    archive = next(m for m in container["volumeMounts"] if m["name"] == "archive")["mountPath"]
    assert Path(config.aggregator.archive_dir).is_relative_to(archive)
    claim = {v["name"]: v for v in spec["volumes"]}["archive"]["persistentVolumeClaim"]
    pvc = resources[f"PersistentVolumeClaim/{claim['claimName']}"]["spec"]
    replicas = resources["Deployment/spendgate-aggregator"]["spec"]["replicas"]
    assert replicas == 1 or pvc["accessModes"] == ["ReadWriteMany"]
    service = resources["Service/spendgate-aggregator"]["spec"]
    assert service["ports"][0]["port"] == args.metrics_port
    # Its flags are the aggregate command's own (the same parser `spendgate aggregate` uses).
    import argparse

    parser = argparse.ArgumentParser()
    add_aggregate_arguments(parser)
    parser.parse_args(container["args"])


def secrets_example_env() -> dict[str, str]:
    names = [
        line.split("=")[0]
        for line in (K8S / "secrets.example.env").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    values = {
        "REDIS_URL": "redis://redis:6379/0",
        "SEARCH_SERVICE_KEY": "sk-sg-" + "k" * 24,
        "SPENDGATE_REPORTING_KEY": "r" * 24,  # must differ from the admin key
    }
    return {name: values.get(name, "x" * 24) for name in names}


def test_the_secret_supplies_every_variable_of_the_config() -> None:
    required, optional = env_names(K8S / "config" / "gateway.yaml")
    example = set(secrets_example_env())
    assert required == example  # no more (a stale name), no fewer (a pod that cannot start)
    assert optional == set()
    for name in ("spendgate-gateway", "spendgate-aggregator"):
        (container,) = pod(name)["containers"]
        assert container["envFrom"] == [{"secretRef": {"name": "spendgate-secrets"}}]
    # It loads with them, and its comment's command is the real one.
    load_config(K8S / "config" / "gateway.yaml", env=secrets_example_env())
    usage = (K8S / "secrets.example.env").read_text()
    assert "create secret generic spendgate-secrets" in usage


# --- Grafana ---------------------------------------------------------------------------------


def test_dashboards_are_current_grafana_json_on_a_chosen_datasource() -> None:
    boards = dashboards()
    assert {p.name for p in DASHBOARDS.glob("*.json")} == set(boards)
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert board["schemaVersion"] >= 39, name  # Grafana 11 and later
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [panel["id"] for panel in panels(board)]
        assert len(set(ids)) == len(ids), name
        cells: set[tuple[int, int]] = set()
        for panel in panels(board):
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (name, panel["title"])
            area = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not area & cells, f"{name}: {panel['title']} overlaps another panel"
            cells |= area
            if panel["type"] == "row":
                continue
            assert panel["description"], (name, panel["title"])
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"]
                for used in re.findall(r"\$(\w+)", target["expr"]):
                    assert used.startswith("__") or used in variables, (name, used)


def test_the_provisioned_datasource_is_the_compose_prometheus() -> None:
    datasource = load_yaml(DEPLOY / "compose" / "grafana" / "datasources.yaml")["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    compose = load_yaml(COMPOSE)
    prometheus = compose["services"]["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
