"""The audit log on PostgreSQL (docs/deployment.md, "Running many replicas"): several writers
make one chain, `callgate audit` reads it through `audit.url`, and an outage of the server
stops forwarding until it is back (docs/operations.md, "Audit log").

The outage is a TCP forwarder of the test's own between the gateway and the test PostgreSQL
(the shared server must stay up for the other tests): closing it drops the gateway's
connection and refuses new ones, as a stopped server does; reopening it is the server back.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from click.testing import CliRunner

from gateway.audit.log import AuditLog
from gateway.cli import main
from gateway.config import AuditConfig
from gateway.observability.metrics import Metrics
from tests.support.audit import read_records, verify_file, with_audit
from tests.support.audit_chain import calls
from tests.support.gateway import auth, make_config, start_path_recorder
from tests.support.process import free_port
from tests.support.servers import Forwarder


def _search_path(url: str) -> str:
    return url.split("search_path%3D", 1)[1]


async def test_two_writers_make_one_chain(postgres_audit_url: str) -> None:
    """Two logs (two gateways) committing at once: every batch seals on the real head."""
    logs = [AuditLog(AuditConfig(url=postgres_audit_url), Metrics()) for _ in range(2)]
    for log in logs:
        await log.open()
    try:

        async def writer(log: AuditLog, n: int) -> None:
            for i in range(50):
                await log.write(*calls(3))
                log.append(calls(1)[0])
                if i % 10 == n:
                    await asyncio.sleep(0)

        await asyncio.gather(*(writer(log, n) for n, log in enumerate(logs)))
    finally:
        for log in logs:
            await log.close()
    records = read_records(postgres_audit_url)
    assert len(records) == 2 * 50 * 4
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    report = verify_file(postgres_audit_url)
    assert report.broken is None and report.records == len(records)


async def test_a_batch_of_1000_records_is_one_insert(postgres_audit_url: str) -> None:
    """The append-only trigger checks each row against MAX(seq) (an index lookup): a
    batch of the writer's largest size still commits in a fraction of write_timeout_s."""
    log = AuditLog(AuditConfig(url=postgres_audit_url), Metrics())
    await log.open()
    try:
        await log.write(*calls(10))
        started = time.perf_counter()
        await log.write(*calls(1000))
        took = time.perf_counter() - started
    finally:
        await log.close()
    print(f"1000 records in one batch: {took * 1000:.1f} ms")
    assert took < 1.0
    assert verify_file(postgres_audit_url).records == 1010


def _config_file(tmp_path: Path, audit_url: str) -> Path:
    path = tmp_path / "callgate.yaml"
    path.write_text(yaml.safe_dump({"audit": {"url": audit_url}}))
    return path


