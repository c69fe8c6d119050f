"""Validate docker-compose.yml with `docker-compose config` (no Docker engine needed)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def _run_compose_config(compose_file: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `docker-compose -f FILE config` in the file's directory and capture its output."""
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail(
            "docker-compose was not found on PATH. "
            "Install it with 'make install-system' or 'sudo apt-get install docker-compose'."
        )
    return subprocess.run(
        [executable, "-f", str(compose_file), "config"],
        cwd=compose_file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _published_ports(service: dict) -> list[tuple[str | None, int | None, int]]:
    """Return (host_ip, published, target) for each port, from either short or long form."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            host_ip = entry.get("host_ip")
            ports.append((host_ip, int(published) if published else None, int(entry["target"])))
            continue

        # Short form as normalised by docker-compose 1.29: "127.0.0.1:6333:6333/tcp".
        # rsplit keeps an IPv6 host such as "[::1]" in one piece.
        mapping = str(entry).split("/")[0]
        parts = mapping.rsplit(":", 2)
        host_ip = parts[0] if len(parts) == 3 else None
        published = int(parts[-2]) if len(parts) >= 2 else None
        ports.append((host_ip, published, int(parts[-1])))
    return ports


def _volume_mounts(service: dict) -> list[tuple[str | None, str]]:
    """Return (source, target) for each volume, from either short or long form."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts.append((entry.get("source"), entry.get("target")))
            continue

        # Short form as normalised by docker-compose 1.29: "qdrant_storage:/qdrant/storage:rw".
        parts = str(entry).split(":")
        if len(parts) == 1:
            # An anonymous volume has a target and no source.
            mounts.append((None, parts[0]))
        else:
            mounts.append((parts[0], parts[1]))
    return mounts


@pytest.fixture(scope="module")
def compose_config() -> dict:
    env = dict(os.environ, QDRANT_API_KEY="test-key")
    result = _run_compose_config(COMPOSE_FILE, env)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def test_compose_service_names(compose_config):
    assert set(compose_config["services"]) == {"qdrant", "pipeline"}


def test_qdrant_image_pinned(compose_config):
    image = compose_config["services"]["qdrant"]["image"]
    assert image.startswith("qdrant/qdrant:v"), f"qdrant image is not pinned to a version: {image}"
    assert not image.endswith(":latest"), f"qdrant image must not use the latest tag: {image}"


def test_qdrant_ports_loopback_only(compose_config):
    ports = _published_ports(compose_config["services"]["qdrant"])
    mappings = {(published, target) for _, published, target in ports}
    host_ips = {host_ip for host_ip, _, _ in ports}

    assert (6333, 6333) in mappings, f"port 6333 is not published: {ports}"
    assert (6334, 6334) in mappings, f"port 6334 is not published: {ports}"
    assert host_ips == {"127.0.0.1"}, f"qdrant ports must be bound to 127.0.0.1 only: {ports}"


def test_qdrant_storage_volume(compose_config):
    mounts = _volume_mounts(compose_config["services"]["qdrant"])
    assert ("qdrant_storage", "/qdrant/storage") in mounts, f"qdrant volumes: {mounts}"


def test_qdrant_has_healthcheck(compose_config):
    assert "healthcheck" in compose_config["services"]["qdrant"], "qdrant has no healthcheck"


def test_pipeline_waits_for_healthy_qdrant(compose_config):
    depends_on = compose_config["services"]["pipeline"].get("depends_on", {})
    assert "qdrant" in depends_on, f"pipeline does not depend on qdrant: {depends_on}"
    assert depends_on["qdrant"].get("condition") == "service_healthy", depends_on


def test_pipeline_has_build(compose_config):
    assert "build" in compose_config["services"]["pipeline"], "pipeline has no build section"


def test_top_level_volumes(compose_config):
    volumes = compose_config.get("volumes") or {}
    assert "qdrant_storage" in volumes, f"top-level volumes: {sorted(volumes)}"


def test_compose_requires_api_key(tmp_path):
    # A copy in an empty folder, so that no .env file can supply the key.
    compose_copy = tmp_path / "docker-compose.yml"
    shutil.copyfile(COMPOSE_FILE, compose_copy)
    env = {name: value for name, value in os.environ.items() if name != "QDRANT_API_KEY"}

    result = _run_compose_config(compose_copy, env)

    assert result.returncode != 0, "docker-compose config succeeded without QDRANT_API_KEY"
    assert "QDRANT_API_KEY" in result.stderr, result.stderr
