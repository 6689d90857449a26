# Example: a read-only research phase.
#
# Agents start every session read-only: GET and HEAD calls (data `read_methods`) go
# through, anything that could change something is refused, until an operator promotes
# the session by adding it to data `promoted_sessions` under the agent's id. The session
# is the X-Agent-Session header (input.context.session). Sessions are listed per agent
# because the header is chosen by the agent: promoting "sess-42" for one agent must not
# let another agent that sends the same header write.
#
# For MCP tools every call is an HTTP POST; the JSON-RPC methods in data
# `read_mcp_methods` (listing tools, reading resources) count as reads.
#
# Adopt with `policy.decision: examples/research_phase/decision` in callgate.yaml.
package examples.research_phase

import rego.v1

default decision := {"allow": false, "reason": "no rule of the research_phase policy allowed this call"}

decision := {
	"allow": true,
	"reason": sprintf("session %s of agent %s is promoted past the research phase", [session, input.agent.id]),
	"tags": {"phase": "promoted"},
} if {
	promoted
} else := {
	"allow": false,
	"reason": sprintf("the %s header is not allowed; send the request with its real HTTP method", [min(override_headers)]),
	"tags": {"phase": "research"},
} if {
	count(override_headers) > 0
} else := {
	"allow": true,
	"reason": sprintf("research phase: %s is a read", [input.request.method]),
	"tags": {"phase": "research"},
} if {
	input.request.method in allowed_reads
} else := {
	"allow": true,
	"reason": sprintf("research phase: MCP %s is a read", [input.mcp.method]),
	"tags": {"phase": "research"},
} if {
	input.tool.kind == "mcp"
	input.mcp.method in data.examples.research_phase.read_mcp_methods
} else := {
	"allow": false,
	"reason": sprintf("this agent is in its read-only research phase: only %s calls are allowed; %s", [
		concat(", ", allowed_reads),
		promotion_hint,
	]),
	"tags": {"phase": "research"},
} if {
	is_string(input.request.method)
}

allowed_reads := data.examples.research_phase.read_methods

session := input.context.session

promoted if session in data.examples.research_phase.promoted_sessions[input.agent.id]

promotion_hint := sprintf("session %s has not been promoted to make changes", [session]) if {
	is_string(session)
} else := "changes need an X-Agent-Session header naming a session an operator has promoted"

# A method-override header would let a call judged as a GET run as a DELETE on servers
# that honour it, so a session that is not promoted may not send one.
override_headers contains name if {
	some name in ["x-http-method-override", "x-http-method", "x-method-override"]
	input.request.headers[name]
}
