"""HTTP vocabulary shared by the stages: hop-by-hop, credential-bearing and forwarding
headers, the bearer token, and the methods that change nothing."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from aiohttp import web
from multidict import CIMultiDictProxy

# RFC 9110 section 9.2.1: methods that change nothing (`read-only` switches let only these
# through; a tool's `idempotency: required` asks a key of every other).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# RFC 9110 section 7.6.1, plus the de facto ones proxies drop.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Never shown to a policy, never logged.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token", "api-key"}
)


# What a proxy in front of the tool would tell it about the client: tools trust these for
# IP allow-lists, host routing and URL rewriting, so an agent never sets them.
FORWARDING_HEADERS = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "x-original-url",
        "x-original-host",
        "x-rewrite-url",
        "x-host",
    }
)


def connection_listed(headers: CIMultiDictProxy[str]) -> set[str]:
    """Headers named in `Connection` are hop-by-hop too."""
    listed: set[str] = set()
    for value in headers.getall("Connection", ()):
        listed.update(name.strip().lower() for name in value.split(",") if name.strip())
    return listed


def without(headers: CIMultiDictProxy[str], drop: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The headers in order, repeats kept, minus hop-by-hop ones and those in `drop` (any
    case; a frozenset is taken as lower-case names already)."""
    skip = _hop_by_hop_and(_lowered(drop))
    if "Connection" in headers:
        skip = skip | connection_listed(headers)
    return [(name, value) for name, value in headers.items() if name.lower() not in skip]


def dropping(headers: list[tuple[str, str]], drop: Iterable[str]) -> list[tuple[str, str]]:
    """`headers` minus the names in `drop` (any case; a frozenset is taken as lower-case
    names already)."""
    skip = _lowered(drop)
    return [(name, value) for name, value in headers if name.lower() not in skip]


def _lowered(names: Iterable[str]) -> frozenset[str]:
    return names if isinstance(names, frozenset) else frozenset(name.lower() for name in names)


@functools.lru_cache(maxsize=64)
def _hop_by_hop_and(drop: frozenset[str]) -> frozenset[str]:
    """Per call the same few sets: made once (the callers pass constants or per-tool sets)."""
    return HOP_BY_HOP | drop


def bearer_token(headers: CIMultiDictProxy[str]) -> str:
    """The token of `Authorization: Bearer <token>`, or "" when there is none."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def forwarding(request: web.Request) -> list[tuple[str, str]]:
    """The gateway's own `Forwarded` and `X-Forwarded-*` for the tool (RFC 7239): the
    agent's address as the gateway's socket saw it, never as the agent claims it. No host:
    the `Host` an agent sends is its own choice, and tools route on a forwarded host."""
    client = request.remote or "unknown"
    proto = request.scheme  # from the connection (TLS or not), not from any header
    node = f'"[{client}]"' if ":" in client else client
    return [
        ("Forwarded", f"for={node};proto={proto}"),
        ("X-Forwarded-For", client),
        ("X-Forwarded-Proto", proto),
    ]
