"""The deploy files hold to the code: Procfile, Dockerfile, fly.toml, app.json, the sidecar
and standalone manifests name commands, paths, ports and settings that exist."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from support import free_port, wait_for_healthz
from test_docs import code_blocks, section

from receiver.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DEPLOY_DOC = "docs/deploy.md"
BIN = Path(sys.executable).parent
SETTINGS = set(Settings().env_names())


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def shell_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a platform gives the Procfile's commands: ours on PATH, no settings."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return {
        **env,
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "RECEIVER_DATABASE": str(tmp_path / "receiver.db"),
        **extra,
    }


def test_procfile_has_a_release_step_and_a_web_process_only() -> None:
    assert procfile() == {
        "release": "receiver migrate",
        "web": "receiver serve --host 0.0.0.0",
    }


def test_procfile_release_command_as_written_migrates(tmp_path: Path) -> None:
    result = subprocess.run(
        procfile()["release"],
        shell=True,
        env=shell_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "receiver.db").exists()


def test_procfile_web_command_as_written_serves_healthz_on_port(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        procfile()["web"],
        shell=True,
        env=shell_env(tmp_path, PORT=str(port), RECEIVER_LOG_FORMAT="json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the shell and the server in one group, stopped together
    )
    try:
        response = wait_for_healthz(f"http://127.0.0.1:{port}", proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert response.status_code == 200 and response.json()["status"] == "ok"
    # Bound to every address, as a platform's router needs, and it says so at start.
    assert '"api_exposed_without_token"' in output


# -- Dockerfile: no daemon is needed to hold it to the code ------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in dockerfile():
        if instruction == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(args))
    return env


def test_dockerfile_is_a_slim_python_image_run_by_an_unprivileged_user() -> None:
    steps = dockerfile()
    base = [args for instruction, args in steps if instruction == "FROM"]
    assert len(base) == 1 and re.fullmatch(r"python:3\.\d+-slim", base[0])
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    # The user is switched to after the install, before anything runs.
    kinds = [instruction for instruction, _ in steps]
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")


def test_dockerfile_keeps_data_on_a_volume_and_serves_on_its_port() -> None:
    steps = dict(dockerfile())
    env = docker_env()
    assert {name for name in env if not name.startswith(("PYTHON", "PIP_"))} <= SETTINGS
    assert json.loads(steps["VOLUME"]) == ["/data"]
    assert env["RECEIVER_DATABASE"].startswith("/data/")
    assert env["HOST"] == "0.0.0.0"
    assert steps["EXPOSE"] == env["PORT"]
    assert json.loads(steps["CMD"]) == ["receiver", "serve"]


def test_dockerfile_healthcheck_asks_healthz_and_works(tmp_path: Path) -> None:
    """The HEALTHCHECK command, run here as Docker would run it, passes against a live server."""
    options, _, command = dict(dockerfile())["HEALTHCHECK"].partition("CMD ")
    assert "--interval" in options
    argv = json.loads(command)
    assert "/healthz" in argv[-1]
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "receiver"), "serve"],
        env=shell_env(tmp_path, PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            check = subprocess.run(
                [sys.executable, *argv[1:]], env={**os.environ, "PORT": str(port)}, timeout=10
            )
            if check.returncode == 0:
                break
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.5)  # each try is a process of its own
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    down = subprocess.run(
        [sys.executable, *argv[1:]],
        env={**os.environ, "PORT": str(port)},
        capture_output=True,
        timeout=10,
    )
    assert down.returncode != 0  # and it fails once the service is gone


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "*.db"} <= set(ignored)


# -- Fly.io ------------------------------------------------------------------------------------


def test_fly_toml_runs_one_machine_with_the_database_on_its_volume() -> None:
    fly: dict[str, Any] = tomllib.loads((DEPLOY / "fly.toml").read_text())
    env = fly["env"]
    assert set(env) <= SETTINGS
    Settings.from_env(env)  # every value is one the service accepts
    (mount,) = fly["mounts"]
    assert env["RECEIVER_DATABASE"].startswith(mount["destination"].rstrip("/") + "/")
    assert (DEPLOY / fly["build"]["dockerfile"]).is_file()
    service = fly["http_service"]
    assert service["internal_port"] == int(env["PORT"]) == int(docker_env()["PORT"])
    assert service["min_machines_running"] == 1 and service["auto_stop_machines"] == "off"
    assert [c["path"] for c in service["checks"]] == ["/healthz"]
    assert fly["kill_signal"] == "SIGTERM"
    assert "release_command" not in fly.get("deploy", {})  # no volume there


# -- Heroku ------------------------------------------------------------------------------------


def test_app_json_generates_the_secrets_and_names_only_real_settings() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    env = app["env"]
    assert set(env) <= SETTINGS
    generated = {name for name, spec in env.items() if spec.get("generator") == "secret"}
    assert generated == {"RECEIVER_SECRET_KEY", "RECEIVER_API_TOKEN"}
    assert all(spec.get("description") for spec in env.values())
    Settings.from_env({name: spec["value"] for name, spec in env.items() if "value" in spec})
    assert app["formation"] == {"web": {"quantity": 1, "size": "basic"}}
    assert set(app["formation"]) <= set(procfile())
    assert app["buildpacks"] == [{"url": "heroku/python"}]


def test_app_json_provisions_postgresql_so_the_release_step_migrates_it() -> None:
    """A dyno's disk is wiped at each restart: the button's app keeps its data in Heroku
    Postgres (which sets DATABASE_URL), never in a SQLite file on the dyno."""
    app = json.loads((ROOT / "app.json").read_text())
    assert app["addons"] == [{"plan": "heroku-postgresql:essential-0", "as": "DATABASE"}]
    assert "RECEIVER_DATABASE" not in app["env"]
    assert "RECEIVER_ALLOW_EPHEMERAL" not in app["env"]
    values = {name: spec["value"] for name, spec in app["env"].items() if "value" in spec}
    heroku = values | {"DYNO": "web.1", "DATABASE_URL": "postgres://u:p@ec2.example.com/d"}
    assert (
        Settings.from_env(heroku).database_url == "postgres://u:p@ec2.example.com/d?sslmode=require"
    )
    assert procfile()["release"] == "receiver migrate"


def test_deploy_docs_have_a_real_heroku_button() -> None:
    heroku = section("## Deploy to Heroku", DEPLOY_DOC)
    (button,) = re.findall(r"\[!\[[^]]*\]\((https://[^)]+)\)\]\((https://[^)]+)\)", heroku)
    image, target = button
    assert image == "https://www.herokucdn.com/deploy/button.svg"
    template = urlsplit(target)
    assert (template.netloc, template.path) == ("heroku.com", "/deploy")
    assert template.query.startswith("template=https://github.com/")
    assert "heroku addons:create heroku-postgresql:essential-0" in heroku


def test_heroku_installs_the_project_from_requirements_txt() -> None:
    lines = [
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["."]
    pinned = (ROOT / ".python-version").read_text().strip()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, pinned.split("."))) >= tuple(map(int, minimum.split(".")))
    assert f"python:{pinned}-slim" == dict(dockerfile())["FROM"]


# -- sidecars ----------------------------------------------------------------------------------


def env_names(container: dict[str, Any]) -> set[str]:
    env = container.get("environment") or container.get("env") or {}
    return {item["name"] for item in env} if isinstance(env, list) else set(env)


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Setting -> (Secret, key) for the variables a Kubernetes container reads from Secrets."""
    return {
        item["name"]: (ref["name"], ref["key"])
        for item in container.get("env", [])
        if (ref := item.get("valueFrom", {}).get("secretKeyRef"))
    }


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def manifest(name: str) -> dict[str, dict[str, Any]]:
    """A Kubernetes manifest's objects by kind (each kind appears once)."""
    docs = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds))
    return {d["kind"]: d for d in docs}