async def test_audit_verify_export_and_tail_read_a_postgresql_log(
    tmp_path: Path, postgres_audit_url: str
) -> None:
    log = AuditLog(AuditConfig(url=postgres_audit_url), Metrics())
    await log.open()
    await log.write(*calls(6))
    await log.close()
    records = read_records(postgres_audit_url)
    head = verify_file(postgres_audit_url).head
    config = _config_file(tmp_path, postgres_audit_url)
    runner = CliRunner()

    result = await asyncio.to_thread(
        runner.invoke, main, ["audit", "verify", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok 6 records, head {head}\n"

    result = await asyncio.to_thread(
        runner.invoke, main, ["audit", "export", "--config", str(config), "--agent", "agent-2"]
    )
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert {k: v for k, v in json.loads(line).items() if k not in ("prev_hash", "hash")} == records[
        1
    ]

    result = await asyncio.to_thread(
        runner.invoke,
        main,
        ["audit", "new", "--config", str(config), "--after", str(tmp_path / "x.db")],
    )
    assert result.exit_code == 2
    assert "audit.url is PostgreSQL" in result.stderr


async def test_audit_verify_names_a_record_changed_on_postgresql(
    tmp_path: Path, postgres_audit_url: str
) -> None:
    log = AuditLog(AuditConfig(url=postgres_audit_url), Metrics())
    await log.open()
    await log.write(*calls(6))
    await log.close()
    admin = await asyncpg.connect(
        postgres_audit_url.split("?")[0],
        server_settings={"search_path": _search_path(postgres_audit_url)},
    )
    try:
        with pytest.raises(asyncpg.RaiseError, match="append-only: UPDATE refused"):
            await admin.execute("UPDATE audit_log SET kind = 'x' WHERE seq = 2")
        # Someone owning the table can drop the trigger: verify still finds the change.
        await admin.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
        await admin.execute(
            "UPDATE audit_log SET record = replace(record, 'agent-3', 'mallory') WHERE seq = 3"
        )
    finally:
        await admin.close()
    config = _config_file(tmp_path, postgres_audit_url)
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["audit", "verify", "--config", str(config)]
    )
    assert result.exit_code == 1
    assert result.stdout.startswith("broken at record 3 (edited)")


async def test_postgresql_gone_stops_forwarding_and_the_gateway_recovers_by_itself(
    tmp_path: Path, postgres_audit_url: str, start_upstream: Any, start_gateway: Any
) -> None:
    forwarder = Forwarder(postgres_audit_url)
    await forwarder.open()
    proxied = forwarder.url(postgres_audit_url, "s3cret")
    url, reached = await start_path_recorder(start_upstream)
    config = with_audit(make_config(tmp_path, url), url=proxied, database_timeout_s=1)
    gw = await start_gateway(config=config)
    try:
        assert (await gw.get("/tools/echo/before", headers=auth())).status == 200
        await forwarder.close()
        for i in range(5):
            resp = await gw.get(f"/tools/echo/during/{i}", headers=auth())
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "audit_unavailable"
        ready = await gw.admin.get("/readyz")
        assert ready.status == 503
        assert "s3cret" not in await ready.text()
        assert "s3cret" not in repr(gw.services.config)
        assert reached == ["/before"]

        await forwarder.open()
        async with asyncio.timeout(5):
            while (await gw.admin.get("/readyz")).status != 200:
                await asyncio.sleep(0.05)
            attempt = 0
            while (await gw.get(f"/tools/echo/after/{attempt}", headers=auth())).status != 200:
                attempt += 1
                await asyncio.sleep(0.05)
        assert reached == ["/before", f"/after/{attempt}"]
    finally:
        await gw.close()
        if forwarder.is_open:
            await forwarder.close()
    records = read_records(postgres_audit_url)
    (failed,) = [r for r in records if r["kind"] == "audit_store_failed"]
    assert "s3cret" not in json.dumps(records)
    assert failed["error"]
    refused = [r for r in records if r.get("code") == "audit_unavailable"]
    assert len(refused) == 5
    assert verify_file(postgres_audit_url).broken is None


async def test_serve_refuses_a_postgresql_audit_log_behind_the_code(tmp_path: Path) -> None:
    from tests.support.servers import require_postgres, unique_name

    server = require_postgres()
    schema = unique_name("empty")
    admin = await asyncpg.connect(server)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        url = f"{server}?options=-csearch_path%3D{schema}"
        config = make_config(tmp_path)
        path = tmp_path / "callgate.yaml"
        tree = {
            "policy": {"path": str(config.policy.path)},
            "agents": [{"id": "bot", "token_sha256": "0" * 64, "roles": []}],
            "audit": {"url": url},
        }
        path.write_text(yaml.safe_dump(tree))
        result = await asyncio.to_thread(CliRunner().invoke, main, ["serve", "--config", str(path)])
        assert result.exit_code == 2
        assert "audit database" in result.stderr
        assert "run `callgate db upgrade`" in result.stderr
        # Not upgraded by serve: the fleet's database is upgraded by `callgate db upgrade`.
        tables = await admin.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        assert tables == []
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def test_audit_tail_follows_a_postgresql_log(tmp_path: Path, postgres_audit_url: str) -> None:
    log = AuditLog(AuditConfig(url=postgres_audit_url), Metrics())
    await log.open()
    try:
        await log.write(*calls(4))
        config = _config_file(tmp_path, postgres_audit_url)
        callgate = str(Path(sys.executable).with_name("callgate"))
        proc = await asyncio.create_subprocess_exec(
            *(callgate, "audit", "tail", "--config", str(config), "-n", "2"),
            *("--interval", "0.05"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(10):
                shown = [json.loads(await proc.stdout.readline()) for _ in range(2)]
                assert [r["seq"] for r in shown] == [3, 4]
                await log.write(*calls(3))
                later = [json.loads(await proc.stdout.readline()) for _ in range(3)]
                assert [r["seq"] for r in later] == [5, 6, 7]
                assert later[0]["prev_hash"] == shown[-1]["hash"]
                proc.send_signal(signal.SIGINT)
                assert await proc.wait() == 0
                assert await proc.stderr.read() == b""
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await log.close()


async def test_serve_refuses_a_postgresql_audit_log_it_cannot_reach(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    path = tmp_path / "callgate.yaml"
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "gateway.rego").write_text("package gateway\n")
    tree = {
        "policy": {"path": "policies"},
        "audit": {"url": f"postgresql://gate:s3cret@127.0.0.1:{port}/audit"},
    }
    path.write_text(yaml.safe_dump(tree))
    result = await asyncio.to_thread(CliRunner().invoke, main, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"audit database postgresql://gate:***@127.0.0.1:{port}/audit: cannot be read: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert "s3cret" not in result.output
