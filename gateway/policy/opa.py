"""The OPA sidecar engine: decisions by an Open Policy Agent server over its REST API.

Each decision is `POST /v1/data/<policy.decision>` through opa-python-client's async
client (one pooled aiohttp session), bounded by `policy.opa_timeout_s`, with
`strict-builtin-errors` so a builtin error is an error, as in the embedded engine. Any
failure (timeout, refused connection, an OPA error) is a PolicyError: the call fails
closed with 503, exactly as with the embedded engine.

Two ways to own the policies:
- `policy.opa_push: true` (default): the gateway pushes its policy folder to OPA
  (`PUT /v1/policies/callgate/<file>` for modules and Rego tests, `PUT /v1/data/<key>` for
  data), runs the set's `test_*` rules on OPA, and rolls OPA back to the previous set
  when a module does not compile or a test fails. The version is the folder's hash.
  Decisions of this gateway wait while a push is in progress, so each is made by exactly
  one set. (Other clients of the same OPA may see a set being pushed.)
- `policy.opa_push: false`: OPA loads its own bundles; the gateway pushes nothing and the
  version is the bundle revision OPA reports with each decision (`provenance`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from gateway.policy.decision import Decision, parse_decision
from gateway.policy.errors import PolicyError, PolicyLoadError
from gateway.policy.loader import PolicySet
from gateway.policy.rego_tests import named_tests

try:  # the `opa` extra: a plain install serves with the embedded engine only
    from opa_client import AsyncOpaClient
    from opa_client.errors import (
        DeleteDataError,
        DeletePolicyError,
        PolicyNotFoundError,
        RegoParseError,
    )
except ModuleNotFoundError as missing:
    raise PolicyLoadError(
        [
            "policy.engine: opa needs the OPA client, which is not installed: "
            "pip install 'callgate[opa]'"
        ]
    ) from missing

POLICY_ID_PREFIX = "callgate/"
PUSH_TIMEOUT_S = 30.0  # each request of a push, and of a test run on OPA
PUSH_WAIT_S = 5.0  # the longest a decision waits for a push to end (then 503)

log = logging.getLogger(__name__)
QUERY = {"provenance": "true", "strict-builtin-errors": "true"}


def _client(url: str, timeout_s: float) -> AsyncOpaClient:
    """One pooled session; decisions are bounded by their own timeout, shorter."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"policy.opa_url must be http(s)://host:port, not {url!r}")
    return AsyncOpaClient(
        host=parts.hostname,
        port=parts.port or (443 if parts.scheme == "https" else 8181),
        ssl=parts.scheme == "https",
        retries=0,  # a retry would outlast the decision's timeout; the call fails closed
        timeout=timeout_s,
    )


def _compile_problems(rel: str, exc: RegoParseError) -> list[str]:
    problems = []
    for error in exc.errors:
        location = error.get("location") or {}
        where = f"{rel}:{location['row']}" if "row" in location else rel
        problems.append(f"{where}: {error.get('message', 'does not compile')}")
    return problems or [f"{rel}: {exc.message}"]


def _revision(provenance: dict[str, Any]) -> str:
    bundles = provenance.get("bundles") or {}
    revisions = [f"{name}@{info.get('revision', '')}" for name, info in sorted(bundles.items())]
    return ",".join(revisions) or "opa:no-bundle"


