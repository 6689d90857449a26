"""Keeping a lease in the store alive while work runs: an idempotency claim while its call
is sent, an approved action while it executes. Another gateway takes over only a lease
that ran out, so a slow call must not look like a dead one's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 3  # a renewal that fails is tried again well within the lease


@contextlib.asynccontextmanager
async def renewed(
    renew: Callable[[], Awaitable[bool]], lease_s: float, what: str, ids: dict[str, Any]
) -> AsyncIterator[None]:
    """While the body runs, call `renew` a few times per `lease_s`; stop once it answers
    False (the lease is no longer ours). `what` names the lease in the logs."""

    async def keep() -> None:
        while True:
            await asyncio.sleep(lease_s / RENEWALS_PER_LEASE)
            try:
                if not await renew():
                    log.error(f"{what} lost while the call ran", extra=ids)
                    return
            except Exception:
                log.exception(f"cannot renew an {what}", extra=ids)

    renewing = asyncio.get_running_loop().create_task(keep())
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
