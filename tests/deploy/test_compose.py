"""docker-compose.yml for a single host: every part present, the gateway on loopback only,
no password in the file; `docker compose config` validates it where the client exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_has_every_part_and_no_secrets() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert set(services) == {
        "kafka",
        "postgres",
        "migrate",
        "worker",
        "auditor",
        "notifier",
        "gateway",
    }
    assert services["gateway"]["ports"] == ["127.0.0.1:8080:8080"]
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    for name in ("worker", "migrate"):
        dockerfile = services[name]["build"]["dockerfile"]
        assert (ROOT / dockerfile).is_file(), dockerfile
    # Every password is a required variable from .env, never a literal.
    literals = re.findall(r"PASSWORD: (?!\$\{)(\S+)", text)
    literals += re.findall(r"://\w+:(?!\$\{)([^@\s]+)@", text)
    assert not literals, literals
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for service in ("auditor", "notifier", "gateway"):
        assert (
            services[service]["depends_on"]["migrate"]["condition"]
            == "service_completed_successfully"
        )
    # The notifier runs on the app image with the auditor's environment and dependencies.
    notifier, auditor = services["notifier"], services["auditor"]
    assert notifier["command"] == ["notifier"]
    assert notifier["image"] == auditor["image"]
    assert notifier["environment"] == auditor["environment"]
    assert notifier["depends_on"] == auditor["depends_on"]


def test_compose_config_validates_where_docker_compose_exists() -> None:
    docker = shutil.which("docker")
    has_compose = (
        docker is not None
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    )
    env = ROOT / "docker" / "compose-check.env"
    env.write_text(
        "POSTGRES_PASSWORD=x\nLLMBUS_OWNER_PASSWORD=x\nLLMBUS_WRITER_PASSWORD=x\nLLMBUS_READER_PASSWORD=x\n"
    )
    try:
        if has_compose:
            assert docker is not None
            compose_file = str(ROOT / "docker-compose.yml")
            args = [docker, "compose", "--env-file", str(env), "-f", compose_file, "config", "-q"]
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr
        else:
            # No compose client here: check what it would, the variable references resolve.
            text = (ROOT / "docker-compose.yml").read_text()
            needed = set(re.findall(r"\$\{(\w+):\?", text))
            provided = {line.split("=", 1)[0] for line in env.read_text().splitlines()}
            assert needed == provided
    finally:
        env.unlink()
