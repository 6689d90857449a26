# Tests bring their own data (`with data.examples.research_phase.* as ...`), so they pass
# whatever you change in data.json and whichever folder `callgate policy test` is run on.
package examples.research_phase_test

import rego.v1

import data.examples.research_phase

call(agent, method, session, headers) := {
	"agent": {"id": agent, "roles": ["support"]},
	"tool": {"name": "demo", "kind": "http"},
	"request": {"method": method, "path": "/tickets", "query": {}, "headers": headers, "body": null, "size": 0},
	"mcp": null,
	"context": {"request_id": "r1", "time": "2026-11-23T18:00:00Z", "session": session, "model": null},
}

mcp_call(rpc_method) := object.union(call("bot", "POST", "sess-1", {}), {
	"tool": {"name": "files", "kind": "mcp"},
	"mcp": {"method": rpc_method, "tool": null, "arguments": {}},
})

decide(doc) := d if {
	d := research_phase.decision with input as doc
		with data.examples.research_phase.read_methods as ["GET", "HEAD"]
		with data.examples.research_phase.read_mcp_methods as ["tools/list", "resources/read"]
		with data.examples.research_phase.promoted_sessions as {"bot": ["sess-42"]}
}

test_reads_are_allowed if {
	every method in ["GET", "HEAD"] {
		d := decide(call("bot", method, "sess-1", {}))
		d.allow == true
		d.tags.phase == "research"
	}
}

test_write_in_research_phase_is_denied_with_what_is_allowed if {
	d := decide(call("bot", "POST", "sess-1", {}))
	d == {
		"allow": false,
		"reason": "this agent is in its read-only research phase: only GET, HEAD calls are allowed; session sess-1 has not been promoted to make changes",
		"tags": {"phase": "research"},
	}
}

test_write_without_session_says_how_to_get_promoted if {
	d := decide(call("bot", "DELETE", null, {}))
	d.allow == false
	d.reason == "this agent is in its read-only research phase: only GET, HEAD calls are allowed; changes need an X-Agent-Session header naming a session an operator has promoted"
}

test_promoted_session_may_write if {
	d := decide(call("bot", "POST", "sess-42", {}))
	d == {"allow": true, "reason": "session sess-42 of agent bot is promoted past the research phase", "tags": {"phase": "promoted"}}
}

test_promotion_is_per_agent if {
	d := decide(call("other-bot", "POST", "sess-42", {}))
	d.allow == false
}

test_method_override_cannot_turn_a_read_into_a_write if {
	d := decide(call("bot", "GET", "sess-1", {"x-http-method": "DELETE"}))
	d.allow == false
	d.reason == "the x-http-method header is not allowed; send the request with its real HTTP method"
}

test_mcp_reads_are_allowed if {
	d := decide(mcp_call("tools/list"))
	d.allow == true
	d.reason == "research phase: MCP tools/list is a read"
}

test_mcp_tool_calls_are_writes if {
	d := decide(mcp_call("tools/call"))
	d.allow == false
}

test_method_names_are_case_sensitive if {
	d := decide(call("bot", "get", "sess-1", {}))
	d.allow == false
}

test_decision_always_defined_for_odd_input if {
	d := decide({})
	d.allow == false
	is_string(d.reason)
}
