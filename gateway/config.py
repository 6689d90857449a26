"""callgate.yaml as frozen pydantic models (docs/configuration.md, the configuration reference).

`load_config(path)` reads the file, replaces `${NAME}` with environment variables, and
validates everything at once: every problem is reported as `path.to.key: what is wrong`.
Secrets (tool credentials) are `SecretStr`, so repr and logs show asterisks. Relative
paths are taken relative to the config file's folder, so a config means the same thing
whatever the working directory.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Port = Annotated[int, Field(ge=0, le=65535)]


class ConfigError(Exception):
    """The config is unusable; `problems` holds one `path: message` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listener(_Model):
    host: str = "127.0.0.1"
    port: Port = 8080


class AdminListener(Listener):
    port: Port = 8081


SQLITE_PREFIX = "sqlite:///"
POSTGRESQL_PREFIX = "postgresql://"


def sqlite_path(url: str) -> Path:
    """`sqlite:///./x.db` -> `./x.db`; `sqlite:////abs/x.db` -> `/abs/x.db`."""
    if not url.startswith(SQLITE_PREFIX):
        raise ValueError(f"not a SQLite file URL: {url.split('@')[-1]}")
    return Path(url.removeprefix(SQLITE_PREFIX))


def _database_url(url: str) -> str:
    if url.startswith(POSTGRESQL_PREFIX) and url != POSTGRESQL_PREFIX:
        return url
    if not url.startswith(SQLITE_PREFIX) or url == SQLITE_PREFIX:
        raise ValueError("must be sqlite:///<path of a file> or postgresql://<host>/<database>")
    return url


def hide_password(url: str) -> str:
    """`url` with `***` for the password it may hold, to be printed."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{netloc[2]}").geturl()


def _resolved_url(url: str, base_dir: Path) -> str:
    """A SQLite file's path resolved against `base_dir`; a PostgreSQL URL as it is."""
    if url.startswith(POSTGRESQL_PREFIX):
        return url
    return SQLITE_PREFIX + str(_resolve(sqlite_path(url), base_dir))


class Storage(_Model):
    """The store of pending actions, idempotency keys and kill switches: a SQLite file, or
    PostgreSQL shared by every gateway process (docs/deployment.md). A PostgreSQL URL may
    hold a password, so the URL is left out of repr and of validation errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(default="sqlite:///./callgate-data/callgate.db", repr=False)
    # FULL: a claimed execution survives a power loss, so it is never sent twice; the store
    # sees only parked calls and their transitions, so the fsyncs are cheap.
    synchronous: Literal["NORMAL", "FULL"] = "FULL"
    # PostgreSQL only (a SQLite file has one connection): connections per store (actions,
    # idempotency keys, switches), and how long connecting, or waiting for a free
    # connection, may take before the call fails.
    pool_size: Annotated[int, Field(ge=1, le=100)] = 5
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    # PostgreSQL only: while this process hears the others' notices (gateway/store/
    # notices.py), held calls, duplicates and the switchboard still re-read the store this
    # often, in case a notice was lost; without them, every 0.5, 0.1 and 1 s.
    listening_poll_s: Annotated[float, Field(ge=1, le=300)] = 2.0

    @field_validator("url")
    @classmethod
    def _database(cls, url: str) -> str:
        return _database_url(url)

    @property
    def path(self) -> Path:
        return sqlite_path(self.url)


class AuditConfig(_Model):
    """The hash-chained audit log (docs/operations.md, "Audit log"), in its own SQLite file so that
    it can be archived and restarted without touching the rest of the store, or in a
    PostgreSQL database that every gateway of a fleet writes as one chain."""

    # Off only for measurements and experiments: a gateway without it acts unrecorded.
    enabled: bool = True
    url: str = "sqlite:///./callgate-data/audit.db"
    # NORMAL survives a crash of the process; FULL also survives a power loss.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # Request bodies are kept as a SHA-256 only, unless this is on.
    record_bodies: bool = False
    # Records waiting for a store that cannot be written; beyond either bound the oldest
    # are lost (and counted). Bytes as the records' JSON: a count alone lets large
    # records take the process's memory.
    max_queued: Annotated[int, Field(ge=100)] = 100_000
    max_queued_bytes: Annotated[int, Field(ge=1_048_576)] = 64 * 1024 * 1024
    # What one record keeps of an agent's headers, target and body; the overflow is kept
    # as its SHA-256 and size, marked truncated, so one agent cannot fill the disk.
    max_record_bytes: Annotated[int, Field(ge=1024)] = 16_384
    # The longest a call waits for its intent to be durable; then 503 audit_unavailable,
    # and the call is never forwarded later.
    write_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # PostgreSQL: the longest a connection or one statement of a batch (the wait for the
    # other writers' batches included) may take before the batch counts as failed.
    database_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0

    @field_validator("url")
    @classmethod
    def _database(cls, url: str) -> str:
        return _database_url(url)

    @property
    def path(self) -> Path:
        return sqlite_path(self.url)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, hide_password(value) if name == "url" else value


def _is_absolute_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _absolute_http(url: str) -> str:
    """`url` when it is an absolute http:// or https:// URL; else the config's error."""
    if not _is_absolute_http(url):
        raise ValueError("must be an absolute http:// or https:// URL")
    return url


