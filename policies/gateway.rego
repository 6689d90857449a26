# callgate's default policy: a role x tool allow-list.
#
# data.grants (policies/data.json) maps role -> tool -> {methods, paths, mcp_tools,
# operations}. An agent may call a tool when one of its roles grants both the method and
# the path; `paths` are globs over "/"-separated segments ("/tickets/*"), and a grant
# without `paths` covers every path. For an MCP server (tools with kind: mcp, whose endpoint
# is "/"), `mcp_tools` names the MCP tools the grant covers, for tools/call and for what
# tools/list shows; a grant without it covers every MCP tool. For a tool with an OpenAPI
# document, `operations` names the operations (operationIds, input.operation.id) the grant
# covers; a grant without it covers every call its methods and paths do. Deny reasons say
# what *is* allowed, so a model can correct its next call.
#
# Written for how the embedded interpreter (regorus) spends its time: every reference to a
# rule, to `data`, and every builtin call costs about a microsecond or more, and glob.match
# compiles its pattern on each call. So `data.grants` is read once, the granting roles are
# computed once and handed to `verdict`, whose `else` chain stops at the first outcome that
# applies: deny reasons are only computed on the deny path. The decisions are those of the
# previous, rule-per-concept version of this policy (kept as tests/policy/
# reference_gateway.rego); tests/policy/test_parity.py holds the two to the same answers.
package gateway

import rego.v1

default decision := {"allow": false, "reason": "no rule of the policy allowed this call"}

decision := verdict(granting_roles, grants) if {
	grants := data.grants

	# The agent's roles whose grant on this tool covers this method, path and MCP tool.
	granting_roles := {role |
		some role in input.agent.roles
		grant := grants[role][input.tool.name]
		input.request.method in grant.methods

		no_paths := [1 | not grant.paths]

		# A path listed verbatim matches without a glob, unless it has glob syntax that does
		# not match itself ([, {, }, \); then the globs below decide.
		literal := [1 |
			input.request.path in grant.paths
			strings.replace_n({"[": "", "{": "", "}": "", "\\": ""}, input.request.path) == input.request.path
		]
		globbed := [1 |
			no_paths == []
			literal == []
			some pattern in grant.paths
			glob.match(pattern, ["/"], input.request.path)
		]
		[no_paths, literal, globbed] != [[], [], []]

		# A grant naming MCP tools covers a tools/call (or a tools/list entry) only for those.
		[1 |
			grant.mcp_tools
			mcp_tool := object.get(input, ["mcp", "tool"], null)
			mcp_tool != null
			not mcp_tool in grant.mcp_tools
		] == []

		# A grant naming operations covers only calls resolved to one of them.
		[1 |
			grant.operations
			not object.get(input, ["operation", "id"], null) in grant.operations
		] == []
	}
}

