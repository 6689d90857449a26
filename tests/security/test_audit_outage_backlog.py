"""Issue 14, finding 8: the records waiting out an audit outage are bounded in bytes as well
as in count (the oldest are lost, counted, and the loss recorded once the store is back),
and the gateway is back as soon as its store takes writes again (see docs/security.md).

"Disk full" is SQLite's own: `PRAGMA max_page_count` on the gateway's audit connection
makes every commit that needs a new page fail with SQLITE_FULL ("database or disk is
full"), the error a full disk gives, without root or a small filesystem.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.audit import read_records, verify_file, wait_for_records, with_audit
from tests.support.gateway import auth, make_config, start_path_recorder

# What a hostile agent sends with each call: well within the listener's header bounds,
# several times one record's budget for them.
BIG_HEADERS = {f"X-Pad-{i}": "a" * 8000 for i in range(7)}
BIG_BODY = b"b" * 500_000
NO_LIMIT = 1_073_741_823  # SQLite's default max_page_count


async def set_max_pages(gw: Any, pages: int | None) -> None:
    """The audit file may not grow past `pages` (None: its size now) on the gateway's own
    connection: SQLite's max_page_count is a setting of the connection, not of the file."""
    db = gw.services.audit._backend._db
    if pages is None:
        async with db.execute("PRAGMA page_count") as cursor:
            row = await cursor.fetchone()
        pages = row[0]
    await db.execute(f"PRAGMA max_page_count={pages}")


async def storm(gw: Any, seconds: float, clients: int = 10) -> dict[int, int]:
    """Calls with big headers from `clients` agents for `seconds`: status -> count."""
    statuses: dict[int, int] = {}
    base = str(gw.make_url("")).rstrip("/")
    deadline = asyncio.get_running_loop().time() + seconds

    async def client(n: int) -> None:
        async with aiohttp.ClientSession() as session:
            i = 0
            while asyncio.get_running_loop().time() < deadline:
                i += 1
                url = f"{base}/tools/echo/storm/{n}/{i}"
                async with session.post(
                    url, headers={**auth(), **BIG_HEADERS}, data=BIG_BODY
                ) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

    await asyncio.gather(*(client(n) for n in range(clients)))
    return statuses


async def metric(gw: Any, name: str) -> float:
    text = await (await gw.admin.get("/metrics")).text()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_disk_full_then_a_storm_then_space_the_gateway_is_back_within_2_s(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    url, reached = await start_path_recorder(start_upstream)
    # Bodies kept in the records, as an operator may: each refusal record could hold its
    # whole body, the way each held its headers in the report.
    config = with_audit(make_config(tmp_path, url), limits=False, record_bodies=True)
    gw = await start_gateway(config=config)
    assert (await gw.get("/tools/echo/before", headers=auth())).status == 200
    await set_max_pages(gw, None)
    statuses = await storm(gw, 2.0)
    assert set(statuses) == {503}, statuses
    assert (await gw.admin.get("/readyz")).status == 503
    assert reached == ["/before"]

    await set_max_pages(gw, NO_LIMIT)
    async with asyncio.timeout(2):
        while (await gw.admin.get("/readyz")).status != 200:
            await asyncio.sleep(0.02)
        attempt = 0
        while (await gw.get(f"/tools/echo/after/{attempt}", headers=auth())).status != 200:
            attempt += 1
            await asyncio.sleep(0.02)
    assert reached == ["/before", f"/after/{attempt}"]
    records = read_records(gw.services.audit.path)
    assert "audit_store_failed" in [r["kind"] for r in records]
    assert verify_file(gw.services.audit.path).broken is None


async def test_the_outage_backlog_is_bounded_in_bytes_and_its_loss_is_recorded(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    url, _ = await start_path_recorder(start_upstream)
    bound = 1_048_576
    config = with_audit(make_config(tmp_path, url), limits=False, max_queued_bytes=bound)
    gw = await start_gateway(config=config)
    assert (await gw.get("/tools/echo/before", headers=auth())).status == 200
    # Its outcome is committed: only the storm's records can be lost.
    await wait_for_records(gw.services.audit.path, lambda rs: rs[-1]["kind"] == "outcome")
    await set_max_pages(gw, None)
    statuses = await storm(gw, 1.0, clients=5)
    calls = statuses[503]
    assert calls > 100, statuses  # more refusal records than the bound holds
    lost = await metric(gw, "callgate_audit_records_lost_total")
    assert lost > 0
    assert 0 < await metric(gw, "callgate_audit_queued_bytes") <= bound

    await set_max_pages(gw, NO_LIMIT)
    async with asyncio.timeout(5):
        while (await gw.admin.get("/readyz")).status != 200:
            await asyncio.sleep(0.02)
    assert (await gw.get("/tools/echo/after", headers=auth())).status == 200
    async with asyncio.timeout(5):
        while await metric(gw, "callgate_audit_queued_bytes"):
            await asyncio.sleep(0.02)
    records = read_records(gw.services.audit.path)
    (loss,) = [r for r in records if r["kind"] == "audit_records_lost"]
    assert loss["count"] == lost == await metric(gw, "callgate_audit_records_lost_total")
    assert loss["kinds"] == {"decision": lost}
    kept = [r for r in records if r["kind"] == "decision" and r.get("code") == "audit_unavailable"]
    assert len(kept) + lost == calls
    # The oldest were lost: the refusals kept are the latest ones.
    assert min(r["time"] for r in kept) >= loss["last_time"]
    assert verify_file(gw.services.audit.path).broken is None
