"""The admin API's own OpenAPI description (`admin-api.yaml`, beside this module in the
package; `docs/admin-api.yaml` links to it), served as JSON."""

from __future__ import annotations

import functools
import json
from importlib import resources

import yaml
from aiohttp import web


@functools.cache
def _openapi_json() -> bytes:
    text = resources.files("gateway.admin").joinpath("admin-api.yaml").read_text("utf-8")
    return json.dumps(yaml.safe_load(text), ensure_ascii=False).encode()


async def openapi(request: web.Request) -> web.Response:
    """No token: the description holds nothing secret (it ships in the package and the
    docs), and clients read it before they have a token, as they probe /healthz."""
    return web.Response(body=_openapi_json(), content_type="application/json")
