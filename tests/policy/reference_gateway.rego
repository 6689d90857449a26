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
package gateway

import rego.v1

default decision := {"allow": false, "reason": "no rule of the policy allowed this call"}

decision := {"allow": true, "reason": reason} if {
	count(granting_roles) > 0
	not method_overridden
	reason := sprintf("role %s may call %s %s on %s", [min(granting_roles), method, path, tool])
}

decision := {"allow": false, "reason": deny_reason} if {
	count(granting_roles) == 0
	not method_overridden
}

# A method-override header would let a call granted as GET run as DELETE on servers that
# honour it, so calls carrying one are refused whatever the grants say. The `_` forms are
# the same header to CGI and WSGI servers; the gateway drops header names with `_`, and
# this policy refuses them too, for engines that see requests it did not describe.
decision := {"allow": false, "reason": reason} if {
	method_overridden
	name := min({h | some h in method_override_headers; input.request.headers[h]})
	reason := sprintf("the %s header is not allowed; send the request with its real HTTP method", [name])
}

method_override_headers := {
	"x-http-method-override", "x-http-method", "x-method-override",
	"x_http_method_override", "x_http_method", "x_method_override",
}

# One rule per header: cheaper to evaluate than iterating the set on every call.
method_overridden if input.request.headers["x-http-method-override"]

method_overridden if input.request.headers["x-http-method"]

method_overridden if input.request.headers["x-method-override"]

method_overridden if input.request.headers["x_http_method_override"]

method_overridden if input.request.headers["x_http_method"]

method_overridden if input.request.headers["x_method_override"]

method := input.request.method

path := input.request.path

tool := input.tool.name

# The agent's roles whose grant on this tool covers this method and path.
granting_roles contains role if {
	some role in input.agent.roles
	grant_allows(data.grants[role][tool])
}

grant_allows(grant) if {
	method in grant.methods
	path_matches(grant)
	mcp_tool_matches(grant)
	operation_matches(grant)
}

# The operation of a typed tool's call (docs/typed-tools.md); null for anything else.
operation := object.get(input, ["operation", "id"], null)

operation_matches(grant) if not grant.operations

operation_matches(grant) if operation in grant.operations

# A grant covers this method and path (and MCP tool), but none of them this operation.
operation_refused if {
	not mcp_tool_refused
	some grant in grants
	method in grant.methods
	path_matches(grant)
	count(granting_roles) == 0
}

# The MCP tool a tools/call (or a tools/list entry) is about; null for anything else.
mcp_tool := object.get(input, ["mcp", "tool"], null)

mcp_tool_matches(_) if mcp_tool == null

mcp_tool_matches(grant) if {
	mcp_tool != null
	not grant.mcp_tools
}

mcp_tool_matches(grant) if mcp_tool in grant.mcp_tools

# A grant covers this method and path, but none of them this MCP tool.
mcp_tool_refused if {
	mcp_tool != null
	some grant in grants
	method in grant.methods
	path_matches(grant)
	count(granting_roles) == 0
}

path_matches(grant) if not grant.paths

path_matches(grant) if {
	some pattern in grant.paths
	glob.match(pattern, ["/"], path)
}

# The grants this agent's roles hold on this tool.
grants contains grant if {
	some role in input.agent.roles
	grant := data.grants[role][tool]
}

deny_reason := sprintf(
	"agent %s may not call tool %s (roles: %s); tools it may call: %s",
	[input.agent.id, tool, listed(input.agent.roles), listed(callable_tools)],
) if count(grants) == 0

deny_reason := sprintf(
	"method %s is not allowed on tool %s for this agent; allowed methods: %s",
	[method, tool, listed({m | some grant in grants; some m in grant.methods})],
) if {
	count(grants) > 0
	not method_granted
}

deny_reason := sprintf(
	"%s %s is not allowed on tool %s for this agent; allowed paths for %s: %s",
	[method, path, tool, method, listed({p | some grant in grants; method in grant.methods; some p in grant.paths})],
) if {
	method_granted
	not mcp_tool_refused
	not operation_refused
}

deny_reason := sprintf(
	"%s %s is no operation of tool %s's OpenAPI document, and this agent may call only these there: %s",
	[method, path, tool, listed({o | some grant in grants; some o in grant.operations})],
) if {
	operation_refused
	operation == null
}

deny_reason := sprintf(
	"operation %s (%s %s) is not allowed on tool %s for this agent; operations it may call there: %s",
	[operation, method, path, tool, listed({o | some grant in grants; some o in grant.operations})],
) if {
	operation_refused
	operation != null
}

deny_reason := sprintf(
	"MCP tool %s of %s is not allowed for this agent; MCP tools it may call there: %s",
	[mcp_tool, tool, listed({t | some grant in grants; some t in grant.mcp_tools})],
) if mcp_tool_refused

method_granted if {
	some grant in grants
	method in grant.methods
}

callable_tools contains name if {
	some role in input.agent.roles
	some name, _ in data.grants[role]
}

listed(items) := "none" if count(items) == 0

listed(items) := concat(", ", sort(items)) if count(items) > 0
