# Tests bring their own data (`with data.examples.arg_allowlist.tools as ...`), so they
# pass whatever you change in data.json and whichever folder `callgate policy test` is run on.
package examples.arg_allowlist_test

import rego.v1

import data.examples.arg_allowlist

tools := {
	"github": [{
		"argument": "repository",
		"path": "^/repos/([^/]+/[^/]+)(?:/|$)",
		"required": true,
		"ignore_case": true,
		"allowed": ["acme/website", "acme-sandbox/*"],
	}],
	"email": [
		{"argument": "to", "body": ["to"], "allowed": ["*@acme.example"]},
		{"argument": "from", "body": ["headers", "from"], "required": true, "allowed": ["bot@acme.example"]},
	],
	"tickets": [{"argument": "project", "query": "project", "allowed": ["SUP", "OPS"]}],
	"payments": [{"argument": "currency", "param": ["query", "currency"], "required": true, "allowed": ["EUR", "USD"]}],
}

call(tool, method, path, query, body) := {
	"agent": {"id": "dev-bot", "roles": ["developer"]},
	"tool": {"name": tool, "kind": "http"},
	"request": {"method": method, "path": path, "query": query, "headers": {}, "body": body, "size": 0},
	"mcp": null,
	"context": {"request_id": "r1", "time": "2026-11-23T18:00:00Z", "session": null, "model": null},
}

github(method, path) := call("github", method, path, {}, null)

email(body) := call("email", "POST", "/send", {}, body)

decide(doc) := d if {
	d := arg_allowlist.decision with input as doc with data.examples.arg_allowlist.tools as tools
}

test_listed_repository_is_allowed if {
	d := decide(github("POST", "/repos/acme/website/issues"))
	d == {"allow": true, "reason": "every restricted argument of this github call is allowed (repository acme/website)"}
}

test_repository_root_path_is_matched if {
	decide(github("GET", "/repos/acme/website")).allow
}

test_repository_glob_is_allowed if {
	decide(github("DELETE", "/repos/acme-sandbox/scratch/git/refs/heads/x")).allow
}

test_other_repository_is_denied_with_the_list if {
	d := decide(github("GET", "/repos/acme/payroll/contents/salaries.csv"))
	d == {
		"allow": false,
		"reason": "repository acme/payroll is not allowed on tool github; allowed: acme/website, acme-sandbox/*",
		"tags": {"violations": 1},
	}
}

test_repository_name_prefix_is_not_enough if {
	decide(github("GET", "/repos/acme/website-old/issues")).allow == false
}

test_case_is_ignored_when_asked if {
	decide(github("GET", "/repos/ACME/Website/pulls")).allow
}

test_required_argument_missing_is_denied if {
	d := decide(github("GET", "/user/repos"))
	d.allow == false
	d.reason == "calls to tool github must give repository (in the path); allowed: acme/website, acme-sandbox/*"
}

test_every_list_item_must_be_allowed if {
	d := decide(email({"to": ["ana@acme.example", "eve@evil.example"], "headers": {"from": "bot@acme.example"}}))
	d.allow == false
	d.reason == "to eve@evil.example is not allowed on tool email; allowed: *@acme.example"
}

test_list_of_allowed_items_is_allowed if {
	d := decide(email({"to": ["ana@acme.example", "bo@acme.example"], "headers": {"from": "bot@acme.example"}}))
	d.reason == "every restricted argument of this email call is allowed (from bot@acme.example, to ana@acme.example, bo@acme.example)"
}

test_all_violations_are_listed if {
	d := decide(email({"to": "eve@evil.example"}))
	d.reason == "calls to tool email must give from (at body.headers.from); allowed: bot@acme.example; to eve@evil.example is not allowed on tool email; allowed: *@acme.example"
	d.tags.violations == 2
}

test_non_string_values_are_denied if {
	d := decide(email({"to": {"name": "x"}, "headers": {"from": "bot@acme.example"}}))
	d.reason == `to {"name":"x"} is not allowed on tool email; allowed: *@acme.example`
}

test_query_values_are_each_checked if {
	decide(call("tickets", "GET", "/search", {"project": ["SUP"]}, null)).allow
	decide(call("tickets", "GET", "/search", {"project": ["SUP", "HR"]}, null)).allow == false
}

test_optional_argument_may_be_absent if {
	d := decide(call("tickets", "GET", "/search", {}, null))
	d == {"allow": true, "reason": "this tickets call carries none of the arguments its allow-lists restrict"}
}

test_unlisted_tool_is_denied if {
	d := decide(call("shell", "POST", "/run", {}, null))
	d == {"allow": false, "reason": "tool shell has no argument allow-list in this policy; tools it covers: email, github, payments, tickets"}
}

test_decision_always_defined_for_odd_input if {
	d := decide({})
	d.allow == false
	is_string(d.reason)
}

# A typed tool's parameters (input.operation.params, docs/typed-tools.md).
payments(currencies) := object.union(call("payments", "GET", "/v1/refunds", {}, null), {"operation": {
	"id": "listRefunds", "tags": [], "path_template": "/v1/refunds", "deprecated": false,
	"params": {"path": {}, "query": {"currency": currencies}, "header": {}},
}})

test_operation_parameters_are_checked if {
	decide(payments(["EUR", "USD"])).allow
	d := decide(payments(["EUR", "JPY"]))
	d.allow == false
	d.reason == "currency JPY is not allowed on tool payments; allowed: EUR, USD"
}

test_a_required_operation_parameter_must_be_there if {
	d := decide(call("payments", "GET", "/v1/refunds", {}, null))
	d.allow == false
	d.reason == "calls to tool payments must give currency (as the operation's query parameter currency); allowed: EUR, USD"
}
