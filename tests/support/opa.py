"""OPA servers for the OPA engine's tests.

- `RealOpa`: the `opa` binary (on PATH, or CALLGATE_OPA_BIN), run as `opa run --server` on
  127.0.0.1. Release checks run the tests against OPA 1.9.
- `StandIn`: a small aiohttp app speaking the part of OPA's REST API the engine uses
  (policies, data, decisions with provenance and strict builtin errors), evaluating with
  regorus. It stands in for the third-party server where no binary is installed, and can
  be made slow or broken, which a real OPA cannot be on demand.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import regorus
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.policy.regorus_engine import engine_message
from tests.support.process import free_port, wait_until_up


def opa_binary() -> str | None:
    return os.environ.get("CALLGATE_OPA_BIN") or shutil.which("opa")


class RealOpa:
    def __init__(self, tmp_path: Path, bundle: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"opa-{self.port}.log"
        self.bundle = bundle
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        binary = opa_binary()
        assert binary is not None
        argv = [binary, "run", "--server", "--addr", f"127.0.0.1:{self.port}"]
        if self.bundle is not None:
            argv += ["--bundle", str(self.bundle)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        proc = self.proc
        await wait_until_up(
            f"{self.url}/health",
            lambda: None if proc.poll() is None else self.log.read_text(errors="replace"),
        )

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class StandIn:
    def __init__(self, revision: str | None = None) -> None:
        self.modules: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.revision = revision  # reported as bundle "main" in provenance, like OPA
        self.delay_s = 0.0  # before each decision
        self.push_delay_s = 0.0  # before each policy upload
        self.decisions = 0
        self.server: TestServer | None = None
        self.url = ""

    def _engine(self, modules: dict[str, str]) -> Any:
        engine = regorus.Engine()
        for name, text in modules.items():
            engine.add_policy(name, text)
        engine.add_data(self.data)
        return engine

    async def put_policy(self, request: web.Request) -> web.Response:
        name, text = request.match_info["id"], await request.text()
        await asyncio.sleep(self.push_delay_s)
        try:
            self._engine({**self.modules, name: text})
        except Exception as exc:
            message = engine_message(exc)
            row = int(message.split(":")[1]) if message.startswith(f"{name}:") else 1
            return web.json_response(
                {
                    "code": "invalid_parameter",
                    "message": "error(s) occurred while compiling module(s)",
                    "errors": [
                        {
                            "code": "rego_parse_error",
                            "message": message.split(": ", 1)[-1],
                            "location": {"file": name, "row": row, "col": 1},
                        }
                    ],
                },
                status=400,
            )
        self.modules[name] = text
        return web.json_response({})

    async def list_policies(self, request: web.Request) -> web.Response:
        return web.json_response({"result": [{"id": name} for name in self.modules]})

    async def get_policy(self, request: web.Request) -> web.Response:
        name = request.match_info["id"]
        if name not in self.modules:
            return web.json_response({"code": "resource_not_found"}, status=404)
        return web.json_response({"result": {"id": name, "raw": self.modules[name]}})

    async def delete_policy(self, request: web.Request) -> web.Response:
        if self.modules.pop(request.match_info["id"], None) is None:
            return web.json_response({"code": "resource_not_found"}, status=404)
        return web.json_response({})

    async def put_data(self, request: web.Request) -> web.Response:
        self.data[request.match_info["path"]] = json.loads(await request.text())
        return web.Response(status=204)

    async def delete_data(self, request: web.Request) -> web.Response:
        if self.data.pop(request.match_info["path"], None) is None:
            return web.json_response({"code": "resource_not_found"}, status=404)
        return web.Response(status=204)

    async def decide(self, request: web.Request) -> web.Response:
        self.decisions += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        assert request.query.get("strict-builtin-errors") == "true"
        body = await request.json()
        try:
            engine = self._engine(self.modules)
            engine.set_input(body.get("input") or {})
            value = engine.eval_rule("data." + request.match_info["path"].replace("/", "."))
        except Exception as exc:
            if "not a valid rule path" in str(exc):
                value = None  # OPA: an undefined document is 200 with no result
            else:
                return web.json_response(
                    {"code": "internal_error", "message": engine_message(exc)}, status=500
                )
        answer: dict[str, Any] = {} if value is None else {"result": value}
        if request.query.get("provenance") == "true":
            bundles = {"main": {"revision": self.revision}} if self.revision else {}
            answer["provenance"] = {"version": "stand-in", "bundles": bundles}
        return web.json_response(answer)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/policies/", self.list_policies)
        app.router.add_get("/v1/policies/{id:.+}", self.get_policy)
        app.router.add_put("/v1/policies/{id:.+}", self.put_policy)
        app.router.add_delete("/v1/policies/{id:.+}", self.delete_policy)
        app.router.add_put("/v1/data/{path:.+}", self.put_data)
        app.router.add_delete("/v1/data/{path:.+}", self.delete_data)
        app.router.add_post("/v1/data/{path:.+}", self.decide)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self.url = str(self.server.make_url("")).rstrip("/")

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
