"""Typed tools in a real `callgate serve` process: the document given relative to the
config, read again on SIGHUP; and a serve or config check that refuses a bad document,
naming the problem."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.audit import read_records
from tests.support.gateway import REPO, auth
from tests.support.payments import SPEC, Payments
from tests.support.process import Gateway, cli


def typed_tool(upstream: str, openapi: str) -> dict[str, Any]:
    return {
        "tools": [
            {
                "name": "payments",
                "upstream": f"{upstream}/api",
                "openapi": openapi,
                "validate": "enforce",
            }
        ],
        "policy": {"path": "policies", "watch": False},
    }


async def test_sighup_reads_the_document_again(tmp_path: Path, start_upstream: Any) -> None:
    spec = tmp_path / "specs" / "payments.yaml"
    spec.parent.mkdir()
    spec.write_text((REPO / SPEC).read_text())
    payments = Payments()
    gateway = Gateway(
        tmp_path,
        "http://127.0.0.1:9",
        extra=typed_tool(await start_upstream(payments.app()), "specs/payments.yaml"),
    )
    await gateway.start()
    assert gateway.proc is not None
    url = f"{gateway.url}/tools/payments/v1/refunds/search?q=abc"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url, headers=auth()) as response:
                assert response.status == 200
            document = yaml.safe_load(spec.read_text())
            document["paths"]["/v1/refunds/search"]["get"]["parameters"][0]["schema"][
                "maxLength"
            ] = 2
            spec.write_text(yaml.safe_dump(document))
            gateway.proc.send_signal(signal.SIGHUP)
            async with asyncio.timeout(15):
                while True:
                    async with session.get(url, headers=auth()) as response:
                        if response.status == 400:
                            problems = (await response.json())["error"]["problems"]
                            break
                    await asyncio.sleep(0.05)
    finally:
        assert await gateway.stop() == 0
    assert problems == [{"pointer": "/query/q", "message": '"abc" is longer than 2 characters'}]
    loaded = [r for r in read_records(gateway.audit_file) if r["kind"] == "openapi_loaded"]
    assert [(r["tools"], r["trigger"], r["by"]) for r in loaded] == [
        (["payments"], "signal", "SIGHUP")
    ]


async def test_serve_and_config_check_refuse_a_bad_document(tmp_path: Path) -> None:
    spec = tmp_path / "payments.yaml"
    spec.write_text("openapi: 3.1.0\npaths:\n  refunds: {}\n")
    gateway = Gateway(
        tmp_path, "http://127.0.0.1:9", extra=typed_tool("http://127.0.0.1:9", "payments.yaml")
    )
    expected = f"{gateway.config}: tools[payments].openapi: {spec}: paths.refunds: a path template must start with '/'"
    code, out = await cli("config", "check", str(gateway.config))
    assert (code, out.strip()) == (2, expected)
    code, out = await cli("serve", "--config", str(gateway.config))
    assert code == 2 and expected in out.splitlines()
