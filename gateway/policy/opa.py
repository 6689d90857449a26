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
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import regorus
from opa_client import AsyncOpaClient
from opa_client.errors import DeleteDataError, DeletePolicyError, RegoParseError

from gateway.policy.decision import Decision, parse_decision
from gateway.policy.embedded import engine_message, reraise_interrupts
from gateway.policy.engine import PolicyError, PolicyLoadError
from gateway.policy.loader import PolicySet
from gateway.policy.rego_tests import find_tests

POLICY_ID_PREFIX = "callgate/"
QUERY = {"provenance": "true", "strict-builtin-errors": "true"}


def _client(url: str, timeout_s: float) -> AsyncOpaClient:
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
        self._open = asyncio.Event()  # cleared while a push is in progress
        self._open.set()

    @property
    def reads_files(self) -> bool:
        return self.push

    @property
    def version(self) -> str:
        return self._served.version if self._served is not None else self._revision

    async def _connected(self) -> AsyncOpaClient:
        if self._opa is None:
            opa = _client(self._url, self._timeout_s)
            await opa._init_session()  # the client's own pooled session (no public opener)
            self._opa = opa
        return self._opa

    async def _query(self, path: str, input_doc: dict[str, Any]) -> dict[str, Any]:
        opa = await self._connected()
        try:
            async with asyncio.timeout(self._timeout_s):
                answer: dict[str, Any] = await opa.query_rule(
                    input_doc, path.replace("/", "."), query_params=QUERY
                )
        except TimeoutError:
            raise PolicyError(f"OPA did not answer within {self._timeout_s}s") from None
        except aiohttp.ClientResponseError as exc:
            raise PolicyError(f"OPA answered {exc.status}: {exc.message}") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise PolicyError(f"OPA is unreachable: {exc}") from None
        return answer

    async def evaluate(self, input_doc: dict[str, Any]) -> Decision:
        await self._open.wait()
        answer = await self._query(self._decision, input_doc)
        if not self.push:
            self._revision = _revision(answer.get("provenance") or {})
        return parse_decision(answer.get("result"), self.version)

    async def activate(self, policy_set: PolicySet | None) -> None:
        if not self.push or policy_set is None:
            await self._check_bundle()
            return
        previous = self._served
        self._open.clear()
        try:
            problems = await self._sync(policy_set, previous)
            if not problems:
                problems = await self._failing_tests(policy_set)
            if problems:
                if previous is not None:
                    await self._sync(previous, policy_set)
                raise PolicyLoadError(problems)
            self._served = policy_set
        finally:
            self._open.set()

    async def _check_bundle(self) -> None:
        try:
            answer = await self._query(self._decision, {})
        except PolicyError as exc:
            raise PolicyLoadError([str(exc)]) from None
        if "result" not in answer:
            raise PolicyLoadError([f"OPA has no decision at data/{self._decision}"])
        self._revision = _revision(answer.get("provenance") or {})

    async def _sync(self, target: PolicySet, current: PolicySet | None) -> list[str]:
        """Make OPA hold `target`'s modules, tests and data; problems if it refuses any.
        `current` is what OPA holds now (None at start-up: whatever an earlier run left
        under the `callgate/` policy ids is removed)."""
        opa = await self._connected()
        problems: list[str] = []
        try:
            for rel, text in target.modules + target.tests:
                try:
                    await opa.update_policy_from_string(
                        text, POLICY_ID_PREFIX + rel, rego_compat=False
                    )
                except RegoParseError as exc:
                    problems += _compile_problems(rel, exc)
            if problems:
                return problems
            for key, value in target.data.items():
                await self._put_data(opa, key, value)
            kept = {POLICY_ID_PREFIX + rel for rel, _ in target.modules + target.tests}
            if current is None:
                held = await opa.get_policies_list()
                stale = [i for i in held if i.startswith(POLICY_ID_PREFIX) and i not in kept]
            else:
                stale = [POLICY_ID_PREFIX + rel for rel, _ in current.modules + current.tests]
                stale = [policy_id for policy_id in stale if policy_id not in kept]
            for policy_id in stale:
                with contextlib.suppress(DeletePolicyError):  # gone already (never pushed)
                    await opa.delete_policy(policy_id)
            for key in set(current.data if current else ()) - set(target.data):
                with contextlib.suppress(DeleteDataError):
                    await opa.delete_data(quote(key, safe=""))
        except (aiohttp.ClientError, TimeoutError) as exc:
            problems.append(f"OPA at {self._url} is unreachable: {exc}")
        except Exception as exc:  # the client's own errors
            problems.append(f"OPA refused the policy set: {exc}")
        return problems

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

    async def _failing_tests(self, policy_set: PolicySet) -> list[str]:
        problems = []
        for name, file in _test_names(policy_set):
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
        if self._opa is not None:
            await self._opa.close_connection()
            self._opa = None


def _test_names(policy_set: PolicySet) -> list[tuple[str, str]]:
    """(data.<package>.<test rule>, file) of the set's tests, found by parsing them (OPA
    evaluates them; a parse here needs no builtins)."""
    parser = regorus.Engine()
    try:
        for rel, text in policy_set.tests:
            try:
                parser.add_policy(rel, text)
            except BaseException as exc:
                reraise_interrupts(exc)
                raise PolicyLoadError([engine_message(exc)]) from None
        return [(test.name, test.file) for test in find_tests(parser, dict(policy_set.tests))]
    finally:
        parser = None  # freed on this thread (see embedded.build_engine)
