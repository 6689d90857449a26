"""The pending actions as `/metrics` shows them (docs/operations.md, "Monitoring"): how
many wait, how long the oldest has waited, and how many have waited past half their TTL,
by tool.

They are read from the store at each scrape, not kept as gauges that parking and deciding
move: the store is what every process shares. An action parked by one gateway is approved
on another, expired by whichever sweeps first, or outlives the process that parked it, so
a gauge each process kept would count only the changes it happened to make. The read is
one indexed query over the pending rows' tool and times (`actions_state`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select

from gateway.errors import GatewayError
from gateway.services import Services
from gateway.store.schema import actions

log = logging.getLogger(__name__)

PENDING = "callgate_pending_actions"
OLDEST = "callgate_pending_actions_oldest_age_seconds"
PAST_HALF_TTL = "callgate_pending_actions_past_half_ttl"


def _seconds(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp()


async def families(svc: Services, now: float) -> list[GaugeMetricFamily]:
    """The three gauges at `now` (unix time), a sample for every configured tool (0 when
    none waits) and for any other tool a stored action names."""
    query = select(actions.c.tool, actions.c.created_at, actions.c.expires_at).where(
        actions.c.state == "pending"
    )
    rows = await svc.actions.run(lambda db: db.execute(query).all())
    waiting: dict[str, list[tuple[float, float]]] = {name: [] for name in svc.tools}
    for tool, created_at, expires_at in rows:
        waiting.setdefault(tool, []).append((_seconds(created_at), _seconds(expires_at)))
    pending = GaugeMetricFamily(PENDING, "Actions waiting for approvers, by tool", labels=["tool"])
    oldest = GaugeMetricFamily(
        OLDEST,
        "How long the oldest pending action of the tool has waited (0 when none waits)",
        labels=["tool"],
    )
    past_half = GaugeMetricFamily(
        PAST_HALF_TTL,
        "Pending actions that have waited more than half their TTL, by tool",
        labels=["tool"],
    )
    for tool, times in sorted(waiting.items()):
        pending.add_metric([tool], len(times))
        oldest.add_metric([tool], max((now - created for created, _ in times), default=0.0))
        past_half.add_metric(
            [tool], sum(1 for created, expires in times if now - created > (expires - created) / 2)
        )
    return [pending, oldest, past_half]


class _Read(Collector):
    def __init__(self, read: Iterable[GaugeMetricFamily]) -> None:
        self._read = list(read)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._read)


async def exposition(svc: Services, now: float) -> bytes:
    """The gauges in Prometheus' text format, to follow the process's own metrics; nothing
    (and a warning) while the store cannot be read, so `/metrics` still answers."""
    try:
        read = await families(svc, now)
    except GatewayError as error:
        log.warning("pending actions left out of /metrics: %s", error.message)
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Read(read))
    return generate_latest(registry)
