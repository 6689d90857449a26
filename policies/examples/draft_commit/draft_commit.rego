# Example: drafts are free, commits need a human.
#
# For each tool in data.examples.draft_commit.tools, writes to `draft_paths` (preparing
# work that nobody sees yet: a draft page, a pull request) go through at once, while
# writes to `commit_paths` (publishing, merging, releasing) are parked until a human with
# one of the tool's `approval.roles` approves them. A path matching both lists is a
# commit. Reads (data `read_methods`) are allowed on every listed tool; writes to any
# other path, and calls to tools that are not listed, are refused with a reason naming
# the draft and commit paths.
#
# Paths are globs over "/"-separated segments: `*` is one segment, `**` any number.
#
# Adopt with `policy.decision: examples/draft_commit/decision` in callgate.yaml.
package examples.draft_commit

import rego.v1

default decision := {"allow": false, "reason": "no rule of the draft_commit policy allowed this call"}

decision := {
	"allow": false,
	"reason": sprintf("tool %s is not covered by the draft/commit policy; tools it covers: %s", [
		input.tool.name,
		concat(", ", sort(object.keys(covered_tools))),
	]),
} if {
	not config
} else := {
	"allow": false,
	"reason": sprintf("the %s header is not allowed; send the request with its real HTTP method", [min(override_headers)]),
} if {
	count(override_headers) > 0
} else := {
	"allow": true,
	"reason": sprintf("%s is a read", [method]),
	"tags": {"stage": "read"},
} if {
	method in data.examples.draft_commit.read_methods
} else := {
	"allow": true,
	"approval_required": true,
	"reason": sprintf("%s %s on %s commits work: it needs approval by %s; writes to drafts (%s) need none", [
		method, path, input.tool.name,
		concat(" or ", approval.roles),
		listed(config.draft_paths),
	]),
	"approval": approval,
	"tags": {"stage": "commit", "risk": "high"},
} if {
	matches(config.commit_paths)
} else := {
	"allow": true,
	"reason": sprintf("%s %s on %s writes a draft", [method, path, input.tool.name]),
	"tags": {"stage": "draft"},
} if {
	matches(config.draft_paths)
} else := {
	"allow": false,
	"reason": sprintf("%s %s on %s is neither a draft nor a commit endpoint; drafts: %s; commits (need approval): %s", [
		method, path, input.tool.name,
		listed(config.draft_paths),
		listed(config.commit_paths),
	]),
}

covered_tools := data.examples.draft_commit.tools

config := covered_tools[input.tool.name]

method := input.request.method

path := input.request.path

matches(patterns) if {
	some pattern in patterns
	glob.match(pattern, ["/"], path)
}

# The tool's approval settings over the defaults: one approval, from the listed roles
# (with no roles, any approver may approve).
approval := object.union({"roles": [], "min_approvals": 1}, object.get(config, "approval", {}))

override_headers contains name if {
	some name in ["x-http-method-override", "x-http-method", "x-method-override"]
	input.request.headers[name]
}

listed(items) := "none" if count(items) == 0

listed(items) := concat(", ", items) if count(items) > 0
