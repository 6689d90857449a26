"""MCP servers behind the gateway (Streamable HTTP): the JSON-RPC message of a call, what
the policy sees of it, refusals the model can read, and `tools/list` filtered per agent."""
