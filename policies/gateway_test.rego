package gateway_test

import rego.v1

import data.gateway

call(roles, tool, method, path) := {
	"agent": {"id": "bot", "roles": roles},
	"tool": {"name": tool, "kind": "http"},
	"request": {"method": method, "path": path, "query": {}, "headers": {}, "body": null, "size": 0},
	"mcp": null,
	"context": {"request_id": "r1", "time": "2026-11-23T18:00:00Z", "session": null, "model": null},
}

test_support_may_list_tickets if {
	gateway.decision.allow with input as call(["support"], "demo", "GET", "/tickets")
}

test_support_may_create_ticket if {
	gateway.decision.allow with input as call(["support"], "demo", "POST", "/tickets")
}

test_support_may_read_one_ticket if {
	gateway.decision.allow with input as call(["support"], "demo", "GET", "/tickets/42")
}

test_glob_does_not_cross_segments if {
	d := gateway.decision with input as call(["support"], "demo", "GET", "/tickets/42/secrets")
	d.allow == false
	d.reason == "GET /tickets/42/secrets is not allowed on tool demo for this agent; allowed paths for GET: /tickets, /tickets/*"
}

test_method_not_granted_names_allowed_methods if {
	d := gateway.decision with input as call(["support"], "demo", "DELETE", "/tickets/42")
	d.allow == false
	d.reason == "method DELETE is not allowed on tool demo for this agent; allowed methods: GET, POST"
}

test_tool_not_granted_names_callable_tools if {
	d := gateway.decision with input as call(["support"], "payments", "GET", "/")
	d.allow == false
	d.reason == "agent bot may not call tool payments (roles: support); tools it may call: demo"
}

test_no_roles_denied if {
	d := gateway.decision with input as call([], "demo", "GET", "/tickets")
	d.allow == false
	d.reason == "agent bot may not call tool demo (roles: none); tools it may call: none"
}

test_grant_without_paths_covers_every_path if {
	gateway.decision.allow with input as call(["auditor"], "demo", "GET", "/anything/at/all")
}

test_any_role_may_grant if {
	gateway.decision.allow with input as call(["auditor", "support"], "demo", "POST", "/tickets")
}

test_two_granting_roles_give_one_decision if {
	d := gateway.decision with input as call(["support", "auditor"], "demo", "GET", "/tickets")
	d == {"allow": true, "reason": "role auditor may call GET /tickets on demo"}
}

test_allow_reason_names_the_grant if {
	d := gateway.decision with input as call(["support"], "demo", "POST", "/tickets")
	d.reason == "role support may call POST /tickets on demo"
}

test_method_override_header_is_refused_even_when_granted if {
	c := call(["support"], "demo", "GET", "/tickets")
	d := gateway.decision with input as object.union(c, {"request": object.union(c.request, {"headers": {"x-http-method-override": "DELETE"}})})
	d == {"allow": false, "reason": "the x-http-method-override header is not allowed; send the request with its real HTTP method"}
}

test_method_override_header_is_refused_without_grants if {
	c := call([], "demo", "GET", "/tickets")
	d := gateway.decision with input as object.union(c, {"request": object.union(c.request, {"headers": {"x-method-override": "PUT"}})})
	d.allow == false
	d.reason == "the x-method-override header is not allowed; send the request with its real HTTP method"
}

test_every_method_override_header_is_refused if {
	c := call(["support"], "demo", "GET", "/tickets")
	every name in [
		"x-http-method-override", "x-http-method", "x-method-override",
		"x_http_method_override", "x_http_method", "x_method_override",
	] {
		d := gateway.decision with input as object.union(c, {"request": object.union(c.request, {"headers": {name: "DELETE"}})})
		d.allow == false
	}
}

test_decision_always_defined_for_odd_input if {
	d := gateway.decision with input as {}
	d.allow == false
}