class OpaEngine:
    name = "opa"

    def __init__(
        self, url: str, decision: str, *, timeout_s: float = 0.5, push: bool = True
    ) -> None:
        self._url = url
        self._decision = decision  # gateway/decision
        self._timeout_s = timeout_s
        self.push = push
        self._opa: AsyncOpaClient | None = None
        self._served: PolicySet | None = None
        self._revision = ""
        self._broken = ""  # why OPA's set is unknown (a failed rollback); decisions fail
        # The gate: decisions run while it is open; a push closes it, waits for the
        # decisions already sent to OPA, and opens it when OPA holds one whole set again.
        self._open = asyncio.Event()
        self._open.set()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._repush: asyncio.Task[None] | None = None
        self._pushing = asyncio.Lock()

    @property
    def reads_files(self) -> bool:
        return self.push

    @property
    def policy_version(self) -> str:
        return self._served.policy_version if self._served is not None else self._revision

    async def _connected(self) -> AsyncOpaClient:
        if self._opa is None:
            opa = _client(self._url, max(self._timeout_s, PUSH_TIMEOUT_S))
            await opa._init_session()  # the client's own pooled session (no public opener)
            self._opa = opa
        return self._opa

    async def _query(self, path: str, input_doc: dict[str, Any]) -> dict[str, Any]:
        opa = await self._connected()
        try:
            answer: dict[str, Any] = await opa.query_rule(
                input_doc, path.replace("/", "."), query_params=QUERY
            )
        except aiohttp.ClientResponseError as exc:
            raise PolicyError(f"OPA answered {exc.status}: {exc.message}") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise PolicyError(f"OPA is unreachable: {exc!r}") from None
        return answer

    async def evaluate(self, input_doc: dict[str, Any]) -> Decision:
        try:
            async with asyncio.timeout(PUSH_WAIT_S):
                while not self._open.is_set():  # woken at a push's end, another may begin
                    await self._open.wait()
        except TimeoutError:
            raise PolicyError(f"a policy push to OPA took over {PUSH_WAIT_S}s") from None
        if self._broken:
            raise PolicyError(self._broken)
        version = self.policy_version  # of the set OPA holds while this decision runs
        self._in_flight += 1  # no await since the gate was seen open: no push has begun
        self._idle.clear()
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await self._query(self._decision, input_doc)
                lost = self.push and "result" not in answer and not await self._holds_served()
        except TimeoutError:
            raise PolicyError(f"OPA did not decide within {self._timeout_s}s") from None
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        if not self.push:
            self._revision = version = _revision(answer.get("provenance") or {})
        elif lost:
            # OPA no longer holds the pushed set (a restart): push it again in the
            # background; this call fails closed. An undefined decision of a set OPA does
            # hold is a deny, as with the embedded engine.
            self._push_again()
            raise PolicyError("OPA lost the pushed policy set; pushing it again")
        return parse_decision(answer.get("result"), version)

    async def _holds_served(self) -> bool:
        """Whether OPA still holds the pushed set. It loses all of it at once (a restart),
        so one module tells."""
        served = self._served
        if served is None:
            return False
        if not served.modules:
            return True  # nothing to lose: no module defines the decision
        try:
            await (await self._connected()).get_policy(POLICY_ID_PREFIX + served.modules[0][0])
        except PolicyNotFoundError as exc:  # any answer but 200, with OPA's error code
            if exc.expression == "resource_not_found":
                return False
            raise PolicyError(f"OPA answered {exc.expression}: {exc.message}") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise PolicyError(f"OPA is unreachable: {exc!r}") from None
        return True

    def _push_again(self) -> None:
        if self._served is None or (self._repush is not None and not self._repush.done()):
            return

        async def push() -> None:
            try:
                async with self._closed_gate():
                    served = self._served  # a reload may have pushed another set meanwhile
                    if served is None:
                        return
                    problems = await self._sync(served, None)
                if problems:
                    log.error(
                        "pushing the policy set to OPA again failed", extra={"problems": problems}
                    )
            except Exception:
                log.exception("pushing the policy set to OPA again failed")

        self._repush = asyncio.get_running_loop().create_task(push())

    @contextlib.asynccontextmanager
    async def _closed_gate(self) -> AsyncIterator[None]:
        """One push at a time, with no decision running: the gate opens only when OPA
        holds one whole set again."""
        async with self._pushing:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()

    async def activate(self, policy_set: PolicySet | None) -> None:
        if not self.push or policy_set is None:
            await self._check_bundle()
            return
        tests = named_tests(policy_set)  # before anything is pushed: a parse error stops here
        previous = self._served
        async with self._closed_gate():
            problems = await self._sync(policy_set, previous)
            if not problems:
                problems = await self._failing_tests(tests)
            if not problems:
                self._served, self._broken = policy_set, ""
                return
            if previous is not None:
                undone = await self._sync(previous, policy_set)
                if undone:
                    self._broken = (
                        "OPA holds a policy set this gateway could not put back after a "
                        "refused reload; reload again: " + "; ".join(undone)
                    )
                    problems += [f"putting the previous set back failed: {p}" for p in undone]
            raise PolicyLoadError(problems)

    async def _check_bundle(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await self._query(self._decision, {})
        except TimeoutError:
            raise PolicyLoadError([f"OPA did not answer within {self._timeout_s}s"]) from None
        except PolicyError as exc:
            raise PolicyLoadError([str(exc)]) from None
        if "result" not in answer:
            raise PolicyLoadError([f"OPA has no decision at data/{self._decision}"])
        self._revision = _revision(answer.get("provenance") or {})

    async def _sync(self, target: PolicySet, current: PolicySet | None) -> list[str]:
        """Make OPA hold `target`'s modules, tests and data; problems if it refuses any.
        `current` is what OPA holds now (None: whatever is under the `callgate/` policy
        ids, left by an earlier run or a lost push). Stale modules go first (a renamed
        file would clash with its old copy); modules that need another one not yet
        pushed are tried again until no more go in."""
        opa = await self._connected()
        modules = {
            POLICY_ID_PREFIX + rel: (rel, text) for rel, text in target.modules + target.tests
        }
        try:
            if current is None:
                held = await opa.get_policies_list()
                stale = [i for i in held if i.startswith(POLICY_ID_PREFIX) and i not in modules]
            else:
                stale = [POLICY_ID_PREFIX + rel for rel, _ in current.modules + current.tests]
                stale = [policy_id for policy_id in stale if policy_id not in modules]
            for policy_id in stale:
                with contextlib.suppress(DeletePolicyError):  # gone already
                    await opa.delete_policy(policy_id)
            for key in set(current.data if current else ()) - set(target.data):
                with contextlib.suppress(DeleteDataError):
                    await opa.delete_data(quote(key, safe=""))
            for key, value in target.data.items():
                await self._put_data(opa, key, value)
            waiting = dict(modules)
            problems: dict[str, list[str]] = {}
            while waiting:
                problems = {}
                for policy_id, (rel, text) in waiting.items():
                    try:
                        await opa.update_policy_from_string(text, policy_id, rego_compat=False)
                    except RegoParseError as exc:
                        problems[policy_id] = _compile_problems(rel, exc)
                if len(problems) == len(waiting):
                    break  # no progress: these do not compile
                waiting = {i: waiting[i] for i in problems}
            return [line for lines in problems.values() for line in lines]
        except (aiohttp.ClientError, TimeoutError) as exc:
            return [f"OPA at {self._url} is unreachable: {exc!r}"]
        except Exception as exc:  # the client's own errors
            return [f"OPA refused the policy set: {exc!r}"]

    @staticmethod
    async def _put_data(opa: AsyncOpaClient, key: str, value: Any) -> None:
        if isinstance(value, dict):
            await opa.update_or_create_data(value, quote(key, safe=""))
            return
        # The client only writes objects; a top-level scalar or array goes through its
        # session, as the client itself would send it.
        async with opa._request(
            "PUT", f"{opa.root_url}/data/{quote(key, safe='')}", json=value
        ) as response:
            response.raise_for_status()

    async def _failing_tests(self, tests: list[tuple[str, str]]) -> list[str]:
        problems = []
        for name, file in tests:
            try:
                answer = await self._query(name.removeprefix("data.").replace(".", "/"), {})
            except PolicyError as exc:
                problems.append(f"{file}: {name} errored: {exc}")
                continue
            if answer.get("result") is not True:
                shown = json.dumps(answer["result"]) if "result" in answer else "undefined"
                problems.append(f"{file}: {name} failed: evaluated to {shown}")
        return problems

    async def close(self) -> None:
        if self._repush is not None:
            self._repush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repush
        if self._opa is not None:
            await self._opa.close_connection()
            self._opa = None
