# Example: per-tool argument allow-lists.
#
# data.examples.arg_allowlist.tools maps a tool to the arguments it restricts. Each entry
# names the argument, says where to find it (exactly one of these) and lists the values
# allowed:
#
#   "path":  a regular expression over the request path whose first group is the value,
#            e.g. "^/repos/([^/]+/[^/]+)(?:/|$)" for GitHub's owner/repo;
#   "body":  a path into the JSON body, e.g. ["project"] or ["fields", "project", "key"];
#   "query": a query parameter name (every value given is checked);
#   "param": for a typed tool (tools[].openapi), a parameter of the call's operation as
#            [location, name], e.g. ["path", "owner"]: input.operation.params, typed.
#
# `allowed` holds globs over "/"-separated segments: `*` stays within one segment, `**`
# crosses them, `?` is any one character ("acme-sandbox/*", "https://docs.python.org/**").
# A body argument may be a string or a list of strings; each item must be allowed.
# `required: true` refuses calls that do not carry the argument at all (so the github
# tool cannot reach /user or /search outside the listed repositories);
# `ignore_case: true` compares lower-cased values (GitHub names are case-insensitive).
#
# A tool without an entry is refused; a call is allowed when none of its restricted
# arguments is off its list, and the deny reason lists every argument that is.
#
# Adopt with `policy.decision: examples/arg_allowlist/decision` in callgate.yaml.
package examples.arg_allowlist

import rego.v1

default decision := {"allow": false, "reason": "no rule of the arg_allowlist policy allowed this call"}

decision := {
	"allow": false,
	"reason": sprintf("tool %s has no argument allow-list in this policy; tools it covers: %s", [
		tool,
		concat(", ", sort(object.keys(data.examples.arg_allowlist.tools))),
	]),
} if {
	not specs
} else := {
	"allow": false,
	"reason": concat("; ", sort(violations)),
	"tags": {"violations": count(violations)},
} if {
	count(violations) > 0
} else := {
	"allow": true,
	"reason": sprintf("every restricted argument of this %s call is allowed (%s)", [tool, concat(", ", sort(checked))]),
} if {
	count(checked) > 0
} else := {
	"allow": true,
	"reason": sprintf("this %s call carries none of the arguments its allow-lists restrict", [tool]),
} if {
	is_object(input.request)
}

tool := input.tool.name

specs := data.examples.arg_allowlist.tools[tool]

# The values of one argument in this call, as a list; undefined when it is absent.
arg_values(spec) := [m[1]] if {
	is_string(spec.path)
	is_string(input.request.path)
	some m in regex.find_all_string_submatch_n(spec.path, input.request.path, 1)
} else := as_list(raw) if {
	is_array(spec.body)
	is_object(input.request.body)
	raw := object.get(input.request.body, spec.body, null)
	raw != null
} else := input.request.query[spec.query] if {
	is_string(spec.query)
} else := as_list(raw) if {
	is_array(spec.param)
	raw := object.get(input, array.concat(["operation", "params"], spec.param), null)
	raw != null
}

as_list(raw) := raw if is_array(raw)
else := [raw]

permitted(spec, value) if {
	is_string(value)
	some pattern in spec.allowed
	glob.match(folded(spec, pattern), ["/"], folded(spec, value))
}

folded(spec, text) := lower(text) if spec.ignore_case == true
else := text

violations contains sprintf("%s %s is not allowed on tool %s; allowed: %s", [
	spec.argument, shown(value), tool, concat(", ", spec.allowed),
]) if {
	some spec in specs
	some value in arg_values(spec)
	not permitted(spec, value)
}

violations contains sprintf("calls to tool %s must give %s (%s); allowed: %s", [
	tool, spec.argument, where(spec), concat(", ", spec.allowed),
]) if {
	some spec in specs
	spec.required == true
	not arg_values(spec)
}

checked contains sprintf("%s %s", [spec.argument, concat(", ", [shown(v) | some v in arg_values(spec)])]) if {
	some spec in specs
	count(arg_values(spec)) > 0
}

shown(value) := value if is_string(value)
else := json.marshal(value)

where(spec) := "in the path" if is_string(spec.path)
else := sprintf("at body.%s", [concat(".", spec.body)]) if is_array(spec.body)
else := sprintf("in query parameter %s", [spec.query]) if is_string(spec.query)
else := sprintf("as the operation's %s parameter %s", [spec.param[0], spec.param[1]])
