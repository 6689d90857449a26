# Example: an environment x role x tool matrix.
#
# data.examples.env_matrix.matrix (data.json next to this file) maps
# environment -> role -> tool -> {"methods": [...], "approval_roles": [...]}. An agent may
# call a tool when one of its roles has a cell for the call's environment and tool that
# lists the call's method. A cell with `approval_roles` allows the call only once a human
# holding one of those roles approves it; a cell without them allows it at once.
#
# The environment comes from data, never from the agent: `tool_environments[tool]` when
# the tool is listed there (one gateway fronting "db-staging" and "db-prod"), otherwise
# `default_environment` (the environment this gateway guards). An agent may send an
# `X-Environment` header to say where it believes it is working; a call whose header
# names another environment is refused, so an agent that mistakes production for
# staging learns so before anything happens.
#
# Adopt with `policy.decision: examples/env_matrix/decision` in callgate.yaml.
package examples.env_matrix

import rego.v1

default decision := {"allow": false, "reason": "no rule of the env_matrix policy allowed this call"}

decision := {
	"allow": false,
	"reason": sprintf("tool %s has no environment: set default_environment or tool_environments in the env_matrix data", [tool]),
} if {
	not is_string(environment)
} else := {
	"allow": false,
	"reason": sprintf("the %s header is not allowed; send the request with its real HTTP method", [min(override_headers)]),
	"tags": {"environment": environment},
} if {
	count(override_headers) > 0
} else := {
	"allow": false,
	"reason": sprintf(
		"tool %s is in the %s environment, but the X-Environment header says %s; nothing was sent",
		[tool, environment, claimed_environment],
	),
	"tags": {"environment": environment},
} if {
	claimed_environment != environment
} else := {
	"allow": true,
	"reason": sprintf("in %s, role %s may call %s on %s", [environment, min(direct_roles), method, tool]),
	"tags": {"environment": environment},
} if {
	count(direct_roles) > 0
} else := {
	"allow": true,
	"approval_required": true,
	"reason": sprintf(
		"in %s, %s on %s needs approval by %s (granted to role %s)",
		[environment, method, tool, concat(" or ", sort(approver_roles)), min(granting_roles)],
	),
	"approval": {"roles": sort(approver_roles), "min_approvals": 1},
	"tags": {"environment": environment, "risk": "high"},
} if {
	count(approver_roles) > 0
} else := {
	"allow": false,
	"reason": deny_reason,
	"tags": {"environment": environment},
}

method := input.request.method

tool := input.tool.name

environment := env if {
	env := data.examples.env_matrix.tool_environments[tool]
} else := data.examples.env_matrix.default_environment

# The agent's claim, lower-cased; without the header it claims nothing to contradict.
claimed_environment := lower(input.request.headers["x-environment"]) if {
	input.request.headers["x-environment"]
} else := environment

# A method-override header would let a call granted as GET run as DELETE on servers that
# honour it, so calls carrying one are refused whatever the matrix says.
override_headers contains name if {
	some name in ["x-http-method-override", "x-http-method", "x-method-override"]
	input.request.headers[name]
}

cell(role) := data.examples.env_matrix.matrix[environment][role][tool]

# The agent's roles whose cell covers this method, with or without an approval step.
granting_roles contains role if {
	some role in input.agent.roles
	method in cell(role).methods
}

direct_roles contains role if {
	some role in granting_roles
	count(object.get(cell(role), "approval_roles", [])) == 0
}

approver_roles contains approver if {
	some role in granting_roles
	some approver in cell(role).approval_roles
}

# What the agent may call in this environment: tool -> methods, over all its roles.
callable_tools contains name if {
	some role in input.agent.roles
	some name, _ in data.examples.env_matrix.matrix[environment][role]
}

callable_methods(name) := {m |
	some role in input.agent.roles
	some m in data.examples.env_matrix.matrix[environment][role][name].methods
}

callable := [sprintf("%s (%s)", [name, concat(", ", sort(callable_methods(name)))]) | some name in sort(callable_tools)]

deny_reason := sprintf(
	"in %s, agent %s (roles: %s) may not call %s on %s; in %s it may call: %s",
	[environment, input.agent.id, listed(input.agent.roles), method, tool, environment, listed(callable)],
)

listed(items) := "nothing" if count(items) == 0

listed(items) := concat(", ", sort(items)) if count(items) > 0
