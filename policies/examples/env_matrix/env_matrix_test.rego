# Tests bring their own data (`with data.examples.env_matrix.* as ...`), so they pass
# whatever you change in data.json and whichever folder `callgate policy test` is run on.
package examples.env_matrix_test

import rego.v1

import data.examples.env_matrix

matrix := {
	"staging": {
		"developer": {"deploys": {"methods": ["GET", "POST"]}, "demo": {"methods": ["GET", "POST", "PUT"]}},
		"support": {"demo": {"methods": ["GET", "POST"]}},
	},
	"production": {
		"developer": {"deploys-prod": {"methods": ["GET"]}},
		"release-manager": {"deploys-prod": {"methods": ["GET", "POST"], "approval_roles": ["sre"]}},
		"lead": {"deploys-prod": {"methods": ["POST"], "approval_roles": ["cto", "sre"]}},
	},
}

call(roles, tool, method, headers) := {
	"agent": {"id": "bot", "roles": roles},
	"tool": {"name": tool, "kind": "http"},
	"request": {"method": method, "path": "/", "query": {}, "headers": headers, "body": null, "size": 0},
	"mcp": null,
	"context": {"request_id": "r1", "time": "2026-11-23T18:00:00Z", "session": null, "model": null},
}

decide(doc) := d if {
	d := env_matrix.decision with input as doc
		with data.examples.env_matrix.default_environment as "staging"
		with data.examples.env_matrix.tool_environments as {"deploys-prod": "production"}
		with data.examples.env_matrix.matrix as matrix
}

test_staging_developer_may_deploy if {
	d := decide(call(["developer"], "deploys", "POST", {}))
	d == {"allow": true, "reason": "in staging, role developer may call POST on deploys", "tags": {"environment": "staging"}}
}

test_production_tool_follows_its_own_environment if {
	d := decide(call(["developer"], "deploys-prod", "POST", {}))
	d.allow == false
	d.reason == "in production, agent bot (roles: developer) may not call POST on deploys-prod; in production it may call: deploys-prod (GET)"
	d.tags.environment == "production"
}

test_production_deploy_needs_sre_approval if {
	d := decide(call(["release-manager"], "deploys-prod", "POST", {}))
	d.allow == true
	d.approval_required == true
	d.approval == {"roles": ["sre"], "min_approvals": 1}
	d.reason == "in production, POST on deploys-prod needs approval by sre (granted to role release-manager)"
}

test_approver_roles_of_all_granting_roles_are_offered if {
	d := decide(call(["release-manager", "lead"], "deploys-prod", "POST", {}))
	d.approval.roles == ["cto", "sre"]
}

test_a_direct_grant_wins_over_an_approval_grant if {
	d := decide(call(["release-manager", "developer"], "deploys-prod", "GET", {}))
	d.allow == true
	not d.approval_required
}

test_unknown_tool_lists_what_may_be_called if {
	d := decide(call(["support"], "deploys", "POST", {}))
	d.allow == false
	d.reason == "in staging, agent bot (roles: support) may not call POST on deploys; in staging it may call: demo (GET, POST)"
}

test_no_roles_may_call_nothing if {
	d := decide(call([], "demo", "GET", {}))
	d.reason == "in staging, agent bot (roles: nothing) may not call GET on demo; in staging it may call: nothing"
}

test_methods_of_several_roles_are_merged_in_the_reason if {
	d := decide(call(["support", "developer"], "demo", "DELETE", {}))
	d.reason == "in staging, agent bot (roles: developer, support) may not call DELETE on demo; in staging it may call: demo (GET, POST, PUT), deploys (GET, POST)"
}

test_matching_environment_header_is_fine if {
	decide(call(["developer"], "deploys", "POST", {"x-environment": "Staging"})).allow
}

test_contradicting_environment_header_is_refused if {
	d := decide(call(["developer"], "deploys", "POST", {"x-environment": "development"}))
	d.allow == false
	d.reason == "tool deploys is in the staging environment, but the X-Environment header says development; nothing was sent"
}

test_header_cannot_move_a_tool_to_another_environment if {
	d := decide(call(["release-manager"], "deploys-prod", "POST", {"x-environment": "staging"}))
	d.allow == false
}

test_method_override_header_is_refused if {
	d := decide(call(["developer"], "deploys", "GET", {"x-http-method-override": "POST"}))
	d.allow == false
	d.reason == "the x-http-method-override header is not allowed; send the request with its real HTTP method"
}

test_environment_missing_from_data_is_denied if {
	d := env_matrix.decision with input as call(["developer"], "deploys", "GET", {})
		with data.examples.env_matrix.default_environment as null
		with data.examples.env_matrix.tool_environments as {}
		with data.examples.env_matrix.matrix as matrix
	d == {"allow": false, "reason": "tool deploys has no environment: set default_environment or tool_environments in the env_matrix data"}
}

test_environment_not_in_matrix_is_denied if {
	d := env_matrix.decision with input as call(["developer"], "deploys", "GET", {})
		with data.examples.env_matrix.default_environment as "qa"
		with data.examples.env_matrix.tool_environments as {}
		with data.examples.env_matrix.matrix as matrix
	d.allow == false
	d.reason == "in qa, agent bot (roles: developer) may not call GET on deploys; in qa it may call: nothing"
}

test_decision_always_defined_for_odd_input if {
	d := decide({})
	d.allow == false
	is_string(d.reason)
}