SECRETS = ("TWILIO_AUTH_TOKEN", "RECEIVER_SECRET_KEY", "RECEIVER_API_TOKEN")


def test_compose_sidecar_shares_localhost_and_the_data_volume() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.sidecar.yml").read_text())
    receiver, app = compose["services"]["receiver"], compose["services"]["app"]
    assert env_names(receiver) <= SETTINGS
    # Secrets come from the environment or a .env file, never written in the file itself.
    for name in SECRETS:
        assert receiver["environment"][name] == f"${{{name}:-}}"
    assert app["environment"]["RECEIVER_API_TOKEN"] == "${RECEIVER_API_TOKEN:-}"
    assert 'os.environ.get("RECEIVER_API_TOKEN")' in " ".join(app["command"])
    assert receiver["environment"]["RECEIVER_DATABASE"].startswith("/data/")
    assert "receiver-data:/data" in receiver["volumes"]
    assert app["network_mode"] == "service:receiver"  # the app's localhost is receiver's
    assert "http://127.0.0.1:8000/" in " ".join(app["command"])
    assert any(v.startswith("receiver-data:/data") for v in app["volumes"])
    assert app["depends_on"]["receiver"]["condition"] == "service_healthy"
    assert "receiver-data" in compose["volumes"]


def test_kubernetes_sidecar_is_one_pod_with_probes_and_the_data_volume() -> None:
    docs = manifest("kubernetes-sidecar.yaml")
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two writers
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    containers = {c["name"]: c for c in pod["containers"]}
    receiver, app = containers["receiver"], containers["app"]
    assert env_names(receiver) <= SETTINGS
    database = next(e["value"] for e in receiver["env"] if e["name"] == "RECEIVER_DATABASE")
    mount = next(m for m in receiver["volumeMounts"] if m["name"] == "receiver-data")
    assert database.startswith(mount["mountPath"] + "/")
    assert receiver["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert receiver["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert receiver["ports"][0]["containerPort"] == int(docker_env()["PORT"])
    assert "http://127.0.0.1:8000/" in " ".join(app["command"])
    (volume,) = pod["volumes"]
    assert (
        volume["persistentVolumeClaim"]["claimName"]
        == docs["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert (
        docs["Service"]["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    )
    # The secrets, the app's token included, come from the Secret "receiver".
    assert {name: ref[0] for name, ref in secret_refs(receiver).items()} == dict.fromkeys(
        SECRETS, "receiver"
    )
    assert secret_refs(app)["RECEIVER_API_TOKEN"] == secret_refs(receiver)["RECEIVER_API_TOKEN"]
    assert 'os.environ.get("RECEIVER_API_TOKEN")' in " ".join(app["command"])
    Settings.from_env(literal_env(receiver))
    assert pod["terminationGracePeriodSeconds"] >= 35


def test_kubernetes_standalone_is_one_replica_behind_a_tls_ingress_for_webhooks_only() -> None:
    docs = manifest("kubernetes-standalone.yaml")
    assert set(docs) == {"PersistentVolumeClaim", "Deployment", "Service", "Ingress"}
    deployment, service, ingress = docs["Deployment"], docs["Service"], docs["Ingress"]
    # One writer on one SQLite file: never two Pods, not even during a rollout.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"] == template["metadata"]["labels"]
    pod = template["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    assert pod["terminationGracePeriodSeconds"] >= 35
    (receiver,) = pod["containers"]
    assert env_names(receiver) <= SETTINGS
    env = literal_env(receiver)
    Settings.from_env(env)  # every value is one the service accepts
    (mount,) = receiver["volumeMounts"]
    assert env["RECEIVER_DATABASE"].startswith(mount["mountPath"] + "/")
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"]
    claim = docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert receiver["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert receiver["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (port,) = receiver["ports"]
    assert port["containerPort"] == int(docker_env()["PORT"])
    # Secrets from the Secret "receiver"; the API token is required (the Service is reachable
    # from every Pod in the cluster), the others optional.
    refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in receiver["env"]
        if "valueFrom" in item
    }
    assert set(refs) == set(SECRETS)
    assert {ref["name"] for ref in refs.values()} == {"receiver"}
    assert refs["RECEIVER_API_TOKEN"].get("optional", False) is False
    # The Service selects the Pod and targets its port; the Ingress serves that Service, over
    # TLS, at RECEIVER_PUBLIC_URL's host, and only the webhook paths.
    assert service["spec"]["selector"] == template["metadata"]["labels"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    host = urlsplit(env["RECEIVER_PUBLIC_URL"])
    assert host.scheme == "https"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == host.hostname
    assert any(
        host.hostname in tls["hosts"] and tls["secretName"] for tls in ingress["spec"]["tls"]
    )
    paths = rule["http"]["paths"]
    assert paths and all(p["path"].startswith("/v1/webhook/") for p in paths)
    for p in paths:
        backend = p["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"] in ({"name": service_port["name"]}, {"number": service_port["port"]})


# -- docs/deploy.md and docs/operate.md walk through these files ---------------------------------


def test_deploy_docs_point_several_instances_at_one_postgresql() -> None:
    """Fly and Kubernetes each say how to run several instances on PostgreSQL: DATABASE_URL
    from the platform's secret, and more than one instance."""
    fly = section("### Several Machines on Fly, with PostgreSQL", DEPLOY_DOC)
    assert "fly postgres attach" in fly and "DATABASE_URL" in fly
    assert "fly scale count 2" in fly
    kubernetes = section("### Several replicas, with PostgreSQL", DEPLOY_DOC)
    (snippet,) = [b for b in code_blocks(kubernetes) if b.startswith("spec:")]
    spec = yaml.safe_load(snippet)["spec"]
    assert spec["replicas"] > 1
    (container,) = spec["template"]["spec"]["containers"]
    (ref,) = [item for item in container["env"] if item["name"] == "DATABASE_URL"]
    key = ref["valueFrom"]["secretKeyRef"]["key"]
    assert f"--from-literal={key}=" in kubernetes
    heroku = section("## Deploy to Heroku", DEPLOY_DOC)
    assert "heroku ps:scale web=2" in heroku


def test_deploy_docs_walk_through_each_deploy_path_with_these_files() -> None:
    fly_steps = section("## Deploy to Fly", DEPLOY_DOC)
    fly: dict[str, Any] = tomllib.loads((DEPLOY / "fly.toml").read_text())
    assert "fly deploy --config deploy/fly.toml --dockerfile deploy/Dockerfile" in fly_steps
    assert f"fly volumes create {fly['mounts'][0]['source']} " in fly_steps
    heroku_steps = section("## Deploy to Heroku", DEPLOY_DOC)
    assert "PostgreSQL" in heroku_steps and "lost" in heroku_steps
    assert "git push heroku main" in heroku_steps
    sidecar_steps = section("## Run as a sidecar", DEPLOY_DOC)
    for name in ("docker-compose.sidecar.yml", "kubernetes-sidecar.yaml"):
        assert f"deploy/{name}" in sidecar_steps
    assert "Recreate" in section("### Kubernetes sidecar", DEPLOY_DOC)
    standalone = section("## Kubernetes on its own", DEPLOY_DOC)
    assert "kubectl apply -f deploy/kubernetes-standalone.yaml" in standalone
    assert "docker build -f deploy/Dockerfile -t receiver ." in section("## The image", DEPLOY_DOC)
    # The secrets each Kubernetes manifest reads are the ones the docs' `kubectl create secret`
    # makes.
    for name in ("kubernetes-sidecar.yaml", "kubernetes-standalone.yaml"):
        containers = manifest(name)["Deployment"]["spec"]["template"]["spec"]["containers"]
        keys = {key for c in containers for _, key in secret_refs(c).values()}
        for key in keys:
            assert f"--from-literal={key}=" in sidecar_steps + standalone, (name, key)
    inside = section("## Get a signed callback URL inside a container", DEPLOY_DOC)
    assert "receiver callback-url" in inside
    for title in ("## Retention", "## Backup", "## Logs", "## Metrics"):
        assert section(title, "docs/operate.md").strip()