class Webhook(_Model):
    """Where new pending actions are announced (a Slack incoming webhook, a ticket system)."""

    url: str
    # generic: callgate's signed JSON summary; slack: a Slack incoming-webhook message.
    format: Literal["generic", "slack"] = "generic"
    # Key of the HMAC-SHA256 signature in X-Callgate-Signature; use ${ENV}. Required for
    # the generic format; a Slack message is signed only when one is given.
    secret: SecretStr | None = None
    # The request body is left out of the summary unless this is on (generic format).
    include_body: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _absolute_http(url)

    @model_validator(mode="after")
    def _generic_is_signed(self) -> Webhook:
        if self.format == "generic" and self.secret is None:
            raise ValueError("a generic webhook needs a secret to sign its deliveries")
        return self


class ApprovalsConfig(_Model):
    """The pending-actions queue (docs/approvals.md)."""

    # How long an action waits for approvers when the decision gives no `approval.ttl_s`.
    default_ttl_s: Annotated[float, Field(gt=0)] = 3600
    # The longest `Prefer: wait=N` honoured: below common client timeouts (60 s).
    max_wait_s: Annotated[float, Field(ge=0, le=3600)] = 55
    # The upstream's answer to an executed action is kept up to this size.
    max_result_bytes: Annotated[int, Field(ge=0)] = 10 * 1024 * 1024
    # How long an executing action's gateway holds it without renewing (it renews three
    # times per lease); after a crash the action becomes outcome_unknown once it runs out.
    execution_lease_s: Annotated[float, Field(gt=0, le=3600)] = 30
    # The admin listener's address as approvers reach it (https://approvals.example.com):
    # webhook messages link to an action's page under it.
    public_url: str | None = None
    webhooks: tuple[Webhook, ...] = ()

    @field_validator("public_url")
    @classmethod
    def _public_http_url(cls, url: str | None) -> str | None:
        return None if url is None else _absolute_http(url).rstrip("/")

    @model_validator(mode="after")
    def _slack_links_somewhere(self) -> ApprovalsConfig:
        if self.public_url is None and any(hook.format == "slack" for hook in self.webhooks):
            raise ValueError("a slack webhook links to the action's page: set approvals.public_url")
        return self


class IdempotencyConfig(_Model):
    """Idempotency-Key (IETF httpapi draft): replays of a call's final response."""

    ttl_s: Annotated[float, Field(gt=0)] = 86_400
    # How long a duplicate waits for the first call still in flight (then 409).
    wait_s: Annotated[float, Field(ge=0, le=300)] = 10
    max_response_bytes: Annotated[int, Field(ge=0)] = 1_048_576


class RefusalLimit(_Model):
    """Refused calls (any 4xx, and tool_busy) per agent, or per client address while no
    agent is known: past `limit` in `window_s`, they are counted in one summary record
    instead of one each (docs/limits.md, Refusals)."""

    limit: Annotated[int, Field(ge=1)] = 100
    window_s: Annotated[float, Field(gt=0)] = 10


class Protection(_Model):
    """What keeps one agent (or one slow tool) from taking the gateway from everyone."""

    # Calls of one agent in the gateway at once, all tools together; then 503 tool_busy.
    max_concurrent_per_agent: Annotated[int, Field(ge=1)] = 128
    # Nesting of any JSON the gateway parses (bodies, JSON-RPC, tool lists); deeper: 400.
    # At most 512: Python's parser recurses and gives out near 950 levels inside a handler.
    max_json_depth: Annotated[int, Field(ge=2, le=512)] = 64
    # Agent listener: time to send a request's headers; idle time of a kept-alive
    # connection between requests.
    header_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10
    keepalive_timeout_s: Annotated[float, Field(ge=0, le=3600)] = 15
    # Agent listener: all request header lines together, and how many there may be.
    max_header_bytes: Annotated[int, Field(ge=4096, le=1_048_576)] = 65_536
    max_headers: Annotated[int, Field(ge=16, le=1000)] = 100
    refusals: RefusalLimit = RefusalLimit()


