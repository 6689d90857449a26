"""The admin listener: one aiohttp application for approvers, operators and monitoring.

Every route is registered below and described in `admin-api.yaml`. Who may call what is
decided in `auth.py`; each other module holds the routes of one concern.
"""

from __future__ import annotations

from aiohttp import web

from gateway.admin import (
    actions,
    health,
    openapi,
    page,
    policies,
    sessions,
    sso,
    switches,
    tools,
)
from gateway.admin.auth import json_errors
from gateway.admin.ui_sessions import SESSIONS, Sessions
from gateway.services import SERVICES, Services


def create_admin_app(svc: Services) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[SERVICES] = svc
    app[SESSIONS] = Sessions.for_config(svc.config)
    router = app.router
    router.add_get("/api/v1/actions", actions.list_actions)
    router.add_get("/api/v1/actions/{id}", actions.show_action)
    router.add_post("/api/v1/actions/{id}/approve", actions.approve)
    router.add_post("/api/v1/actions/{id}/deny", actions.deny)
    router.add_get("/api/v1/openapi.json", openapi.openapi)
    router.add_get("/api/v1/sessions", sessions.list_sessions)
    router.add_get("/api/v1/switches", switches.list_switches)
    router.add_put("/api/v1/switches/{target}", switches.engage)
    router.add_delete("/api/v1/switches/{target}", switches.lift)
    router.add_get("/api/v1/tools/{tool}/changes", tools.list_changes)
    router.add_post("/api/v1/tools/{tool}/changes/{name}/accept", tools.accept)
    router.add_post("/api/v1/tools/{tool}/changes/{name}/reject", tools.reject)
    router.add_get("/api/v1/policies", policies.show_policies)
    router.add_post("/api/v1/policies/reload", policies.reload_policies)
    router.add_get("/ui", page.to_queue)
    router.add_get("/ui/", page.queue)
    router.add_get("/ui/sso/start", sso.start)
    router.add_get("/ui/sso/callback", sso.callback)
    router.add_get("/ui/login", page.login_form)
    router.add_post("/ui/login", page.login)
    router.add_post("/ui/logout", page.logout)
    router.add_get("/ui/pending", page.pending_rows)
    router.add_get("/ui/actions/{id}", page.action_page)
    router.add_post("/ui/actions/{id}/approve", page.approve)
    router.add_post("/ui/actions/{id}/deny", page.deny)
    router.add_post("/ui/tools/{tool}/changes/{name}/accept", page.accept_tool_change)
    router.add_post("/ui/tools/{tool}/changes/{name}/reject", page.reject_tool_change)
    router.add_static("/ui/static", page.STATIC)
    router.add_get("/metrics", health.metrics)
    router.add_get("/healthz", health.healthz)
    router.add_get("/readyz", health.readyz)
    return app
