"""Who is calling: `Authorization: Bearer <token>` -> the configured agent (on the agent
listener) or approver (on the admin listener), or 401 `unauthenticated`. On the agent
listener, a token that is no configured agent's and looks like a JWT goes on to the JWT
verifier, when `identity.jwt` configures one (gateway/identity/); on the admin listener, to
the approvers' identity provider, when `approvers_sso.audience` is set."""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from multidict import CIMultiDictProxy

from gateway.config import Principal
from gateway.errors import ErrorCode, GatewayError
from gateway.headers import bearer_token
from gateway.identity.verifier import looks_like_jwt


class TokenVerifier(Protocol):
    """A JWT -> whom it identifies, or GatewayError saying which check failed."""

    async def verify(self, token: str) -> Principal: ...


class AgentDirectory:
    """Bearer token -> agent (or approver). Tokens are known only by their SHA-256."""

    def __init__(self, agents: tuple[Principal, ...], jwt: TokenVerifier | None = None) -> None:
        self._by_digest = {agent.token_digest: agent for agent in agents}
        self._jwt = jwt

    def find(self, token: str) -> Principal | None:
        """Who holds `token`; None for an empty or unknown one."""
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        # One lookup however many agents there are. It is keyed by the SHA-256 of the
        # token, which a guesser cannot steer, so its timing says nothing about how close a
        # guess came to a real token; the match itself is compared in constant time.
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found.token_digest, digest):
            return None
        return found

    def authenticate(
        self,
        headers: CIMultiDictProxy[str],
        *,
        unknown: str,
        missing: str | None = None,
        realm: str | None = None,
    ) -> Principal:
        """Who holds the request's bearer token, or 401 `unauthenticated` saying `unknown`
        (or `missing`, when given, for a request without a token), with a
        `WWW-Authenticate` challenge for `realm` when given."""
        token = bearer_token(headers)
        found = self.find(token)
        if found is None:
            raise _unauthenticated(missing if missing is not None and not token else unknown, realm)
        return found

    async def identify(
        self, headers: CIMultiDictProxy[str], *, unknown: str, missing: str, realm: str
    ) -> Principal:
        """As `authenticate`, but a token that is no static one and looks like a JWT is
        verified by the JWT verifier (its refusal names the check that failed). Static
        tokens take the same one lookup as before."""
        token = bearer_token(headers)
        found = self.find(token)
        if found is not None:
            return found
        if self._jwt is not None and looks_like_jwt(token):
            try:
                return await self._jwt.verify(token)
            except GatewayError as refusal:
                raise _unauthenticated(refusal.message, realm) from None
        raise _unauthenticated(missing if not token else unknown, realm)


def _unauthenticated(message: str, realm: str | None) -> GatewayError:
    return GatewayError(
        ErrorCode.UNAUTHENTICATED,
        message,
        headers={"WWW-Authenticate": f'Bearer realm="{realm}"'} if realm else None,
    )
