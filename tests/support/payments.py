"""A small payments API (described by tests/data/payments.yaml) as a real upstream for the
typed-tools tests: it keeps the refunds it is asked to make and records every request.

It answers as its document says, unless the call's `answer` query parameter (not in the
document, so the gateway passes it on) asks for a wrong answer: `broken` (a JSON body
missing required fields), `undocumented` (a 500 in text), `gzip` (the right body,
gzip-encoded), `gzip-broken` (a wrong body, gzip-encoded), `html` (a documented status in
HTML), `drop` (the start of a JSON answer, then the connection closed).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from aiohttp import web

SPEC = "tests/data/payments.yaml"


class Payments:
    def __init__(self) -> None:
        self.refunds: dict[str, dict[str, Any]] = {}
        self.seen: list[tuple[str, str]] = []  # (method, path and query) as received

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._misbehave])
        routes = web.RouteTableDef()

        @routes.get("/api/v1/refunds")
        async def list_refunds(request: web.Request) -> web.Response:
            return web.json_response({"data": list(self.refunds.values())})

        @routes.post("/api/v1/refunds")
        async def create_refund(request: web.Request) -> web.Response:
            body = await request.json()
            refund = {
                "id": f"re_{len(self.refunds) + 1}",
                "amount": body.get("amount"),
                "currency": body.get("currency"),
                "status": "pending",
                "reason": body.get("reason"),
            }
            self.refunds[refund["id"]] = refund
            return web.json_response(refund, status=201)

        @routes.get("/api/v1/refunds/search")
        async def search(request: web.Request) -> web.Response:
            q = request.query.get("q", "")
            found = [r for r in self.refunds.values() if q in (r["reason"] or "")]
            return web.json_response({"data": found})

        @routes.get("/api/v1/refunds/{refund_id}")
        async def get_refund(request: web.Request) -> web.Response:
            refund = self.refunds.get(request.match_info["refund_id"])
            if refund is None:
                return web.json_response({"error": "no such refund"}, status=404)
            return web.json_response(refund)

        @routes.delete("/api/v1/refunds/{refund_id}")
        async def cancel(request: web.Request) -> web.Response:
            self.refunds.pop(request.match_info["refund_id"], None)
            return web.Response(status=204)

        @routes.get("/api/v1/customers/{customer}/cards/{last4}")
        async def card(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "customer": request.match_info["customer"],
                    "last4": int(request.match_info["last4"]),
                }
            )

        @routes.get("/api/v1/{resource}/{id}")
        async def anything(request: web.Request) -> web.Response:
            return web.json_response({"resource": request.match_info["resource"]})

        app.add_routes(routes)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append((request.method, request.raw_path))
        return await handler(request)

    @web.middleware
    async def _misbehave(self, request: web.Request, handler: Any) -> web.StreamResponse:
        wanted = request.query.get("answer")
        if wanted == "broken":
            await request.read()
            return web.json_response(
                {"id": "re_x"}, status=201 if request.method == "POST" else 200
            )
        if wanted == "undocumented":
            return web.Response(status=500, text="internal trouble")
        if wanted == "drop":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = 100
            await response.prepare(request)
            await response.write(b'{"data": [')
            assert request.transport is not None
            request.transport.close()
            return response
        if wanted == "html":
            return web.Response(text="<p>refunds</p>", content_type="text/html")
        if wanted in ("gzip", "gzip-broken"):
            response = await handler(request)
            assert isinstance(response, web.Response) and response.body is not None
            body = bytes(response.body)
            if wanted == "gzip-broken":
                body = json.dumps({"data": [{"id": 7}]}).encode()
            return web.Response(
                body=gzip.compress(body),
                status=response.status,
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
        return await handler(request)
