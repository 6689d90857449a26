"""The gateway as a real `python -m gateway serve` process, for crash and restart tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.gateway import AGENT_TOKEN, ALLOW_ALL_REGO, sha


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until_up(url: str, ended: Callable[[], str | None], timeout_s: float = 20) -> None:
    """Until GET `url` answers 200. `ended` says why the process serving it is gone (its
    log, say), or None while it runs: then this fails at once with that."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout_s):
        while True:
            why = ended()
            assert why is None, why
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


class Gateway:
    """`python -m gateway serve` on fresh ports, with the allow-all policy."""

    def __init__(
        self,
        tmp_path: Path,
        upstream: str,
        *,
        rego: str = ALLOW_ALL_REGO,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.port, self.admin_port = free_port(), free_port()
        policies = tmp_path / "policies"
        policies.mkdir(exist_ok=True)
        (policies / "gateway.rego").write_text(rego)
        self.config = tmp_path / "callgate.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "listen": {"port": self.port},
                    "admin": {"port": self.admin_port},
                    "policy": {"path": "policies"},
                    "agents": [
                        {"id": "bot", "token_sha256": sha(AGENT_TOKEN), "roles": ["caller"]}
                    ],
                    "tools": [{"name": "echo", "upstream": upstream, "timeout_s": 5}],
                    **(extra or {}),
                }
            )
        )
        self.audit_file = tmp_path / "callgate-data" / "audit.db"
        self.log = tmp_path / "gateway.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *args: str, log_to_file: bool = True) -> None:
        """`args` are added to `serve`'s (`--workers 2`, say)."""
        output = self.log.open("ab") if log_to_file else None
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(self.config),
            *args,
            stdout=output or asyncio.subprocess.DEVNULL,
            stderr=output or asyncio.subprocess.DEVNULL,
            env={**os.environ, "RUST_LIB_BACKTRACE": "0"},
        )
        if output:
            output.close()
        proc = self.proc
        await wait_until_up(
            f"http://127.0.0.1:{self.admin_port}/readyz",
            lambda: None if proc.returncode is None else self.log.read_text(errors="replace"),
        )

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(20):
            return await self.proc.wait()


async def cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def approver_cli(*args: str, token: str | None) -> tuple[int, str, str]:
    """`callgate *args` as an approver with `token` (CALLGATE_APPROVER_TOKEN; None: no
    token), none of the test run's other CALLGATE_ settings passed on: (status, stdout,
    stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    if token is not None:
        env["CALLGATE_APPROVER_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
