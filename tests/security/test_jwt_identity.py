"""Agents identified by JWTs (docs/security.md, "Workload identity"; docs/configuration.md,
"Workload identity"), against a real gateway and an OpenID provider started by the test
(tests/support/oidc.py): discovery, JWKS, keys and tokens of its own.

Every refusal is a 401 `unauthenticated` naming the check that failed and never the token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from gateway.config import IdentityConfig, JwtProvider
from gateway.identity import keys as issuer_keys
from tests.support.audit import wait_for_records
from tests.support.gateway import AGENT_TOKEN, auth, make_config
from tests.support.oidc import AUDIENCE, TestIdp, new_key


def policy(issuer: str) -> str:
    # Allows JWT agents of the `acme` tenant with the caller role, static agents by role;
    # the reason says what the policy saw.
    return f"""package gateway

import rego.v1

default decision := {{"allow": false, "reason": "refused"}}

decision := {{"allow": true, "reason": sprintf("jwt %s %s", [input.agent.id, input.agent.claims.tenant])}} if {{
    input.agent.identity == {{"kind": "jwt", "issuer": "{issuer}"}}
    input.agent.claims.tenant == "acme"
    "caller" in input.agent.roles
}}

decision := {{"allow": true, "reason": "token"}} if {{
    input.agent.identity == {{"kind": "token"}}
    input.agent.claims == {{}}
    "caller" in input.agent.roles
}}
"""


async def upstream_app(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def upstream() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream_app)
    return app


async def start(
    tmp_path: Path,
    start_upstream: Any,
    start_gateway: Any,
    idp: TestIdp,
    **provider: Any,
) -> Any:
    idp_url = await start_upstream(idp.app())
    idp.issuer = idp_url
    policies = tmp_path / "jwt-policies"
    policies.mkdir()
    (policies / "gateway.rego").write_text(policy(idp.issuer))
    config = make_config(tmp_path, await start_upstream(upstream()), policy_dir=policies)
    settings: dict[str, Any] = {
        "issuer": idp.issuer,
        "discovery": True,
        "audiences": [AUDIENCE],
        "roles": "roles",
        **provider,
    }
    identity = IdentityConfig(jwt=(JwtProvider.model_validate(settings),))
    return await start_gateway(config=config.model_copy(update={"identity": identity}))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refusal(gw: Any, token: str) -> str:
    resp = await gw.get("/tools/echo/x", headers=bearer(token))
    text = await resp.text()
    assert resp.status == 401, text
    body = json.loads(text)
    assert body["error"]["code"] == "unauthenticated"
    for part in token.split("."):
        assert not part or part not in text, "no part of the token is echoed"
    message: str = body["error"]["message"]
    return message


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_a_jwt_identifies_the_agent_and_the_policy_sees_its_claims(
    tmp_path: Path, start_upstream: Any, start_gateway: Any, alg: str
) -> None:
    idp = TestIdp()
    gw = await start(tmp_path, start_upstream, start_gateway, idp)
    resp = await gw.get("/tools/echo/x", headers=bearer(idp.token(alg)))
    assert resp.status == 200, await resp.text()

    # Another tenant: identified, then denied by the policy reading its claims.
    resp = await gw.get("/tools/echo/x", headers=bearer(idp.token(alg, tenant="globex")))
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "policy_denied"


async def test_static_tokens_keep_working_beside_jwts(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    gw = await start(tmp_path, start_upstream, start_gateway, TestIdp())
    resp = await gw.get("/tools/echo/x", headers=auth(AGENT_TOKEN))
    assert resp.status == 200, await resp.text()
    # A token that is neither a static token nor shaped as a JWT: the usual refusal.
    resp = await gw.get("/tools/echo/x", headers=bearer("not-a-known-token"))
    assert resp.status == 401
    assert "not known" in (await resp.json())["error"]["message"]


def _hs256_with_public_key(idp: TestIdp) -> str:
    """Algorithm confusion: HS256 keyed with the issuer's public key (PEM), made by hand
    (PyJWT itself refuses to)."""
    key = idp.key("RS256")
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def part(document: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=")

    signing_input = part({"alg": "HS256", "typ": "JWT", "kid": key.kid}) + b"." + part(idp.claims())
    signature = hmac.new(pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def _unsigned(idp: TestIdp) -> str:
    return jwt.encode(idp.claims(), None, algorithm="none", headers={"kid": idp.key("RS256").kid})


CASES: dict[str, Any] = {
    "expired": (lambda idp: idp.token(exp=int(time.time()) - 120), "(expired)"),
    "not yet valid": (lambda idp: idp.token(nbf=int(time.time()) + 120), "(not yet valid)"),
    "issued in the future": (lambda idp: idp.token(iat=int(time.time()) + 120), "(not yet valid)"),
    "wrong issuer": (lambda idp: idp.token(iss="https://idp.example"), "(issuer)"),
    "wrong audience": (lambda idp: idp.token(aud="someone-else"), "(audience)"),
    "no expiry": (lambda idp: idp.token(exp=None), "(required claim)"),
    "unknown kid": (lambda idp: idp.token(key=new_key("RS256", "nobody-knows")), "(unknown kid)"),
    "bad signature": (
        lambda idp: idp.token(key=new_key("RS256", idp.key("RS256").kid)),
        "(signature)",
    ),
    "alg none": (_unsigned, "(algorithm)"),
    "HS256 with the public key": (_hs256_with_public_key, "(algorithm)"),
    "roles of the wrong type": (lambda idp: idp.token(roles={"admin": True}), "(roles claim type)"),
    "a static agent's id": (lambda idp: idp.token(sub="bot"), "(agent id)"),
    "an id that is no string": (lambda idp: idp.token(sub=None), "(agent id)"),
    "over the size cap": (lambda idp: idp.token(padding="x" * 10_000), "(size)"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_failed_check_is_a_401_naming_it(
    tmp_path: Path, start_upstream: Any, start_gateway: Any, case: str
) -> None:
    idp = TestIdp()
    gw = await start(tmp_path, start_upstream, start_gateway, idp)
    make, check = CASES[case]
    assert check in await refusal(gw, make(idp))


async def test_jku_and_x5u_headers_are_never_fetched(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    fetched: list[str] = []
    attacker = new_key("RS256", "attacker")

    async def serve(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.json_response({"keys": [attacker.jwk]})

    elsewhere = web.Application()
    elsewhere.router.add_get("/{tail:.*}", serve)
    elsewhere_url = await start_upstream(elsewhere)
    idp = TestIdp()
    gw = await start(tmp_path, start_upstream, start_gateway, idp)
    for header in ("jku", "x5u"):
        token = idp.token(key=attacker, headers={header: f"{elsewhere_url}/keys"})
        assert "(unknown kid)" in await refusal(gw, token)
    assert fetched == []


async def test_a_100_kb_token_never_reaches_the_gateway_code(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    # One header line over 16 KiB is refused by aiohttp's parser before any gateway code
    # runs: 431 from `callgate serve`'s listener (docs/limits.md), 400 from this test's
    # plain aiohttp server (tests/security/test_listener.py pins the 431).
    idp = TestIdp()
    gw = await start(tmp_path, start_upstream, start_gateway, idp)
    resp = await gw.get("/tools/echo/x", headers=bearer(idp.token(padding="x" * 100_000)))
    assert resp.status in (400, 431)
    assert resp.content_type != "application/json"


async def test_unknown_kids_refetch_the_keys_at_most_once_per_interval(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    idp = TestIdp()
    gw = await start(tmp_path, start_upstream, start_gateway, idp)
    assert idp.jwks_requests == 1, "fetched once at start"

    # A storm of tokens naming unknown keys: one fetch between them all.
    storm = [idp.token(key=new_key("ES256", f"bogus-{i}")) for i in range(20)]
    responses = await asyncio.gather(*(gw.get("/tools/echo/x", headers=bearer(t)) for t in storm))
    assert [r.status for r in responses] == [401] * 20
    assert idp.jwks_requests == 2

    # The issuer rotates in a new key within the interval: not fetched again yet.
    rotated = new_key("RS256")
    idp.keys.append(rotated)
    assert "(unknown kid)" in await refusal(gw, idp.token(key=rotated))
    assert idp.jwks_requests == 2


async def test_a_new_key_of_the_issuer_is_fetched_when_a_token_names_it(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    idp = TestIdp()
    gw = await start(tmp_path, start_upstream, start_gateway, idp)
    rotated = new_key("EdDSA")
    idp.keys.append(rotated)
    resp = await gw.get("/tools/echo/x", headers=bearer(idp.token(key=rotated)))
    assert resp.status == 200, await resp.text()
    assert idp.jwks_requests == 2


async def test_issuer_down_at_start_is_not_ready_until_its_keys_come(
    tmp_path: Path,
    start_upstream: Any,
    start_gateway: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    idp = TestIdp(down=True)
    with caplog.at_level(logging.ERROR, logger=issuer_keys.__name__):
        gw = await start(tmp_path, start_upstream, start_gateway, idp)
    assert any(
        "could not be fetched" in r.getMessage() and getattr(r, "issuer", None) == idp.issuer
        for r in caplog.records
    ), "a clear log line names the issuer"
    ready = await gw.admin.get("/readyz")
    body = await ready.json()
    assert ready.status == 503
    assert "503" in body["identity"][idp.issuer]
    assert "(keys unavailable)" in await refusal(gw, idp.token())
    # Static agents are not held up by an issuer.
    assert (await gw.get("/tools/echo/x", headers=auth(AGENT_TOKEN))).status == 200

    idp.down = False  # the gateway tries again in the background, backing off from 1 s
    deadline = time.monotonic() + 20
    while (await gw.admin.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, "ready once the issuer answers"
        await asyncio.sleep(0.2)
    resp = await gw.get("/tools/echo/x", headers=bearer(idp.token()))
    assert resp.status == 200, await resp.text()


async def test_issuer_down_later_keeps_the_cached_keys_working(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    idp = TestIdp()
    gw = await start(tmp_path, start_upstream, start_gateway, idp)
    idp.down = True
    # An unknown kid makes the gateway try the issuer, which fails ...
    assert "(unknown kid)" in await refusal(gw, idp.token(key=new_key("RS256", "later")))
    assert idp.discovery_requests == 2
    # ... and the keys fetched before still verify; the gateway stays ready.
    resp = await gw.get("/tools/echo/x", headers=bearer(idp.token("ES256")))
    assert resp.status == 200, await resp.text()
    assert (await gw.admin.get("/readyz")).status == 200


async def test_a_jwt_never_works_on_the_admin_listener(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    idp = TestIdp()
    gw = await start(tmp_path, start_upstream, start_gateway, idp)
    resp = await gw.admin.get("/api/v1/actions", headers=bearer(idp.token(sub="olga")))
    assert resp.status == 401


async def test_keys_from_a_local_jwks_file(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    idp = TestIdp()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.jwk for key in idp.keys]}))
    gw = await start(
        tmp_path, start_upstream, start_gateway, idp, discovery=False, jwks_file=str(jwks)
    )
    resp = await gw.get("/tools/echo/x", headers=bearer(idp.token("ES256")))
    assert resp.status == 200, await resp.text()
    assert idp.jwks_requests == 0


async def test_kubernetes_claims_by_dotted_path_and_required_claims(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    idp = TestIdp()
    gw = await start(
        tmp_path,
        start_upstream,
        start_gateway,
        idp,
        agent_id="kubernetes.io.serviceaccount.name",
        agent_id_prefix="k8s/",
        roles="scope",
        required_claims={"kubernetes.io.namespace": "agents"},
    )

    def token(namespace: str, scope: Any = "caller tools.read") -> str:
        service_account = {"namespace": namespace, "serviceaccount": {"name": "bot", "uid": "1"}}
        return idp.token(
            sub=f"system:serviceaccount:{namespace}:bot",
            roles=None,
            scope=scope,
            **{"kubernetes.io": service_account},
        )

    resp = await gw.get("/tools/echo/x", headers=bearer(token("agents")))
    assert resp.status == 200, await resp.text()
    records = await wait_for_records(
        gw.services.config.audit.path,
        lambda rs: any(r["kind"] == "decision" and r["agent"] == "k8s/bot" for r in rs),
    )
    (decision,) = [r for r in records if r["kind"] == "decision"]
    assert decision["identity"] == {"kind": "jwt", "issuer": idp.issuer}
    assert decision["claims"]["kubernetes.io"]["namespace"] == "agents"
    assert decision["roles"] == ["caller", "tools.read"]
    assert "(required claim)" in await refusal(gw, token("default"))
    assert "(roles claim type)" in await refusal(gw, token("agents", scope=7))