# A method-override header would let a call granted as GET run as DELETE on servers that
# honour it, so calls carrying one are refused whatever the grants say. The `_` forms are
# the same header to CGI and WSGI servers; the gateway drops header names with `_`, and
# this policy refuses them too, for engines that see requests it did not describe. The
# reason names the first of them in sorted order.
verdict(roles, grants) := {"allow": true, "reason": reason} if {
	roles != set()
	not input.request.headers["x-http-method-override"]
	not input.request.headers["x-http-method"]
	not input.request.headers["x-method-override"]
	not input.request.headers["x_http_method_override"]
	not input.request.headers["x_http_method"]
	not input.request.headers["x_method_override"]
	reason := sprintf("role %s may call %s %s on %s", [min(roles), input.request.method, input.request.path, input.tool.name])
} else := {"allow": false, "reason": "the x-http-method header is not allowed; send the request with its real HTTP method"} if {
	input.request.headers["x-http-method"]
} else := {"allow": false, "reason": "the x-http-method-override header is not allowed; send the request with its real HTTP method"} if {
	input.request.headers["x-http-method-override"]
} else := {"allow": false, "reason": "the x-method-override header is not allowed; send the request with its real HTTP method"} if {
	input.request.headers["x-method-override"]
} else := {"allow": false, "reason": "the x_http_method header is not allowed; send the request with its real HTTP method"} if {
	input.request.headers["x_http_method"]
} else := {"allow": false, "reason": "the x_http_method_override header is not allowed; send the request with its real HTTP method"} if {
	input.request.headers["x_http_method_override"]
} else := {"allow": false, "reason": "the x_method_override header is not allowed; send the request with its real HTTP method"} if {
	input.request.headers["x_method_override"]
} else := {"allow": false, "reason": "no rule of the policy allowed this call"} if {
	# Granted, but the allow reason cannot be written (the input has no request.path).
	roles != set()
} else := {"allow": false, "reason": reason} if {
	# None of the agent's roles holds a grant on this tool.
	count(input.agent.roles) == 0
	tools := {name | some role in input.agent.roles; some name, _ in grants[role]}
	not input.tool.name in tools
	reason := sprintf("agent %s may not call tool %s (roles: none); tools it may call: %s", [
		input.agent.id, input.tool.name, listed(tools),
	])
} else := {"allow": false, "reason": reason} if {
	count(input.agent.roles) > 0
	tools := {name | some role in input.agent.roles; some name, _ in grants[role]}
	not input.tool.name in tools
	reason := sprintf("agent %s may not call tool %s (roles: %s); tools it may call: %s", [
		input.agent.id, input.tool.name, concat(", ", sort(input.agent.roles)), listed(tools),
	])
} else := {"allow": false, "reason": reason} if {
	tool_grants := {grant | some role in input.agent.roles; grant := grants[role][input.tool.name]}
	tool_grants != set()
	[1 | some grant in tool_grants; input.request.method in grant.methods] == []
	methods := {m | some grant in tool_grants; some m in grant.methods}
	reason := sprintf("method %s is not allowed on tool %s for this agent; allowed methods: %s", [
		input.request.method, input.tool.name, listed(methods),
	])
} else := {"allow": false, "reason": reason} if {
	# A grant covers this method and path, but none of them this MCP tool.
	mcp_tool := object.get(input, ["mcp", "tool"], null)
	mcp_tool != null
	tool_grants := {grant | some role in input.agent.roles; grant := grants[role][input.tool.name]}
	[1 |
		some grant in tool_grants
		input.request.method in grant.methods
		[[1 | not grant.paths], [1 |
			some pattern in grant.paths
			glob.match(pattern, ["/"], input.request.path)
		]] != [[], []]
	] != []
	mcp_tools := {t | some grant in tool_grants; some t in grant.mcp_tools}
	reason := sprintf("MCP tool %s of %s is not allowed for this agent; MCP tools it may call there: %s", [
		mcp_tool, input.tool.name, listed(mcp_tools),
	])
} else := {"allow": false, "reason": reason} if {
	# A grant covers this method and path, but none of them this operation.
	tool_grants := {grant | some role in input.agent.roles; grant := grants[role][input.tool.name]}
	[1 |
		some grant in tool_grants
		input.request.method in grant.methods
		[[1 | not grant.paths], [1 |
			some pattern in grant.paths
			glob.match(pattern, ["/"], input.request.path)
		]] != [[], []]
	] != []
	operations := {o | some grant in tool_grants; some o in grant.operations}
	reason := operation_refused(object.get(input, ["operation", "id"], null), listed(operations))
} else := {"allow": false, "reason": reason} if {
	# The method is granted, but on other paths.
	tool_grants := {grant | some role in input.agent.roles; grant := grants[role][input.tool.name]}
	[1 | some grant in tool_grants; input.request.method in grant.methods] != []
	paths := {p | some grant in tool_grants; input.request.method in grant.methods; some p in grant.paths}
	reason := sprintf("%s %s is not allowed on tool %s for this agent; allowed paths for %s: %s", [
		input.request.method, input.request.path, input.tool.name, input.request.method, listed(paths),
	])
}

listed(items) := "none" if count(items) == 0 else := concat(", ", sort(items))

operation_refused(null, operations) := sprintf("%s %s is no operation of tool %s's OpenAPI document, and this agent may call only these there: %s", [
	input.request.method, input.request.path, input.tool.name, operations,
])

operation_refused(id, operations) := sprintf("operation %s (%s %s) is not allowed on tool %s for this agent; operations it may call there: %s", [
	id, input.request.method, input.request.path, input.tool.name, operations,
]) if id != null
