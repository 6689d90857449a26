"""Approvers signing in with the organisation's OpenID provider (`approvers_sso`,
docs/approvals.md, "Single sign-on"), and its access tokens on the admin API.

The authorization code flow with PKCE: `new_login` makes the state, nonce and code
verifier the browser carries (signed) to the callback; `sign_in` exchanges the code with
the client secret and verifies the ID token with the issuer's keys (gateway/identity/keys.py
through the JWT verifier: signature, iss, aud, exp), then its nonce. Either token's groups
claim maps to approver roles; a user in no configured group is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp

from gateway.config import ApproversSso, Principal
from gateway.errors import ErrorCode, GatewayError
from gateway.identity import claims as claim_paths
from gateway.identity.keys import FETCH_TIMEOUT_S, MAX_DOCUMENT_BYTES
from gateway.identity.verifier import JwtVerifier

# An approver id from a claim: printable ASCII without spaces (an email, a subject).
_APPROVER_ID = re.compile(r"[!-~]{1,255}")


class SignInRefused(Exception):
    """The sign-in cannot complete; the message says why, fit for the person signing in
    (it never quotes a token)."""


class SsoApprover(Principal):
    """An approver signed in through the provider, or holding its access token. `id` is the
    configured claim's value (the email by default); built here alone (never from YAML)."""

    subject: str
    issuer: str


@dataclass(frozen=True)
class Login:
    """One sign-in under way, kept by the browser (signed) from the start to the callback."""

    state: str
    nonce: str
    verifier: str  # the PKCE code verifier; the provider gets its S256 challenge

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_login() -> Login:
    return Login(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48))


class Sso:
    def __init__(self, config: ApproversSso, static_approvers: set[str]) -> None:
        self.config = config
        self.verifier = JwtVerifier((config.provider,), reserved_ids=set())
        self.keys = self.verifier.issuers[config.issuer]
        # Ids of the approvers with tokens: a signed-in user naming one is refused, so that
        # one can never act as the other.
        self._static = frozenset(static_approvers)
        self._client: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        await self.keys.open()

    async def close(self) -> None:
        await self.keys.close()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _endpoint(self, name: str) -> str:
        url = self.keys.metadata.get(name)
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise SignInRefused(
                "the identity provider's discovery document could not be fetched yet"
                f" (no {name}); try again shortly"
            )
        return url

    def authorization_url(self, login: Login) -> str:
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_url,
            "scope": " ".join(self.config.scopes),
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": login.challenge,
            "code_challenge_method": "S256",
        }
        endpoint = self._endpoint("authorization_endpoint")
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)

    async def sign_in(self, login: Login, code: str) -> SsoApprover:
        """The approver the provider's code names, or SignInRefused."""
        tokens = await self._exchange(login, code)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused("the identity provider answered without an ID token")
        try:
            verified, _ = await self.verifier.claims(id_token)
        except GatewayError as refusal:
            raise SignInRefused(f"the ID token was refused: {refusal.message}") from None
        if not isinstance(verified.get("sub"), str) or not verified["sub"]:
            raise SignInRefused("the ID token was refused (sub): it names no subject")
        nonce = verified.get("nonce")
        if not isinstance(nonce, str) or not secrets.compare_digest(nonce, login.nonce):
            raise SignInRefused("the ID token was refused (nonce): it is not this sign-in's")
        azp = verified.get("azp")
        if azp is not None and azp != self.config.client_id:
            raise SignInRefused("the ID token was refused (azp): it was issued to another client")
        return self.approver(verified)

    async def _exchange(self, login: Login, code: str) -> dict[str, Any]:
        """The token endpoint's answer to the code, the PKCE verifier and the secret."""
        assert self._client is not None, "Sso.open() was not awaited"
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_url,
            "code_verifier": login.verifier,
        }
        headers = {"Accept": "application/json"}
        methods = self.keys.metadata.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and "client_secret_basic" not in methods:
            form.update(client_id=self.config.client_id, client_secret=self.config.client_secret)
        else:  # the default of OpenID Connect Discovery
            client = _form_encoded(self.config.client_id, self.config.client_secret)
            headers["Authorization"] = aiohttp.encode_basic_auth(*client)
        url = self._endpoint("token_endpoint")
        try:
            async with self._client.post(
                url, data=form, headers=headers, allow_redirects=False
            ) as resp:
                status, body = resp.status, bytearray()
                async for chunk in resp.content.iter_any():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise SignInRefused("the identity provider's token answer is too large")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SignInRefused(f"the identity provider could not be reached: {exc!r}") from None
        try:
            answer = json.loads(body) if body else None
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            said = ""
            if isinstance(error, str) and error.isascii() and error.isprintable():
                said = f" ({error[:64]})"
            raise SignInRefused(
                f"the identity provider refused the code{said}: HTTP {status}; sign in again"
            )
        return answer

    async def verify(self, token: str) -> SsoApprover:
        """An access token from the provider (`audience`) -> its approver, or 401
        `unauthenticated` naming the check that failed."""
        if self.config.audience is None:
            raise GatewayError(ErrorCode.UNAUTHENTICATED, "access tokens are not accepted here")
        verified, _ = await self.verifier.claims(token, (self.config.audience,))
        try:
            return self.approver(verified)
        except SignInRefused as refusal:
            raise GatewayError(ErrorCode.UNAUTHENTICATED, str(refusal)) from None

    def approver(self, verified: dict[str, Any]) -> SsoApprover:
        """The approver of a verified token's claims: its id claim and its groups' roles."""
        config = self.config
        groups = claim_paths.roles(claim_paths.find(verified, config.groups_claim))
        if groups is None:
            raise SignInRefused(
                f"claim {config.groups_claim} must be a list of strings or a space-separated string"
            )
        roles = tuple(
            dict.fromkeys(r for g in groups if g in config.groups for r in config.groups[g])
        )
        if not roles:
            raise SignInRefused(
                "you are in none of the groups allowed to approve"
                f" ({', '.join(sorted(config.groups))}); ask for one of them"
            )
        approver_id = claim_paths.find(verified, config.approver_id)
        if not isinstance(approver_id, str) or _APPROVER_ID.fullmatch(approver_id) is None:
            raise SignInRefused(
                f"claim {config.approver_id} must be 1 to 255 printable ASCII characters"
            )
        if config.approver_id == "email" and verified.get("email_verified") is False:
            raise SignInRefused("the identity provider says this email is not verified")
        if approver_id in self._static:
            raise SignInRefused(
                f"claim {config.approver_id} names an approver configured with a token"
            )
        subject = verified.get("sub")
        return SsoApprover.model_construct(
            id=approver_id,
            token_sha256=None,
            token_env=None,
            roles=roles,
            subject=subject if isinstance(subject, str) else "",
            issuer=config.issuer,
        )


def _form_encoded(client_id: str, secret: str) -> tuple[str, str]:
    """RFC 6749 2.3.1: both are form-urlencoded before HTTP Basic."""
    return quote_plus(client_id), quote_plus(secret)
