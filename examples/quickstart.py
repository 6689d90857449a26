"""Start the demo tool (127.0.0.1:9090) and callgate in front of it (8080 / admin 8081).

    python examples/quickstart.py

Then call the tool through the gateway with the curl lines it prints. Ctrl-C stops both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from demo_tool import create_demo_tool  # noqa: E402

from gateway.config import ConfigError, load_config  # noqa: E402
from gateway.observability.logs import configure_logging  # noqa: E402
from gateway.serve import run, serve_until_stopped  # noqa: E402

GUIDE = """
callgate is running: agents call http://127.0.0.1:8080/tools/<tool>/<path>
  admin: http://127.0.0.1:8081/metrics  /healthz  /readyz

Try, from another terminal:
  AGENT='Authorization: Bearer demo-support-token'
  # allowed: support-bot may create and read tickets
  curl -si -X POST http://127.0.0.1:8080/tools/demo/tickets -H "$AGENT" \\
       -H 'Content-Type: application/json' -d '{"title": "printer on fire"}'
  curl -si http://127.0.0.1:8080/tools/demo/tickets -H "$AGENT"
  # denied by policy (403 policy_denied, with the reason)
  curl -s -X DELETE http://127.0.0.1:8080/tools/demo/tickets/1 -H "$AGENT"
  # unknown token (401) and unknown tool (404)
  curl -s http://127.0.0.1:8080/tools/demo/tickets -H 'Authorization: Bearer wrong'
  curl -s http://127.0.0.1:8080/tools/payments/refunds -H "$AGENT"
  # the audit log of all of it, and its hash chain
  .venv/bin/callgate audit tail --config examples/callgate.yaml
  .venv/bin/callgate audit verify --config examples/callgate.yaml
"""


async def main() -> None:
    os.environ.setdefault("DEMO_TOOL_TOKEN", "demo-tool-secret")
    try:
        config = load_config(HERE / "callgate.yaml")
    except ConfigError as exc:
        sys.exit(f"examples/callgate.yaml: {exc}")
    runner = web.AppRunner(create_demo_tool(os.environ["DEMO_TOOL_TOKEN"]), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 9090).start()

    async def show_guide() -> None:
        print(GUIDE, flush=True)

    try:
        await serve_until_stopped(config, started=show_guide)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    configure_logging("INFO")
    run(main())
