from aiohttp import web

from tests.support.gateway import TOOL_SECRET, auth


async def test_allowed_call_reaches_upstream_with_tool_credentials(start_upstream, start_gateway):
    seen = {}

    async def handler(request: web.Request) -> web.Response:
        seen["auth"] = request.headers.get("Authorization")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/thing", handler)
    gw = await start_gateway(await start_upstream(app))
    resp = await gw.get("/tools/echo/thing", headers=auth())
    assert resp.status == 200
    assert await resp.json() == {"ok": True}
    assert seen["auth"] == f"Bearer {TOOL_SECRET}"
    assert resp.headers["X-Request-Id"]
