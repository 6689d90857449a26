"""Each JWT issuer's signing keys: fetched at start (through OpenID Connect discovery, from
a JWKS URL or read from a file), kept, fetched again every `refresh_s` and, for a token
naming a key not seen yet, at most once per REFETCH_INTERVAL_S (docs/security.md,
"Workload identity"). Fetches are aiohttp requests on the event loop, never blocking it.

An issuer that cannot be reached at start leaves its keys missing: its tokens are refused
and /readyz says not ready until a later try succeeds. One that cannot be reached later
leaves the keys fetched before in use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
import time
from typing import Any

import aiohttp
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from gateway.config import JwtProvider

log = logging.getLogger(__name__)

# A storm of tokens naming unknown keys makes at most one fetch per issuer in this time.
REFETCH_INTERVAL_S = 30.0
FETCH_TIMEOUT_S = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024
# The longest wait between tries while an issuer's keys are still missing.
MAX_RETRY_S = 30.0


class KeyFetchError(Exception):
    """The keys could not be fetched; the message says why, fit for a log line."""


def _algorithms_of(jwk: dict[str, Any], accepted: tuple[str, ...]) -> list[str]:
    """The accepted algorithms this key may verify, by its type and curve (and its `alg`,
    when it names one)."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        fits = [alg for alg in accepted if alg[:2] in ("RS", "PS")]
    elif kty == "EC":
        curve = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(crv)  # type: ignore[arg-type]
        fits = [curve] if curve in accepted else []
    elif kty == "OKP" and crv in ("Ed25519", "Ed448"):
        fits = ["EdDSA"] if "EdDSA" in accepted else []
    else:
        fits = []
    named = jwk.get("alg")
    return [alg for alg in fits if named is None or alg == named]


def index_keys(document: Any, accepted: tuple[str, ...]) -> dict[tuple[str | None, str], PyJWK]:
    """A JWKS document -> its signing keys by (kid, algorithm); KeyFetchError when it holds
    none usable."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyFetchError("not a JWKS document (a JSON object with a list of keys)")
    keys: dict[tuple[str | None, str], PyJWK] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        for alg in _algorithms_of(jwk, accepted):
            try:
                keys[(kid, alg)] = PyJWK(jwk, algorithm=alg)
            except PyJWTError:
                continue  # a key this library cannot read is no key of ours
    if not keys:
        raise KeyFetchError(f"the JWKS holds no signing key for {', '.join(accepted)}")
    return keys


class IssuerKeys:
    def __init__(self, provider: JwtProvider) -> None:
        self.provider = provider
        self.keys: dict[tuple[str | None, str], PyJWK] = {}
        self.loaded = False  # keys were fetched at least once
        self.failure: str | None = None  # why the last fetch failed, if it did
        # The issuer's OpenID Connect discovery document, as last fetched (with discovery).
        self.metadata: dict[str, Any] = {}
        self._session: aiohttp.ClientSession | None = None
        self._last_refetch = -math.inf
        self._refetch: asyncio.Task[bool] | None = None

    async def open(self) -> None:
        if self.provider.jwks_file is not None:
            return
        context: ssl.SSLContext | bool = True
        if self.provider.ca_file is not None:
            context = await asyncio.to_thread(
                ssl.create_default_context, cafile=str(self.provider.ca_file)
            )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=4, ssl=context),
            timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._refetch is not None:
            self._refetch.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def find(self, kid: str | None, alg: str) -> PyJWK | None:
        """The key for a token's `kid` and `alg`. A token without a `kid` gets the
        issuer's key for its algorithm only if there is exactly one."""
        if kid is None:
            fits = [key for (_, key_alg), key in self.keys.items() if key_alg == alg]
            return fits[0] if len(fits) == 1 else None
        return self.keys.get((kid, alg))

    async def find_after_refetch(self, kid: str | None, alg: str) -> PyJWK | None:
        """`find` once more after fetching the keys again, unless they were fetched for an
        unknown key less than REFETCH_INTERVAL_S ago; concurrent callers share one fetch."""
        if self._refetch is None:
            now = time.monotonic()
            if now - self._last_refetch < REFETCH_INTERVAL_S:
                return None
            self._last_refetch = now
            self._refetch = asyncio.get_running_loop().create_task(self.load())
            self._refetch.add_done_callback(self._refetched)
        await asyncio.shield(self._refetch)
        return self.find(kid, alg)

    def _refetched(self, _task: asyncio.Task[bool]) -> None:
        self._refetch = None

    async def load(self) -> bool:
        """Fetch the keys and keep them; on failure keep the ones there are and log why."""
        try:
            keys = index_keys(await self._fetch(), self.provider.algorithms)
        except KeyFetchError as exc:
            self.failure = str(exc)
            if self.loaded:
                log.warning(
                    "JWT issuer's keys could not be fetched again; the keys fetched before"
                    " keep working",
                    extra={"issuer": self.provider.issuer, "error": self.failure},
                )
            else:
                log.error(
                    "JWT issuer's keys could not be fetched: its tokens are refused and"
                    " /readyz says not ready until they are",
                    extra={"issuer": self.provider.issuer, "error": self.failure},
                )
            return False
        if not self.loaded or self.failure is not None or keys.keys() != self.keys.keys():
            log.info(
                "JWT issuer's keys fetched",
                extra={
                    "issuer": self.provider.issuer,
                    "kids": sorted({str(kid) for kid, _ in keys}),
                },
            )
        self.keys, self.loaded, self.failure = keys, True, None
        return True

    async def keep_fresh(self) -> None:
        """Forever: fetch the keys again every `refresh_s`, or sooner (backing off up to
        MAX_RETRY_S) while they are still missing."""
        retry_s = 1.0
        while True:
            if self.loaded:
                await asyncio.sleep(self.provider.refresh_s)
            else:
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, MAX_RETRY_S)
            await self.load()

    async def _fetch(self) -> Any:
        provider = self.provider
        if provider.jwks_file is not None:
            try:
                text = await asyncio.to_thread(provider.jwks_file.read_bytes)
            except OSError as exc:
                raise KeyFetchError(f"cannot read {provider.jwks_file}: {exc.strerror}") from None
            return _json(text, str(provider.jwks_file))
        url = provider.jwks_url
        if provider.discovery:
            document = await self._get_json(provider.discovery_url)
            if not isinstance(document, dict) or document.get("issuer") != provider.issuer:
                raise KeyFetchError(
                    f"{provider.discovery_url} does not name the issuer {provider.issuer}"
                )
            url = document.get("jwks_uri")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise KeyFetchError(f"{provider.discovery_url} has no http(s) jwks_uri")
            self.metadata = document
        assert url is not None
        return await self._get_json(url)

    async def _get_json(self, url: str) -> Any:
        assert self._session is not None, "IssuerKeys.open() was not awaited"
        headers = {"Accept": "application/json"}
        if self.provider.token_file is not None:
            try:
                token = await asyncio.to_thread(self.provider.token_file.read_text)
            except OSError as exc:
                raise KeyFetchError(
                    f"cannot read {self.provider.token_file}: {exc.strerror}"
                ) from None
            headers["Authorization"] = f"Bearer {token.strip()}"
        try:
            # No redirects: the keys come from the address configured or discovered.
            async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise KeyFetchError(f"{url} answered HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_any():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise KeyFetchError(f"{url} answered over {MAX_DOCUMENT_BYTES} bytes")
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError) as exc:
            raise KeyFetchError(f"{url} could not be reached: {exc!r}") from None
        return _json(bytes(body), url)


def _json(text: bytes, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise KeyFetchError(f"{where} does not hold JSON") from None
