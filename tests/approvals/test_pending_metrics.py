"""The pending actions on `/metrics`, read from the store at each scrape: how many wait,
the oldest one's age and how many have waited past half their TTL, by tool
(docs/operations.md, "Monitoring")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from gateway.approvals import backlog
from tests.approvals.test_flow import park, start, verdict
from tests.support.approvals import Tool
from tests.test_observability import sample

pytestmark = pytest.mark.usefixtures("store_url")

TTL_S = 600


async def scrape(gw: Any) -> str:
    resp = await gw.admin.get("/metrics")
    assert resp.status == 200
    return str(await resp.text())


async def test_pending_actions_are_counted_until_decided(tmp_path, start_upstream, start_gateway):
    gw = await start(start_upstream, start_gateway, tmp_path, Tool(), default_ttl_s=TTL_S)
    text = await scrape(gw)
    # Every configured tool has its samples, at 0, before anything waits.
    assert f'{backlog.PENDING}{{tool="echo"}} 0.0' in text
    assert f'{backlog.OLDEST}{{tool="echo"}} 0.0' in text
    assert f'{backlog.PAST_HALF_TTL}{{tool="echo"}} 0.0' in text
    first, second = await park(gw), await park(gw)
    text = await scrape(gw)
    assert sample(text, backlog.PENDING, tool="echo") == 2
    assert 0 < sample(text, backlog.OLDEST, tool="echo") < TTL_S / 2
    assert sample(text, backlog.PAST_HALF_TTL, tool="echo") == 0
    assert (await verdict(gw, first["action_id"], "alice"))[0] == 200
    assert sample(await scrape(gw), backlog.PENDING, tool="echo") == 1
    assert (await verdict(gw, second["action_id"], "bob", "deny", "not this one"))[0] == 200
    text = await scrape(gw)
    assert sample(text, backlog.PENDING, tool="echo") == 0
    assert f'{backlog.OLDEST}{{tool="echo"}} 0.0' in text


async def test_an_action_counts_past_half_its_ttl_once_it_has_waited_that_long(
    tmp_path, start_upstream, start_gateway
):
    gw = await start(start_upstream, start_gateway, tmp_path, Tool(), default_ttl_s=TTL_S)
    parked = await park(gw)
    action = await gw.services.actions.get(parked["action_id"])
    created = datetime.fromisoformat(action.document["created_at"]).timestamp()

    def of(families: list[Any], name: str) -> float:
        (family,) = [f for f in families if f.name == name]
        (value,) = [s.value for s in family.samples if s.labels == {"tool": "echo"}]
        return float(value)

    before = await backlog.families(gw.services, created + TTL_S / 2 - 1)
    assert of(before, backlog.PAST_HALF_TTL) == 0
    assert of(before, backlog.OLDEST) == pytest.approx(TTL_S / 2 - 1)
    after = await backlog.families(gw.services, created + TTL_S / 2 + 1)
    assert of(after, backlog.PAST_HALF_TTL) == 1
    assert of(after, backlog.PENDING) == 1


async def test_metrics_still_answer_while_the_store_cannot_be_read(
    tmp_path, start_upstream, start_gateway, caplog
):
    gw = await start(start_upstream, start_gateway, tmp_path, Tool(), default_ttl_s=TTL_S)
    await park(gw)
    # The query fails as it would in an outage: a database error, not a closed store.
    await gw.services.actions.run(lambda db: db.exec_driver_sql("DROP TABLE actions"))
    text = await scrape(gw)
    assert "callgate_requests_total" in text
    assert backlog.PENDING not in text
    assert "pending actions left out of /metrics" in caplog.text
