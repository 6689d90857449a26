"""The approvers' page sessions (docs/approvals.md, "Sessions"): who is signed in, their
CSRF token, and the cookies that carry them.

A session lives in this process's memory, found by a random id the cookie carries signed
(HMAC-SHA256, itsdangerous) with `approvers_sso.session_secret`, or a secret of the process's own
without single sign-on. It ends after `session_idle_s` without a request, after
`session_absolute_s` whatever happens, or at logout, checked here on every request: a cookie
kept after any of these finds nothing.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from itsdangerous import BadSignature, Signer, URLSafeTimedSerializer

from gateway.config import Config, Principal

SESSION_COOKIE = "callgate_session"
# Without approvers_sso, a token login lasts this long however active (as before).
DEFAULT_IDLE_S = DEFAULT_ABSOLUTE_S = 8 * 3600


@dataclass
class Session:
    approver: Principal
    csrf: str
    started: float
    seen: float


class Sessions:
    def __init__(self, secret: str, idle_s: float, absolute_s: float) -> None:
        self._by_id: dict[str, Session] = {}
        self._signer = Signer(secret, salt="callgate-ui-session", digest_method=hashlib.sha256)
        self.idle_s = idle_s
        self.absolute_s = absolute_s

    @classmethod
    def for_config(cls, config: Config) -> Sessions:
        sso = config.approvers_sso
        if sso is None:
            return cls(secrets.token_urlsafe(32), DEFAULT_IDLE_S, DEFAULT_ABSOLUTE_S)
        return cls(sso.session_secret, sso.session_idle_s, sso.session_absolute_s)

    def create(self, approver: Principal) -> str:
        """A new session for `approver`: the cookie value that names it."""
        now = time.time()
        for stale in [k for k, v in self._by_id.items() if self._ended(v, now)]:
            del self._by_id[stale]
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = Session(approver, secrets.token_urlsafe(32), now, now)
        return self._signer.sign(session_id).decode()

    def get(self, cookie: str | None) -> Session | None:
        """The live session the cookie names (now seen again), or None."""
        session_id = self._id(cookie)
        session = self._by_id.get(session_id)
        now = time.time()
        if session is None or self._ended(session, now):
            self._by_id.pop(session_id, None)
            return None
        session.seen = now
        return session

    def drop(self, cookie: str | None) -> None:
        self._by_id.pop(self._id(cookie), None)

    def _id(self, cookie: str | None) -> str:
        try:
            return self._signer.unsign(cookie or "").decode()
        except BadSignature:
            return ""

    def _ended(self, session: Session, now: float) -> bool:
        return now - session.seen > self.idle_s or now - session.started > self.absolute_s


SESSIONS = web.AppKey("ui_sessions", Sessions)


class SignedLogin:
    """The sign-in under way (state, nonce, PKCE verifier), as a signed, timed cookie."""

    COOKIE = "callgate_sso"
    MAX_AGE_S = 600

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(
            secret, salt="callgate-sso-login", signer_kwargs={"digest_method": hashlib.sha256}
        )

    def dumps(self, fields: dict[str, str]) -> str:
        return self._serializer.dumps(fields)

    def loads(self, cookie: str | None) -> dict[str, Any] | None:
        try:
            found = self._serializer.loads(cookie or "", max_age=self.MAX_AGE_S)
        except BadSignature:  # SignatureExpired is one
            return None
        return found if isinstance(found, dict) else None


def secure(request: web.Request, config: Config) -> bool:
    """Whether cookies get `Secure`: served over TLS, or reached at an https:// address."""
    sso = config.approvers_sso
    return request.secure or (sso is not None and sso.redirect_url.startswith("https://"))


def set_cookie(
    response: web.StreamResponse, name: str, value: str, max_age: float, secure: bool
) -> None:
    # Lax, not Strict: the browser comes back from the identity provider with a top-level
    # navigation from another site, and must then bring its session to /ui/. Forms stay
    # guarded by the CSRF token, and Lax never sends the cookie on another site's POST.
    response.set_cookie(
        name,
        value,
        max_age=math.ceil(max_age),
        path="/ui",
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