mcp_call(roles, tool_name) := object.union(
	call(roles, "payments-mcp", "POST", "/"),
	{"tool": {"name": "payments-mcp", "kind": "mcp"}, "mcp": {"method": "tools/call", "tool": tool_name, "arguments": {}, "protocol_version": "2026-07-28"}},
)

mcp_grants := {"support": {"payments-mcp": {"methods": ["POST", "GET", "DELETE"], "mcp_tools": ["lookup_order"]}}}

test_mcp_grant_covers_its_tools if {
	d := gateway.decision with input as mcp_call(["support"], "lookup_order") with data.grants as mcp_grants
	d.allow == true
}

test_mcp_grant_refuses_other_tools_and_names_the_granted_ones if {
	d := gateway.decision with input as mcp_call(["support"], "refund") with data.grants as mcp_grants
	d.allow == false
	d.reason == "MCP tool refund of payments-mcp is not allowed for this agent; MCP tools it may call there: lookup_order"
}

test_mcp_protocol_requests_need_only_the_method if {
	plumbing := object.union(mcp_call(["support"], null), {"mcp": {"method": "initialize", "tool": null}})
	d := gateway.decision with input as plumbing with data.grants as mcp_grants
	d.allow == true
}

test_mcp_grant_without_a_tool_list_covers_every_tool if {
	grants := {"support": {"payments-mcp": {"methods": ["POST"]}}}
	d := gateway.decision with input as mcp_call(["support"], "refund") with data.grants as grants
	d.allow == true
}

# Grants by operation (docs/typed-tools.md): `operations` names the operationIds a grant
# covers, next to its methods and paths.
refund_grants := {"finance": {"payments": {
	"methods": ["GET", "POST"],
	"paths": ["/v1/refunds", "/v1/refunds/*"],
	"operations": ["createRefund", "getRefund"],
}}}

typed_call(roles, method, path, operation_id) := object.union(call(roles, "payments", method, path), {"operation": {
	"id": operation_id, "tags": ["refunds"], "path_template": path,
	"params": {"path": {}, "query": {}, "header": {}}, "deprecated": false,
}})

test_grant_by_operation_allows_its_operations if {
	gateway.decision.allow with input as typed_call(["finance"], "POST", "/v1/refunds", "createRefund")
		with data.grants as refund_grants
	gateway.decision.allow with input as typed_call(["finance"], "GET", "/v1/refunds/re_1", "getRefund")
		with data.grants as refund_grants
}

test_grant_by_operation_names_the_operations_it_allows if {
	d := gateway.decision with input as typed_call(["finance"], "GET", "/v1/refunds", "listRefunds")
		with data.grants as refund_grants
	d.allow == false
	d.reason == "operation listRefunds (GET /v1/refunds) is not allowed on tool payments for this agent; operations it may call there: createRefund, getRefund"
}

test_grant_by_operation_refuses_an_input_without_operation if {
	d := gateway.decision with input as call(["finance"], "payments", "POST", "/v1/refunds")
		with data.grants as refund_grants
	d.allow == false
	startswith(d.reason, "POST /v1/refunds is no operation of tool payments")
}

test_grant_by_operation_refuses_an_unresolved_call if {
	d := gateway.decision with input as object.union(call(["finance"], "payments", "POST", "/v1/refunds"), {"operation": null})
		with data.grants as refund_grants
	d.allow == false
	d.reason == "POST /v1/refunds is no operation of tool payments's OpenAPI document, and this agent may call only these there: createRefund, getRefund"
}

test_grant_by_operation_still_needs_its_methods if {
	d := gateway.decision with input as typed_call(["finance"], "DELETE", "/v1/refunds/re_1", "getRefund")
		with data.grants as refund_grants
	d.allow == false
	d.reason == "method DELETE is not allowed on tool payments for this agent; allowed methods: GET, POST"
}

test_grant_without_operations_covers_every_operation if {
	gateway.decision.allow with input as typed_call(["support"], "GET", "/tickets", "listTickets")
		with data.grants as {"support": {"payments": {"methods": ["GET"], "paths": ["/tickets"]}}}
}