class PolicyConfig(_Model):
    engine: Literal["embedded", "opa"] = "embedded"
    path: Path = Path("./policies")
    decision: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)+$")
    ] = "gateway/decision"
    opa_url: str = "http://127.0.0.1:8181"
    opa_timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.5  # per decision
    opa_push: bool = True  # push `path` to OPA; false: use the bundles OPA loads itself
    watch: bool = True  # reload when a file under `path` changes (also SIGHUP and the API)
    # A second policy folder evaluated (embedded) on every call and never enforced; its
    # disagreements with the enforced decision are counted and audited.
    shadow: Path | None = None

    @field_validator("opa_url")
    @classmethod
    def _opa_address(cls, url: str) -> str:
        if not re.fullmatch(r"https?://[^/?#@]+/?", url):
            raise ValueError("must be http://host:port or https://host:port (no path)")
        return url.rstrip("/")

    @property
    def decision_rule(self) -> str:
        """`gateway/decision` as the Rego reference `data.gateway.decision`."""
        return "data." + self.decision.replace("/", ".")


class Principal(_Model):
    """An agent or an approver: who it is, how it proves it, which roles it holds."""

    id: Name
    token_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    token_env: str | None = None
    roles: tuple[Name, ...] = ()

    @model_validator(mode="after")
    def _one_token_source(self) -> Principal:
        if (self.token_sha256 is None) == (self.token_env is None):
            raise ValueError("give exactly one of token_sha256 or token_env")
        return self

    @property
    def token_digest(self) -> bytes:
        """SHA-256 of the bearer token this principal presents.

        For `token_env`, parse_config stores the hash of the variable's value in
        `token_sha256` once it has read it, so the token itself is never kept.
        """
        if self.token_sha256 is None:
            raise ValueError(f"{self.id}: token_env {self.token_env} was not resolved")
        return bytes.fromhex(self.token_sha256)


# Asymmetric algorithms only: `none` and the HMAC ones (HS*) are refused by validation, so
# a token signed with a provider's public key as an HMAC secret can never verify.
JWT_ALGORITHMS = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)
ClaimPath = Annotated[str, StringConstraints(min_length=1, max_length=200)]


def _asymmetric(algorithms: tuple[str, ...]) -> tuple[str, ...]:
    for alg in algorithms:
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise ValueError(
                f"{alg} is never accepted: only signatures by the issuer's private key"
                f" count ({', '.join(JWT_ALGORITHMS)})"
            )
        if alg not in JWT_ALGORITHMS:
            raise ValueError(f"unknown algorithm {alg!r}: one of {', '.join(JWT_ALGORITHMS)}")
    return tuple(dict.fromkeys(algorithms))


