"""Everything a call needs besides itself, built once per gateway and passed explicitly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from gateway.audit.events import event
from gateway.audit.log import AuditLog
from gateway.audit.shedding import Refusals
from gateway.concurrency import InFlight
from gateway.config import Config, Limits, Tool
from gateway.identity.sso import Sso
from gateway.identity.verifier import JwtVerifier
from gateway.limiter import Limiter, MemoryStuckSessions, StuckSessions
from gateway.observability.logs import AccessLog
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import Tracing
from gateway.openapi.specs import ToolSpecs
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.engine import PolicyEngine
from gateway.policy.errors import PolicyLoadError
from gateway.policy.reload import Policies
from gateway.principals import AgentDirectory
from gateway.store import migrate
from gateway.store.actions import ActionStore
from gateway.store.database import Store
from gateway.store.engine import sqlite_file
from gateway.store.idempotency import IdempotencyStore
from gateway.store.notices import Notices
from gateway.store.pins import Pin, PinStore
from gateway.store.waiters import Waiters
from gateway.switches.board import Switchboard
from gateway.switches.store import SwitchStore

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Store)


@dataclass
class Services:
    config: Config
    policies: Policies
    shadow: Policies | None
    metrics: Metrics
    agents: AgentDirectory
    tools: dict[str, Tool]
    approvers: AgentDirectory
    actions: ActionStore
    switchboard: Switchboard
    idempotency: IdempotencyStore
    audit: AuditLog | None = None  # None only with audit.enabled: false
    # Wake-ups from the other processes on a PostgreSQL store; None on SQLite.
    notices: Notices | None = None
    # Agents' JWTs (identity.jwt); None without a provider.
    identity: JwtVerifier | None = None
    # Approvers' single sign-on (approvers_sso); None without it.
    sso: Sso | None = None
    waiters: Waiters = field(default_factory=Waiters)
    limiter: Limiter = field(default_factory=Limiter)
    stuck: StuckSessions = field(default_factory=MemoryStuckSessions)
    # Background work: executions of approved actions (finished before closing) and
    # loops such as expiry (cancelled).
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    loops: set[asyncio.Task[Any]] = field(default_factory=set)
    access_log: AccessLog = field(default_factory=AccessLog)
    client: aiohttp.ClientSession | None = field(default=None)  # webhooks
    # One connection pool per tool, so a tool that hangs holds only its own connections.
    tool_clients: dict[str, aiohttp.ClientSession] = field(default_factory=dict)
    in_flight: InFlight = field(init=False)
    refusals: Refusals = field(init=False)
    # Traces over OTLP, from start() to close(); None without telemetry.otlp.
    tracing: Tracing | None = None
    # The OpenAPI documents of the tools with `openapi`, loaded by start().
    specs: ToolSpecs = field(default_factory=lambda: ToolSpecs(()))
    # Pinned MCP tool definitions (gateway/mcp/pins.py): the store, each tool's pins as
    # last read (when, by name), and the names held against a config pin (seen digest).
    pins: PinStore | None = None
    pin_cache: dict[str, tuple[float, dict[str, Pin]]] = field(default_factory=dict)
    pin_held: dict[tuple[str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.in_flight = InFlight(self.metrics.calls_in_flight)
        self.refusals = Refusals(self.config.protection.refusals)

    @classmethod
    def from_config(cls, config: Config) -> Services:
        """Build the services; the policies are loaded by `start()`."""
        metrics = Metrics()
        policies = Policies(config.policy.path, make_engine(config), metrics)
        shadow = None
        if config.policy.shadow is not None:
            shadow = Policies(
                config.policy.shadow,
                EmbeddedEngine(config.policy.decision_rule),
                metrics,
                role="shadow",
            )
        audit = None
        if config.audit.enabled:
            audit = AuditLog(config.audit, metrics)
        limiter, stuck = open_limits(config.limits)
        notices = open_notices(config)
        identity = None
        if config.identity.jwt:
            reserved = {p.id for p in (*config.agents, *config.approvers)}
            identity = JwtVerifier(config.identity.jwt, reserved)
        sso = None
        if config.approvers_sso is not None:
            sso = Sso(config.approvers_sso, {p.id for p in config.approvers})
        access_tokens = sso if sso is not None and sso.config.audience is not None else None
        return cls(
            config=config,
            policies=policies,
            shadow=shadow,
            metrics=metrics,
            agents=AgentDirectory(config.agents, identity),
            tools={tool.name: tool for tool in config.tools},
            approvers=AgentDirectory(config.approvers, access_tokens),
            actions=open_store(ActionStore, config),
            switchboard=Switchboard(open_store(SwitchStore, config), notices),
            idempotency=open_store(IdempotencyStore, config),
            pins=open_store(PinStore, config),
            audit=audit,
            notices=notices,
            identity=identity,
            sso=sso,
            waiters=Waiters(notices),
            limiter=limiter,
            stuck=stuck,
            specs=ToolSpecs(config.tools),
        )

    def spawn(self, work: Coroutine[Any, Any, Any], *, loop: bool = False) -> asyncio.Task[Any]:
        """Run `work` in the background. Closing waits for it (as long as the slowest
        tool's timeout), unless `loop`: loops and best-effort work are cancelled."""
        task = asyncio.get_running_loop().create_task(work)
        held = self.loops if loop else self.tasks
        held.add(task)
        task.add_done_callback(held.discard)
        return task

    async def start(self) -> None:
        """Load the tools' OpenAPI documents (refusing to start on SpecError), upgrade the
        SQLite files and check a PostgreSQL store (refusing to start on SchemaError), open
        the audit log (its start-up records first; SchemaError for one on PostgreSQL behind
        the code), load the policies (refusing to start on PolicyLoadError), then the
        stores and the upstream client."""
        await self.specs.load()
        await self.upgrade_files()
        await self.check_shared()
        if self.audit is not None:
            await self.audit.open()
            self.policies.record = self.audit.append
            if self.shadow is not None:
                self.shadow.record = self.audit.append
            self.audit.append(
                event(
                    "gateway_started",
                    version=_version(),
                    agents=[agent.id for agent in self.config.agents],
                    tools=[tool.name for tool in self.config.tools],
                    audit={
                        "synchronous": self.config.audit.synchronous,
                        "record_bodies": self.config.audit.record_bodies,
                    },
                )
            )
        try:
            await self.policies.reload("start", "gateway")
        except PolicyLoadError:
            await self.policies.engine.close()
            if self.audit is not None:
                await self.audit.close()
            raise
        if self.shadow is not None:
            await self.shadow.try_reload("start", "gateway")  # never stops the gateway
        for policies in (self.policies, self.shadow):
            if policies is not None and self.config.policy.watch:
                self.spawn(policies.watch_forever(), loop=True)
        if self.config.policy.watch:
            self.spawn(self.watch_specs_forever(), loop=True)
        await self.actions.open()
        await self.switchboard.store.open()
        await self.idempotency.open()
        if self.pins is not None:
            await self.pins.open()
        await self.switchboard.refresh()
        if self.notices is not None:
            self.notices.start()
        self.spawn(self.switchboard.refresh_forever(), loop=True)
        await self.start_identity()
        self.start_client()
        otlp = self.config.telemetry.otlp
        if otlp is not None:  # no tracer provider at all without one
            self.tracing = Tracing(otlp, _version())

    async def start_identity(self) -> None:
        """Fetch every JWT issuer's keys (the approvers' provider's too) once, together; an
        issuer that fails is logged and tried again in the background (/readyz says not
        ready meanwhile), never stopping the start."""
        issuers = list(self.identity.issuers.values()) if self.identity is not None else []
        for keys in issuers:
            await keys.open()
        if self.sso is not None:
            await self.sso.open()
            issuers.append(self.sso.keys)
        await asyncio.gather(*(keys.load() for keys in issuers))
        for keys in issuers:
            self.spawn(keys.keep_fresh(), loop=True)

    async def upgrade_files(self) -> None:
        """The SQLite files are this process's own: it brings them to the code's schema
        (docs/operations.md, "Database upgrades"); one newer than the code is refused. A
        store or audit log on PostgreSQL is only checked (an audit log when it opens)."""
        databases = [(self.config.storage.url, migrate.STORE)]
        if self.audit is not None:
            databases.insert(0, (self.audit.url, migrate.AUDIT))
        for url, database in databases:
            if sqlite_file(url) is None:
                continue
            before, after = await migrate.upgrade(url, database)
            if before.revision != after.revision:
                log.info(
                    "database upgraded",
                    extra={"database": after.url, "from": before.revision, "to": after.revision},
                )

    async def check_shared(self) -> None:
        """A PostgreSQL store is shared with other processes, so it is only checked: one
        behind or ahead of the code is refused, naming `callgate db upgrade`."""
        if sqlite_file(self.config.storage.url) is None:
            await migrate.check(self.config.storage.url, migrate.STORE)

    @property
    def http(self) -> aiohttp.ClientSession:
        """The client for anything but tools (webhooks)."""
        if self.client is None:
            raise RuntimeError("the upstream client session is not started")
        return self.client

    def client_for(self, tool: str) -> aiohttp.ClientSession:
        """The client, with its own connection pool, of the tool named `tool`."""
        try:
            return self.tool_clients[tool]
        except KeyError:
            raise RuntimeError(f"no upstream client session for tool '{tool}'") from None

    def start_client(self) -> None:
        self.client = _client_session(1024)
        self.tool_clients = {
            # Executions of approved actions take no slot of the tool's (admit), so the
            # pool has a few connections beyond max_concurrent for them.
            tool.name: _client_session(tool.max_concurrent + EXECUTION_HEADROOM)
            for tool in self.config.tools
        }

    async def close(self) -> None:
        for task in list(self.loops):
            task.cancel()
        if self.tasks:
            longest = max((tool.timeout_s for tool in self.config.tools), default=10)
            _done, late = await asyncio.wait(list(self.tasks), timeout=longest + 5)
            for task in late:
                task.cancel()
        await asyncio.gather(*self.loops, *self.tasks, return_exceptions=True)
        if self.notices is not None:  # after the executions, whose ends others may await
            await self.notices.close()
        await self.actions.close()
        await self.switchboard.store.close()
        await self.idempotency.close()
        if self.pins is not None:
            await self.pins.close()
        await self.limiter.close()
        if self.identity is not None:
            for keys in self.identity.issuers.values():
                await keys.close()
        if self.sso is not None:
            await self.sso.close()
        if self.client is not None:
            await self.client.close()
            self.client = None
        for client in self.tool_clients.values():
            await client.close()
        self.tool_clients = {}
        if self.audit is not None:
            self.record_refusals_shed(self.refusals.due(all_of_them=True))
            self.audit.append(event("gateway_stopped"))
            await self.audit.close()
        await self.policies.engine.close()
        if self.shadow is not None:
            await self.shadow.engine.close()
        if self.tracing is not None:  # the last spans, those of calls answered while closing
            await self.tracing.close()
            self.tracing = None

    async def reload_specs(self, trigger: str, by: str) -> list[str]:
        """Read the tools' OpenAPI documents again (with a policy reload); a document that
        no longer loads is logged, counted and audited, and its last good one serves on.
        Returns its problems."""
        changed, problems = await self.specs.reload()
        result = "failed" if problems else "loaded" if changed else "unchanged"
        self.metrics.openapi_reloads.labels(result).inc()
        if changed:
            log.info("openapi documents loaded", extra={"tools": changed, "trigger": trigger})
        if problems:
            log.error(
                "openapi documents refused; the last good ones serve on",
                extra={"problems": problems, "trigger": trigger, "by": by},
            )
        if self.audit is not None and (changed or problems):
            kind = "openapi_load_failed" if problems else "openapi_loaded"
            self.audit.append(event(kind, tools=changed, problems=problems, trigger=trigger, by=by))
        return problems

    async def watch_specs_forever(self) -> None:
        """Reload the tools' OpenAPI documents when one of their files changes."""
        async for _change in self.specs.changes():
            await self.reload_specs("watch", "file change")

    def record_refusals_shed(self, summaries: list[dict[str, Any]]) -> None:
        if self.audit is not None:
            for summary in summaries:
                self.audit.append(summary)

    async def record_refusals_shed_forever(self) -> None:
        """Summaries of the windows that ended, even when no refusal comes after them."""
        while True:
            await asyncio.sleep(min(self.config.protection.refusals.window_s, 60))
            self.record_refusals_shed(self.refusals.due())


EXECUTION_HEADROOM = 16


def _client_session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
        # Bytes pass through as the upstream sent them (Content-Encoding included),
        # and no header the agent did not send is invented.
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def make_engine(config: Config) -> PolicyEngine:
    policy = config.policy
    if policy.engine == "opa":
        from gateway.policy.opa import OpaEngine

        return OpaEngine(
            policy.opa_url, policy.decision, timeout_s=policy.opa_timeout_s, push=policy.opa_push
        )
    return EmbeddedEngine(policy.decision_rule)


def open_store(kind: type[S], config: Config) -> S:
    """One of the three stores, on the database of `storage.url` (not yet connected)."""
    storage = config.storage
    return kind(
        storage.url,
        storage.synchronous,
        pool_size=storage.pool_size,
        connect_timeout_s=storage.connect_timeout_s,
    )


def open_notices(config: Config) -> Notices | None:
    """The wake-ups between the processes sharing a PostgreSQL store; none on SQLite, whose
    file is this process's own."""
    storage = config.storage
    if sqlite_file(storage.url) is not None:
        return None
    return Notices(storage.url, storage.connect_timeout_s, storage.listening_poll_s)


def open_limits(limits: Limits) -> tuple[Limiter, StuckSessions]:
    """Where calls are counted: in this process, or on Redis for every process sharing it."""
    if limits.redis_url is None:
        return Limiter(), MemoryStuckSessions()
    from gateway.redis_limits import open_redis_limits

    return open_redis_limits(limits)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("callgate")
    except PackageNotFoundError:
        return "unknown"


SERVICES = web.AppKey("services", Services)
