"""Helpers shared by the tests; fixtures stay in the conftest.py files.

- `gateway`: a gateway config (one tool, two agents, an allow-all policy), the agents'
  tokens and headers, the default policies, and a real upstream recording its paths.
- `process`: the gateway as a real `python -m gateway serve` process, and the CLI.
- `raw_http`: one request sent over a raw socket, byte for byte.
- `idempotency`: a counting tool and a gateway config with idempotency settings.
- `approvals`: a gateway with approvers and a parking policy, the approvers' API and
  page, a counting tool and a webhook receiver.
- `audit`: reading a gateway's audit log from its SQLite file.
- `audit_chain`: audit logs built and tampered with on real SQLite files.
- `mcp`: a gateway in front of an MCP tool, small MCP servers, JSON-RPC messages.
- `mcp_sdk`, `mcp_sdk_server`: the official MCP SDK's client, and its server as a process.
- `opa`: a real `opa` server, or a stand-in speaking its REST API.
- `fuzz`: the fuzz suite's Hypothesis profiles, recording upstream and checks.
- `config_check`: `callgate config check` on a container's config.
- `servers`: the real PostgreSQL and Redis servers, found or skipped (required in CI).
"""