class JwtProvider(_Model):
    """An issuer whose JWTs identify agents (docs/configuration.md, "Workload identity")."""

    issuer: Annotated[str, StringConstraints(min_length=1)]
    # Where its keys are: exactly one of these three.
    discovery: bool = False  # OpenID Connect discovery at <issuer>/.well-known/openid-configuration
    jwks_url: str | None = None
    jwks_file: Path | None = None
    # Fetching the keys: the CA bundle to trust (e.g. a cluster's ca.crt) and a file holding
    # a bearer token to send (read at every fetch, so a rotated token is picked up).
    ca_file: Path | None = None
    token_file: Path | None = None
    audiences: Annotated[
        tuple[Annotated[str, StringConstraints(min_length=1)], ...], Field(min_length=1)
    ]
    algorithms: Annotated[tuple[str, ...], Field(min_length=1)] = ("RS256", "ES256", "EdDSA")
    agent_id: ClaimPath = "sub"  # the claim (a dotted path) holding the agent's id
    # Put before every id from this issuer, to keep two issuers' subjects apart.
    agent_id_prefix: Annotated[str, StringConstraints(pattern=r"^[!-~]{0,64}$")] = ""
    roles: ClaimPath | None = None  # the claim (a dotted path) holding the agent's roles
    # claim path -> the value it must hold (or, for a list claim, contain)
    required_claims: dict[ClaimPath, str | int | bool] = {}
    leeway_s: Annotated[float, Field(ge=0, le=300)] = 30
    # How often the keys are fetched again (keys removed by the issuer stop working then).
    refresh_s: Annotated[float, Field(ge=10, le=86_400)] = 300

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, algorithms: tuple[str, ...]) -> tuple[str, ...]:
        return _asymmetric(algorithms)

    @field_validator("jwks_url")
    @classmethod
    def _jwks_http_url(cls, url: str | None) -> str | None:
        return None if url is None else _absolute_http(url)

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtProvider:
        sources = [self.discovery, self.jwks_url is not None, self.jwks_file is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of discovery: true, jwks_url or jwks_file")
        if self.discovery and not _is_absolute_http(self.issuer):
            raise ValueError("discovery needs an issuer that is an http:// or https:// URL")
        return self

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class IdentityConfig(_Model):
    """Ways other than a static token for an agent to say who it is."""

    jwt: tuple[JwtProvider, ...] = ()

    @field_validator("jwt")
    @classmethod
    def _issuers_apart(cls, providers: tuple[JwtProvider, ...]) -> tuple[JwtProvider, ...]:
        seen: set[str] = set()
        for provider in providers:
            if provider.issuer in seen:
                raise ValueError(f"issuer {provider.issuer!r} is configured twice")
            seen.add(provider.issuer)
        return providers


class ApproversSso(_Model):
    """Approvers signing in to /ui/ with the organisation's OpenID provider, and its access
    tokens on the admin API (docs/configuration.md, "Approvers' single sign-on")."""

    issuer: Annotated[str, StringConstraints(min_length=1)]  # discovery at <issuer>/.well-known/…
    client_id: Annotated[str, StringConstraints(min_length=1)]
    client_secret: Annotated[str, StringConstraints(min_length=1)]  # use ${ENV}
    # Where the provider sends the browser back: this listener's /ui/sso/callback as the
    # browser reaches it (registered at the provider as the client's redirect URI).
    redirect_url: str
    scopes: tuple[Annotated[str, StringConstraints(pattern=r"^[!#-\[\]-~]+$")], ...] = (
        "openid",
        "email",
        "profile",
    )
    # The ID token's (and access token's) claim naming the user's groups, a dotted path.
    groups_claim: ClaimPath = "groups"
    # group -> the approver roles its members hold; a user in none of them is refused.
    groups: Annotated[
        dict[Annotated[str, StringConstraints(min_length=1)], tuple[Name, ...]], Field(min_length=1)
    ]
    # The claim whose value names the approver in approvals and audit records.
    approver_id: ClaimPath = "email"
    # Signs the session and sign-in cookies (HMAC); at least 32 characters, use ${ENV}.
    session_secret: Annotated[str, StringConstraints(min_length=32)]
    session_idle_s: Annotated[float, Field(gt=0)] = 1800
    session_absolute_s: Annotated[float, Field(gt=0)] = 12 * 3600
    # The `aud` of the provider's access tokens accepted on the admin API; none: not accepted.
    audience: Annotated[str, StringConstraints(min_length=1)] | None = None
    algorithms: Annotated[tuple[str, ...], Field(min_length=1)] = ("RS256", "ES256", "EdDSA")
    leeway_s: Annotated[float, Field(ge=0, le=300)] = 30

    @field_validator("issuer", "redirect_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _absolute_http(url)

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in scopes:
            raise ValueError("must include openid")
        return scopes

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, algorithms: tuple[str, ...]) -> tuple[str, ...]:
        return _asymmetric(algorithms)

    @model_validator(mode="after")
    def _idle_within_absolute(self) -> ApproversSso:
        if self.session_idle_s > self.session_absolute_s:
            raise ValueError("session_idle_s must not exceed session_absolute_s")
        return self

    @property
    def provider(self) -> JwtProvider:
        """The issuer as the JWT verifier knows it: its ID tokens are for the client."""
        return JwtProvider(
            issuer=self.issuer,
            discovery=True,
            audiences=(self.client_id,),
            algorithms=self.algorithms,
            leeway_s=self.leeway_s,
        )


class LoopLimit(_Model):
    max_repeats: Annotated[int, Field(ge=1)] = 5
    window_s: Annotated[float, Field(gt=0)] = 60


class SessionBudget(_Model):
    max_calls: Annotated[int, Field(ge=1)] = 500
    window_s: Annotated[float, Field(gt=0)] = 3600


class Rate(_Model):
    limit: Annotated[int, Field(ge=1)]
    window_s: Annotated[float, Field(gt=0)] = 60


class ToolLimits(_Model):
    """The limits counted for a call; `tools[].limits` replaces the keys it sets, for its tool."""

    loop: LoopLimit | None = LoopLimit()
    session_budget: SessionBudget | None = SessionBudget()
    per_agent: Rate | None = None  # calls of one agent, to all tools
    per_tool: Rate | None = None  # calls to one tool, from all agents
    per_agent_tool: Rate | None = None  # calls of one agent to one tool
    # When the limiter itself fails: deny (429, retry shortly) or let calls through.
    on_error: Literal["deny", "allow"] = "deny"


REDIS_SCHEMES = ("redis", "rediss")


def redacted_url(url: str) -> str:
    """`url` with its user name and password left out, for logs and messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


class Limits(ToolLimits):
    """The default limits, and where they are counted (docs/limits.md, "Limits on Redis").

    `memory` counts in the gateway process: each process admits the whole of every limit,
    so memory limits are for one process only. A Redis URL counts across every gateway
    process on that Redis (with the same `key_prefix`). The URL may carry a password
    (`${ENV}`); it is a secret, shown as `redacted_url()` only."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    storage: SecretStr = SecretStr("memory")
    # Every Redis key of this gateway starts with it: gateways sharing one Redis count
    # together with the same prefix and apart with different ones.
    key_prefix: Annotated[str, StringConstraints(pattern=r"^[!-~]{1,64}$")] = "callgate:"
    pool_size: Annotated[int, Field(ge=1, le=1000)] = 10
    # Short, so that a Redis that does not answer refuses calls (or lets them through, per
    # on_error) at once instead of holding them.
    connect_timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.5
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.5

    @field_validator("storage")
    @classmethod
    def _memory_or_redis(cls, storage: SecretStr) -> SecretStr:
        # Messages never quote the URL: it may hold a password.
        url = storage.get_secret_value()
        if url == "memory":
            return storage
        try:
            parts = urlsplit(url)
            valid = parts.scheme in REDIS_SCHEMES and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port that is not a number
            valid = False
        if not valid:
            raise ValueError("must be memory or a redis:// or rediss:// URL with a host")
        return storage

    @property
    def redis_url(self) -> str | None:
        """The Redis URL (a secret), or None for memory limits."""
        url = self.storage.get_secret_value()
        return None if url == "memory" else url

    @property
    def where(self) -> str:
        """Where limits are counted, fit to print: `memory` or the URL without password."""
        url = self.redis_url
        return "memory" if url is None else redacted_url(url)

    def overridden_by(self, tool: ToolLimits | None) -> Limits:
        if tool is None:
            return self
        return self.model_copy(update={key: getattr(tool, key) for key in tool.model_fields_set})


class Credentials(_Model):
    header: Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
    value: SecretStr


# Shorter values are not scrubbed from answers: they would match ordinary text.
MIN_SECRET_CHARS = 8


class Tool(_Model):
    name: Name
    upstream: str
    credentials: Credentials | None = None
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10
    max_body_bytes: Annotated[int, Field(ge=0)] = 1_048_576
    kind: Literal["http", "mcp"] = "http"
    limits: ToolLimits | None = None
    # Hold calls that need approval this long even without `Prefer: wait` (for agents
    # that do not understand 202); capped by approvals.max_wait_s.
    approval_wait_s: Annotated[float, Field(ge=0, le=3600)] = 0
    # required: calls other than GET, HEAD and OPTIONS must carry an Idempotency-Key (428).
    idempotency: Literal["optional", "required"] = "optional"
    # The tool honours Idempotency-Key itself: the key is forwarded, and a retry after an
    # unknown outcome (a timeout) may reach it again. Otherwise the key is the gateway's.
    idempotency_upstream: bool = False
    # Calls to this tool in the gateway at once; then 503 tool_busy with Retry-After.
    max_concurrent: Annotated[int, Field(ge=1)] = 256
    # The longest one call may take, its answer streamed included (event streams that an
    # MCP server keeps open on GET are exempt); separate from timeout_s, the idle limit.
    deadline_s: Annotated[float, Field(gt=0)] = 300
    # set: the agent's Forwarded / X-Forwarded-* / X-Real-IP headers are replaced by the
    # gateway's own; strip: they are dropped and none are set.
    forwarded_headers: Literal["set", "strip"] = "set"
    # The tool's OpenAPI 3.0/3.1 document: a file (relative to this config) or an http(s)
    # URL, read at start and on reload (docs/typed-tools.md). Calls are resolved to its
    # operations before the policy; `validate` checks calls against it (enforce: refused
    # with 400 schema_violation; report: counted, logged and audited) and
    # `validate_responses` the tool's answers (enforce: 502 upstream_schema_violation).
    openapi: str | None = None
    validate_calls: Literal["enforce", "report", "off"] = Field("report", alias="validate")
    validate_responses: Literal["enforce", "report", "off"] = "off"

    @model_validator(mode="after")
    def _openapi_for_http(self) -> Tool:
        if self.openapi is not None and self.kind != "http":
            raise ValueError("openapi describes plain HTTP tools only, not kind: mcp")
        return self

    # The longest answer passed on (docs/answers-and-pins.md): a larger one is refused
    # before it starts (502 upstream_response_too_large) or cut.
    max_response_bytes: Annotated[int, Field(ge=1)] = 10 * 1024 * 1024
    # Regexes of secrets the tool may leak in its answers (API keys, card numbers), each
    # match replaced by `[redacted]`, as the tool's credentials are.
    redact_response: tuple[Annotated[str, StringConstraints(min_length=1)], ...] = ()
    # The longest text a `redact_response` pattern can match: how much of a streamed answer
    # is held back, so a secret split between two chunks is still caught.
    max_match_bytes: Annotated[int, Field(ge=1, le=65_536)] = 256
    # MCP tools: a digest of each tool definition is pinned when first seen (or given
    # here, name -> SHA-256 hex); a changed one is held for review (docs/answers-and-pins.md).
    mcp_pinning: Literal["enforce", "report", "off"] = "enforce"
    mcp_pins: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=256)],
        Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")],
    ] = {}
    # What came from `${ENV}` in this tool's config, and its credential: set by
    # parse_config, never by the file.
    _secrets: tuple[str, ...] = PrivateAttr(default=())

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values scrubbed from the tool's answers: its credential (and the token after
        its scheme, `Bearer <token>`) and every `${ENV}` value in its config, of at least
        MIN_SECRET_CHARS characters."""
        return self._secrets

    def with_secrets(self, env_values: list[str]) -> Tool:
        found = list(env_values)
        if self.credentials is not None:
            value = self.credentials.value.get_secret_value()
            found += [value, value.rpartition(" ")[2]]
        copy = self.model_copy()
        long_enough = (v for v in found if len(v) >= MIN_SECRET_CHARS)
        copy._secrets = tuple(dict.fromkeys(long_enough))
        return copy

    @field_validator("redact_response")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern.encode())
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
            if compiled.fullmatch(b""):
                raise ValueError(f"{pattern!r} matches empty text")
        return patterns

    @field_validator("upstream")
    @classmethod
    def _plain_base_url(cls, upstream: str) -> str:
        parts = urlsplit(_absolute_http(upstream))
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use credentials: {header, value}")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or fragment")
        return upstream.rstrip("/")


class Otlp(_Model):
    """Where traces go: an OTLP/HTTP (protobuf) traces endpoint (docs/operations.md,
    Tracing)."""

    endpoint: str  # the full URL, e.g. http://collector:4318/v1/traces
    # Sent with every export (an API key, say; use ${ENV}); secrets, never logged.
    headers: dict[str, SecretStr] = {}
    # The share of new traces kept; a call that comes with a traceparent follows its flag.
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    service_name: Annotated[str, StringConstraints(min_length=1)] = "callgate"

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _absolute_http(url)


class Telemetry(_Model):
    """Traces of calls; without `otlp` there are none, and no cost."""

    otlp: Otlp | None = None


class Config(_Model):
    listen: Listener = Listener()
    admin: AdminListener = AdminListener()
    storage: Storage = Storage()
    audit: AuditConfig = AuditConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    idempotency: IdempotencyConfig = IdempotencyConfig()
    policy: PolicyConfig = PolicyConfig()
    agents: tuple[Principal, ...] = ()
    approvers: tuple[Principal, ...] = ()
    identity: IdentityConfig = IdentityConfig()
    approvers_sso: ApproversSso | None = None
    limits: Limits = Limits()
    protection: Protection = Protection()
    tools: tuple[Tool, ...] = ()
    telemetry: Telemetry = Telemetry()


def _items(tree: dict[str, Any], section: str) -> list[tuple[int, dict[str, Any]]]:
    value = tree.get(section)
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _token_hash(item: dict[str, Any], env: dict[str, str]) -> tuple[str, str | None]:
    """(the key the token comes from, the hex SHA-256 of the token, if known)."""
    if isinstance(item.get("token_sha256"), str):
        return "token_sha256", item["token_sha256"].lower()
    name = item.get("token_env")
    if isinstance(name, str) and env.get(name):
        return "token_env", hashlib.sha256(env[name].encode()).hexdigest()
    return "token_env", None


def _cross_checks(tree: dict[str, Any], env: dict[str, str]) -> list[str]:
    """What one key cannot tell alone: unset token_env, duplicate names, shared tokens.

    Run on the raw tree, so these are reported alongside every other problem.
    """
    problems = []
    for section, key in (("agents", "id"), ("approvers", "id"), ("tools", "name")):
        seen: set[Any] = set()
        for i, item in _items(tree, section):
            value = item.get(key)
            if not isinstance(value, str):
                continue  # not a name: validation says so
            if value in seen:
                problems.append(f"{section}[{i}].{key}: {value!r} is used twice")
            seen.add(value)
    holders: dict[str, str] = {}
    for section in ("agents", "approvers"):
        for i, item in _items(tree, section):
            source, digest = _token_hash(item, env)
            if digest is None:
                name = item.get("token_env")
                if isinstance(name, str):
                    problems.append(
                        f"{section}[{i}].token_env: environment variable {name} is not set"
                    )
                continue
            if digest in holders:
                problems.append(f"{section}[{i}].{source}: same token as {holders[digest]}")
            else:
                holders[digest] = f"{section}[{i}]"
    return problems


def _resolve_token_env(
    principals: tuple[Principal, ...], env: dict[str, str]
) -> tuple[Principal, ...]:
    return tuple(
        p
        if p.token_env is None
        else p.model_copy(
            update={"token_sha256": hashlib.sha256(env[p.token_env].encode()).hexdigest()}
        )
        for p in principals
    )


_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(tree: Any, env: dict[str, str], path: str = "") -> tuple[Any, list[str]]:
    """Replace `${NAME}` in every string of `tree`; `$$` is a literal `$`.

    Returns the new tree and one `path: environment variable NAME is not set` per miss.
    """
    problems: list[str] = []
    if isinstance(tree, dict):
        out: dict[Any, Any] = {}
        for key, value in tree.items():
            out[key], sub = interpolate(value, env, f"{path}.{key}" if path else str(key))
            problems += sub
        return out, problems
    if isinstance(tree, list):
        items = []
        for i, value in enumerate(tree):
            item, sub = interpolate(value, env, f"{path}[{i}]")
            items.append(item)
            problems += sub
        return items, problems
    if isinstance(tree, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "$"
            if name not in env:
                problems.append(f"{path}: environment variable {name} is not set")
                return ""
            return env[name]

        return _ENV_REF.sub(substitute, tree), problems
    return tree, problems


def _tool_env_values(tree: dict[str, Any], env: dict[str, str]) -> list[list[str]]:
    """For each item of `tools`, the values its `${NAME}`s stand for."""
    tools = tree.get("tools")
    found: list[list[str]] = []
    for item in tools if isinstance(tools, list) else []:
        values: list[str] = []
        _env_refs(item, env, values)
        found.append(values)
    return found


def _env_refs(tree: Any, env: dict[str, str], values: list[str]) -> None:
    if isinstance(tree, dict):
        for value in tree.values():
            _env_refs(value, env, values)
    elif isinstance(tree, list):
        for value in tree:
            _env_refs(value, env, values)
    elif isinstance(tree, str):
        values += [env[m.group(1)] for m in _ENV_REF.finditer(tree) if m.group(1) in env]


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith("function-"):  # pydantic's name for a validator step
            out += f".{part}" if out else part
    return out or "(top level)"


def _describe(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # Only the position and the parser's complaint: its default message quotes the
    # offending line, which may hold a credential.
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"(file): not valid YAML{where}: {getattr(exc, 'problem', None) or 'syntax error'}"


def parse_config(text: str, base_dir: Path, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc)]) from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(["(top level): must be a mapping of keys"])
    secrets = _tool_env_values(tree, env)
    tree, problems = interpolate(tree, env)
    unset = {problem.split(": ", 1)[0] for problem in problems}
    problems += _cross_checks(tree, env)
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        for error in exc.errors():
            where = _location(error["loc"])
            if where not in unset:  # already reported as the missing variable
                problems.append(f"{where}: {_describe(error)}")
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config.model_copy(
        update={
            "policy": config.policy.model_copy(
                update={
                    "path": _resolve(config.policy.path, base_dir),
                    "shadow": config.policy.shadow and _resolve(config.policy.shadow, base_dir),
                }
            ),
            "audit": config.audit.model_copy(
                update={"url": _resolved_url(config.audit.url, base_dir)}
            ),
            "storage": config.storage.model_copy(
                update={"url": _resolved_url(config.storage.url, base_dir)}
            ),
            "agents": _resolve_token_env(config.agents, env),
            "tools": tuple(
                _resolve_openapi(
                    tool.with_secrets(secrets[i] if i < len(secrets) else []), base_dir
                )
                for i, tool in enumerate(config.tools)
            ),
            "approvers": _resolve_token_env(config.approvers, env),
            "identity": config.identity.model_copy(
                update={"jwt": tuple(_resolve_files(p, base_dir) for p in config.identity.jwt)}
            ),
        }
    )


def _read_tree(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"(file): cannot read {path}: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc)]) from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(["(top level): must be a mapping of keys"])
    return tree


_M = TypeVar("_M", bound=BaseModel)


def _section(
    tree: dict[str, Any], name: str, model: type[_M], env: dict[str, str]
) -> tuple[_M | None, list[str]]:
    """One top-level section of the file, its `${NAME}`s replaced, validated alone; the
    problems are reported as `load_config` reports them."""
    section, problems = interpolate(tree.get(name, {}), env, name)
    unset = {problem.split(": ", 1)[0] for problem in problems}
    try:
        return model.model_validate(section), problems
    except ValidationError as exc:
        for error in exc.errors():
            where = _location((name, *error["loc"]))
            if where not in unset:  # already reported as the missing variable
                problems.append(f"{where}: {_describe(error)}")
        return None, problems


def load_audit_config(path: Path, env: dict[str, str] | None = None) -> AuditConfig:
    """Only the `audit` section of a config file: what the `callgate audit` tools need,
    without the tool credentials' environment variables the gateway itself needs."""
    env = dict(os.environ) if env is None else env
    audit, problems = _section(_read_tree(path), "audit", AuditConfig, env)
    if problems:
        raise ConfigError(problems)
    assert audit is not None
    return audit.model_copy(update={"url": _resolved_url(audit.url, path.resolve().parent)})


