"""The served policy set, and how it is replaced without ever breaking.

A candidate set is read from `policy.path`, compiled, and its Rego tests are run; only if
all of that succeeds does it replace the served set. Otherwise the last good set keeps
serving, and the failure is logged, audited (with the compiler's or the test's message),
counted, and shown on `/readyz` and `GET /api/v1/policies`. Reloads come from file
changes (watchfiles), SIGHUP and `POST /api/v1/policies/reload`; one runs at a time.

Each call is decided by one set: the embedded engine swaps sets in one assignment on the
event loop, between two decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import watchfiles

from gateway.audit.events import event, now
from gateway.observability.metrics import Metrics
from gateway.policy.decision import Decision
from gateway.policy.engine import PolicyEngine
from gateway.policy.errors import PolicyLoadError
from gateway.policy.loader import PolicySet, read_policy_dir
from gateway.policy.rego_tests import named_tests

log = logging.getLogger(__name__)

WATCH_DEBOUNCE_MS = 300  # editors save in several steps; wait for the last one
WATCH_RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class Served:
    policy_version: str
    files: tuple[str, ...]
    tests: int
    loaded_at: str
    trigger: str  # start | watch | signal | api | bundle
    by: str
    tests_version: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.policy_version,
            "files": list(self.files),
            "tests": self.tests,
            "loaded_at": self.loaded_at,
            "trigger": self.trigger,
            "by": self.by,
        }


@dataclass(frozen=True, slots=True)
class Failure:
    at: str
    trigger: str
    by: str
    problems: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "trigger": self.trigger,
            "by": self.by,
            "problems": list(self.problems),
        }


def _worth_a_look(change: watchfiles.Change, path: str) -> bool:
    """Any change but to hidden and backup files: a folder moved in or out is one event
    with no policy suffix. A change that leaves the set as it is costs one read.

    Only the last name counts: a ConfigMap volume is updated inside hidden folders (the
    kubelet writes `..<time>/gateway.rego` and swaps `..data`), and those files are seen."""
    name = Path(path).name
    return not (name.startswith(".") or name.endswith("~"))


class Policies:
    """The policy engine with the set it serves, its history and its reloads."""

    def __init__(
        self, path: Path, engine: PolicyEngine, metrics: Metrics, role: str = "enforced"
    ) -> None:
        self.path = path
        self.role = role  # enforced | shadow (evaluated, never enforced)
        self.engine = engine
        self.metrics = metrics
        self.served: Served | None = None
        self.last_failure: Failure | None = None
        self.record: Callable[[dict[str, Any]], None] | None = None  # the audit log's append
        self._lock = asyncio.Lock()

    @property
    def policy_version(self) -> str:
        return self.engine.policy_version

    async def decide(self, input_doc: dict[str, Any]) -> Decision:
        decision = await self.engine.evaluate(input_doc)
        served = self.served
        if (
            not self.engine.reads_files
            and served
            and decision.policy_version != served.policy_version
        ):
            self._served(None, "bundle", "opa")  # OPA activated another bundle revision
        return decision

    def read(self) -> PolicySet:
        return read_policy_dir(self.path)

    async def reload(self, trigger: str, by: str) -> bool:
        """Serve the set now in `path` if it compiles and its tests pass. True when a new
        version (or new tests) is served, False when it was served already; raises
        PolicyLoadError (after recording it) when the set is refused.

        A file change that leaves the served set as it is does nothing; an explicit reload
        (API, SIGHUP) always activates the set again, which re-pushes it to an OPA that
        restarted and lost it."""
        async with self._lock:
            served = self.served
            try:
                candidate = self.read() if self.engine.reads_files else None
                same = (
                    served is not None
                    and candidate is not None
                    and (
                        (candidate.policy_version, candidate.tests_version)
                        == (served.policy_version, served.tests_version)
                    )
                )
                if not (same and trigger == "watch"):
                    await self.engine.activate(candidate)
            except PolicyLoadError as exc:
                self._refused(exc.problems, trigger, by)
                raise
            except Exception as exc:  # a bug, or a failure nobody foresaw: refused too
                log.exception("policy load failed unexpectedly")
                problems = [f"{self.path}: the set could not be loaded: {exc!r}"]
                self._refused(problems, trigger, by)
                raise PolicyLoadError(problems) from None
            tests_version = candidate.tests_version if candidate else ""
            if served is not None and (self.engine.policy_version, tests_version) == (
                served.policy_version,
                served.tests_version,
            ):
                self.metrics.policy_reloads.labels(self.role, "unchanged").inc()
                self.metrics.policy_reload_failing.labels(self.role).set(0)
                return False
            self._served(candidate, trigger, by)
            return True

    async def try_reload(self, trigger: str, by: str) -> None:
        """reload() where nobody waits for the answer: a refusal is recorded, and the
        last good set serves on."""
        with contextlib.suppress(PolicyLoadError):
            await self.reload(trigger, by)

    def _served(self, policy_set: PolicySet | None, trigger: str, by: str) -> None:
        previous = self.served.policy_version if self.served else None
        files, tests = (policy_set.files, len(named_tests(policy_set))) if policy_set else ((), 0)
        self.served = Served(
            self.engine.policy_version,
            files,
            tests,
            now(),
            trigger,
            by,
            policy_set.tests_version if policy_set else "",
        )
        if self.role == "enforced":
            self.metrics.policy_loaded.set(1)
        self.metrics.policy_reload_failing.labels(self.role).set(0)
        self.metrics.policy_reloads.labels(self.role, "loaded").inc()
        log.info(
            "policy loaded",
            extra={
                "policy_version": self.served.policy_version,
                "set": self.role,
                "trigger": trigger,
                "by": by,
            },
        )
        if self.record is not None:
            self.record(
                event(
                    "policy_loaded",
                    set=self.role,
                    policy_version=self.served.policy_version,
                    previous_version=previous,
                    path=str(self.path),
                    trigger=trigger,
                    by=by,
                )
            )

    def _refused(self, problems: list[str], trigger: str, by: str) -> None:
        self.last_failure = Failure(now(), trigger, by, tuple(problems))
        self.metrics.policy_reloads.labels(self.role, "failed").inc()
        self.metrics.policy_reload_failing.labels(self.role).set(1)
        serving = self.served.policy_version if self.served else None
        log.error(
            "policy reload refused; the last good set keeps serving",
            extra={
                "set": self.role,
                "trigger": trigger,
                "by": by,
                "problems": problems,
                "serving": serving,
            },
        )
        if self.record is not None:
            self.record(
                event(
                    "policy_load_failed",
                    set=self.role,
                    path=str(self.path),
                    trigger=trigger,
                    by=by,
                    problems=list(problems),
                    serving_version=serving,
                )
            )

    async def watch_forever(self) -> None:
        """Reload whenever a policy or data file under `path` changes."""
        if not self.engine.reads_files:
            return  # OPA loads its own bundles
        while True:
            try:
                async for _changes in watchfiles.awatch(
                    self.path, watch_filter=_worth_a_look, debounce=WATCH_DEBOUNCE_MS
                ):
                    await self.try_reload("watch", "file change")
            except Exception as exc:  # the folder is gone or unreadable: look again later
                log.error("cannot watch the policy folder", extra={"error": repr(exc)})
            await asyncio.sleep(WATCH_RETRY_S)

    def status(self) -> dict[str, Any]:
        return {
            "set": self.role,
            "engine": self.engine.name,
            "path": str(self.path),
            "served": self.served.as_json() if self.served else None,
            "last_failure": self.last_failure.as_json() if self.last_failure else None,
        }
