"""`callgate config check` on a config meant for a container, with its paths mapped here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.gateway import REPO


def config_check(
    config: dict[str, Any], tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """The pod's paths become the repo's policies and a scratch data folder; a database URL
    that is not a SQLite file (`${CALLGATE_STORAGE_URL}`) is checked as it is, from `env`."""
    config = {**config, "policy": {**config["policy"], "path": str(REPO / "policies")}}
    for section, file in (("storage", "callgate.db"), ("audit", "audit.db")):
        if config[section]["url"].startswith("sqlite:///"):
            config[section] = {**config[section], "url": f"sqlite:///{tmp_path}/{file}"}
    path = tmp_path / "callgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(path)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env}, timeout=60,
    )  # fmt: skip