def load_database_config(
    path: Path, env: dict[str, str] | None = None
) -> tuple[Storage, AuditConfig]:
    """Only the `storage` and `audit` sections of a config file: what `callgate db` needs,
    so that an operator or an init container holding the database URLs alone can run it,
    without the agents' and tools' secrets the gateway itself needs."""
    env = dict(os.environ) if env is None else env
    tree = _read_tree(path)
    storage, problems = _section(tree, "storage", Storage, env)
    audit, audit_problems = _section(tree, "audit", AuditConfig, env)
    problems += audit_problems
    if problems:
        raise ConfigError(problems)
    assert storage is not None and audit is not None
    base_dir = path.resolve().parent
    return (
        storage.model_copy(update={"url": _resolved_url(storage.url, base_dir)}),
        audit.model_copy(update={"url": _resolved_url(audit.url, base_dir)}),
    )


def _resolve_files(provider: JwtProvider, base_dir: Path) -> JwtProvider:
    files = {
        key: _resolve(getattr(provider, key), base_dir)
        for key in ("jwks_file", "ca_file", "token_file")
        if getattr(provider, key) is not None
    }
    return provider.model_copy(update=files)


def _resolve_openapi(tool: Tool, base_dir: Path) -> Tool:
    """A tool whose `openapi` file is given relative to the config, made absolute."""
    if tool.openapi is None or _is_absolute_http(tool.openapi):
        return tool
    return tool.model_copy(update={"openapi": str(_resolve(Path(tool.openapi), base_dir))})


def _resolve(path: Path, base_dir: Path) -> Path:
    return path if path.is_absolute() else (base_dir / path).resolve()


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"(file): cannot read {path}: {exc.strerror}"]) from None
    return parse_config(text, path.resolve().parent)
