"""The fuzz suite's fixture: a real gateway in front of a real recording upstream
(tests/support/fuzz.py holds the Hypothesis profiles and what every example checks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.fuzz import FuzzGateway, Recorder, config_tree


@pytest.fixture
async def fuzz_gateway(tmp_path: Path, start_upstream: Any, start_gateway: Any) -> Any:
    """start(tool overrides, base_path) -> FuzzGateway: a gateway in front of a recording
    upstream, started on the first call and the same one for every later call (each
    Hypothesis example calls it: one gateway serves all of a test's examples)."""
    from gateway.config import parse_config

    started: dict[str, FuzzGateway] = {}

    async def start(tool: dict[str, Any] | None = None, base_path: str = "/base") -> FuzzGateway:
        key = json.dumps([tool, base_path], sort_keys=True)
        if key not in started:
            started[key] = await _start(tool or {}, base_path)
        return started[key]

    async def _start(tool: dict[str, Any], base_path: str) -> FuzzGateway:
        recorder = Recorder()
        url = await start_upstream(recorder.app())
        tree = config_tree(tmp_path, url + base_path, tool)
        config = parse_config(yaml.safe_dump(tree), tmp_path)
        client = await start_gateway(config=config)
        owned = frozenset({"accept-encoding"}) if tool.get("kind") == "mcp" else frozenset()
        return FuzzGateway(client, recorder, config.audit.path, base_path, owned)

    return start
