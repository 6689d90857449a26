"""The store on PostgreSQL gone and back (docs/errors.md, `store_unavailable`; docs/
deployment.md, "Running many replicas"): what needs the store is refused with 503
`store_unavailable` and nothing of it is forwarded, calls that need no store go on, and the
gateway serves again by itself when the server is back.

The outage is a TCP forwarder between the gateway and the test PostgreSQL (the shared server
must stay up for the other tests): closing it cuts the pooled connections and refuses new
ones, as a stopped server does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support.approvals import approval_config, approver_headers
from tests.support.gateway import STORE, auth, start_path_recorder
from tests.support.servers import Forwarder


async def _refused(resp: Any) -> None:
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert (error["code"], error["retryable"]) == ("store_unavailable", True)
    assert resp.headers["Retry-After"] == "1"
    assert "s3cret" not in error["message"]


async def test_postgresql_gone_refuses_what_needs_the_store_and_recovers_by_itself(
    tmp_path: Path, postgres_store_url: str, start_upstream: Any, start_gateway: Any
) -> None:
    forwarder = Forwarder(postgres_store_url)
    await forwarder.open()
    STORE["url"] = forwarder.url(postgres_store_url, "s3cret")
    url, reached = await start_path_recorder(start_upstream)
    gw = await start_gateway(config=approval_config(tmp_path, url))

    def keyed(key: str) -> dict[str, str]:
        return {**auth(), "Idempotency-Key": key}

    try:
        assert (await gw.get("/tools/echo/before", headers=keyed("k0"))).status == 200
        await forwarder.close()

        await _refused(await gw.get("/tools/echo/keyed", headers=keyed("k1")))
        await _refused(await gw.post("/tools/echo/refunds", headers=auth(), json={"eur": 5}))
        await _refused(await gw.admin.get("/api/v1/actions", headers=approver_headers("alice")))
        # A call that keeps nothing in the store goes on: the switches in force stay known.
        assert (await gw.get("/tools/echo/plain", headers=auth())).status == 200
        assert reached == ["/before", "/plain"]

        await forwarder.open()
        async with asyncio.timeout(5):  # the next call tries the database again
            attempt = 0
            while (await gw.get("/tools/echo/after", headers=keyed(f"a{attempt}"))).status != 200:
                attempt += 1
                await asyncio.sleep(0.05)
        parked = await gw.post("/tools/echo/refunds", headers=auth(), json={"eur": 5})
        assert parked.status == 202
        assert reached == ["/before", "/plain", "/after"]
    finally:
        await gw.close()
        await gw.admin.close()
        if forwarder.is_open:
            await forwarder.close()
