"""A bearer token that looks like a JWT -> the agent it identifies, or 401
`unauthenticated` naming the check that failed (docs/security.md, "Workload identity").

Checked in this order: size, form, issuer (picks the provider), algorithm, key (`kid`),
signature, then the claims: expiry, not-before and issued-at (with `leeway_s`), audience,
`required_claims`, the agent id and the roles. Only the provider's own keys are used:
`jku`, `x5u`, `jwk` and `x5c` headers are never read. Messages never quote the token nor
any value taken from it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import jwt
from jwt import exceptions

from gateway.config import JwtProvider, Principal
from gateway.errors import ErrorCode, GatewayError
from gateway.identity import claims as claim_paths
from gateway.identity.keys import IssuerKeys

# Checked before any parsing. Below the agent listener's bound on one header line (16 KiB,
# gateway/app.py), so that a token between the two still gets this 401, not a 431.
MAX_TOKEN_BYTES = 8192
_JWT_FORM = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# An agent id from a claim: printable ASCII, no spaces (it is a key of limits, stores, logs).
_AGENT_ID = re.compile(r"[!-~]{1,255}")


class JwtAgent(Principal):
    """An agent identified by a JWT: `token_sha256` is that token's, `claims` its verified
    claims, `issuer` the provider's issuer. Built by the verifier alone (never from YAML)."""

    issuer: str
    claims: dict[str, Any]


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts separated by dots (JWS compact form)."""
    return _JWT_FORM.fullmatch(token) is not None


def refused(check: str, detail: str) -> GatewayError:
    return GatewayError(ErrorCode.UNAUTHENTICATED, f"the JWT was refused ({check}): {detail}")


class JwtVerifier:
    def __init__(self, providers: tuple[JwtProvider, ...], reserved_ids: set[str]) -> None:
        self.issuers = {provider.issuer: IssuerKeys(provider) for provider in providers}
        # The ids of static agents and approvers: a JWT naming one is refused, so that a
        # JWT agent can never be taken for either.
        self._reserved = frozenset(reserved_ids)

    @property
    def unready(self) -> dict[str, str]:
        """Issuer -> why its keys are missing, for each issuer with none fetched yet."""
        return {
            issuer: f"keys not fetched: {keys.failure or 'not tried yet'}"
            for issuer, keys in self.issuers.items()
            if not keys.loaded
        }

    async def verify(self, token: str) -> JwtAgent:
        verified, provider = await self.claims(token)
        return self._agent(token, verified, provider)

    async def claims(
        self, token: str, audiences: tuple[str, ...] | None = None
    ) -> tuple[dict[str, Any], JwtProvider]:
        """The token's verified claims and its issuer's provider; `audiences` (default the
        provider's) are the `aud` values accepted."""
        if len(token) > MAX_TOKEN_BYTES:
            raise refused("size", f"a JWT may be at most {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except exceptions.PyJWTError:
            raise refused("malformed", "not a JWS in compact form with a JSON payload") from None
        issuer = unverified.get("iss")
        keys = self.issuers.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            raise refused("issuer", "its iss is not an issuer this gateway trusts")
        provider = keys.provider
        alg = header.get("alg")
        if alg not in provider.algorithms:
            raise refused(
                "algorithm", f"only {', '.join(provider.algorithms)} are accepted from its issuer"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise refused("malformed", "its kid is not a string")
        key = keys.find(kid, alg) or await keys.find_after_refetch(kid, alg)
        if key is None:
            if not keys.loaded:
                raise refused("keys unavailable", "its issuer's keys could not be fetched yet")
            raise refused("unknown kid", "no key of its issuer has its kid and algorithm")
        return _decode(token, key, alg, provider, audiences or provider.audiences), provider

    def _agent(self, token: str, verified: dict[str, Any], provider: JwtProvider) -> JwtAgent:
        for path, required in provider.required_claims.items():
            if not claim_paths.holds(claim_paths.find(verified, path), required):
                raise refused("required claim", f"claim {path} does not hold the required value")
        agent_id = claim_paths.find(verified, provider.agent_id)
        if not isinstance(agent_id, str) or _AGENT_ID.fullmatch(agent_id) is None:
            raise refused(
                "agent id",
                f"claim {provider.agent_id} must be 1 to 255 printable ASCII characters",
            )
        agent_id = provider.agent_id_prefix + agent_id
        if agent_id in self._reserved:
            raise refused("agent id", "it names an agent or approver configured with a token")
        roles: tuple[str, ...] | None = ()
        if provider.roles is not None:
            roles = claim_paths.roles(claim_paths.find(verified, provider.roles))
            if roles is None:
                raise refused(
                    "roles claim type",
                    f"claim {provider.roles} must be a list of strings or a space-separated string",
                )
        return JwtAgent.model_construct(
            id=agent_id,
            token_sha256=hashlib.sha256(token.encode()).hexdigest(),
            token_env=None,
            roles=roles,
            issuer=provider.issuer,
            claims=verified,
        )


def _decode(
    token: str, key: jwt.PyJWK, alg: str, provider: JwtProvider, audiences: tuple[str, ...]
) -> dict[str, Any]:
    try:
        verified: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=list(audiences),
            issuer=provider.issuer,
            leeway=provider.leeway_s,
            options={"require": ["exp", "iss", "aud"], "verify_sub": False, "verify_jti": False},
        )
    except exceptions.InvalidSignatureError:
        raise refused("signature", "its signature does not verify with its issuer's key") from None
    except exceptions.ExpiredSignatureError:
        raise refused(
            "expired", f"its exp is past, beyond leeway_s {provider.leeway_s:g}"
        ) from None
    except exceptions.ImmatureSignatureError:
        raise refused(
            "not yet valid", f"its nbf is ahead, beyond leeway_s {provider.leeway_s:g}"
        ) from None
    except exceptions.InvalidIssuedAtError:
        raise refused(
            "not yet valid", f"its iat is ahead, beyond leeway_s {provider.leeway_s:g}"
        ) from None
    except exceptions.InvalidAudienceError:
        raise refused("audience", f"its aud names none of {', '.join(audiences)}") from None
    except exceptions.InvalidIssuerError:
        raise refused("issuer", "its iss is not an issuer this gateway trusts") from None
    except exceptions.InvalidAlgorithmError:
        raise refused("algorithm", "its alg does not fit its issuer's key") from None
    except exceptions.MissingRequiredClaimError as exc:
        raise refused("required claim", f"it has no {exc.claim} claim") from None
    except exceptions.PyJWTError:
        raise refused("malformed", "its claims are not well formed") from None
    return verified
