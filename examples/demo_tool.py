"""A tiny ticketing API standing in for a real tool behind callgate.

It only answers callers that present the tool credential (`Authorization: Bearer
<DEMO_TOOL_TOKEN>`), which the gateway injects: agents never hold it.
Run alone with `python examples/demo_tool.py` (port 9090).
"""

from __future__ import annotations

import itertools
import os

from aiohttp import web

TICKETS = web.AppKey("tickets", dict)


def create_demo_tool(token: str) -> web.Application:
    @web.middleware
    async def require_credential(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"error": "missing or wrong tool credential"}, status=401)
        return await handler(request)

    app = web.Application(middlewares=[require_credential])
    app[TICKETS] = {}
    ids = itertools.count(1)

    async def list_tickets(request: web.Request) -> web.Response:
        return web.json_response({"tickets": list(request.app[TICKETS].values())})

    async def create_ticket(request: web.Request) -> web.Response:
        body = await request.json()
        ticket = {"id": next(ids), "title": str(body.get("title", "")), "status": "open"}
        request.app[TICKETS][ticket["id"]] = ticket
        return web.json_response(ticket, status=201)

    async def get_ticket(request: web.Request) -> web.Response:
        ticket = request.app[TICKETS].get(int(request.match_info["id"]))
        if ticket is None:
            return web.json_response({"error": "no such ticket"}, status=404)
        return web.json_response(ticket)

    async def delete_ticket(request: web.Request) -> web.Response:
        request.app[TICKETS].pop(int(request.match_info["id"]), None)
        return web.Response(status=204)

    app.router.add_get("/tickets", list_tickets)
    app.router.add_post("/tickets", create_ticket)
    app.router.add_get(r"/tickets/{id:\d+}", get_ticket)
    app.router.add_delete(r"/tickets/{id:\d+}", delete_ticket)
    return app


if __name__ == "__main__":
    web.run_app(
        create_demo_tool(os.environ.get("DEMO_TOOL_TOKEN", "demo-tool-secret")),
        host="127.0.0.1",
        port=9090,
    )
