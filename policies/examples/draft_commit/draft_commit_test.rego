# Tests bring their own data (`with data.examples.draft_commit.* as ...`), so they pass
# whatever you change in data.json and whichever folder `callgate policy test` is run on.
package examples.draft_commit_test

import rego.v1

import data.examples.draft_commit

tools := {
	"cms": {
		"draft_paths": ["/drafts", "/drafts/*"],
		"commit_paths": ["/drafts/*/publish", "/pages/**"],
		"approval": {"roles": ["editor"], "ttl_s": 86400},
	},
	"wiki": {"draft_paths": ["/sandbox/**"], "commit_paths": []},
}

call(tool, method, path, headers) := {
	"agent": {"id": "writer-bot", "roles": ["writer"]},
	"tool": {"name": tool, "kind": "http"},
	"request": {"method": method, "path": path, "query": {}, "headers": headers, "body": {"title": "Q4"}, "size": 15},
	"mcp": null,
	"context": {"request_id": "r1", "time": "2026-11-23T18:00:00Z", "session": null, "model": null},
}

decide(doc) := d if {
	d := draft_commit.decision with input as doc
		with data.examples.draft_commit.read_methods as ["GET", "HEAD"]
		with data.examples.draft_commit.tools as tools
}

test_draft_write_is_allowed if {
	d := decide(call("cms", "POST", "/drafts", {}))
	d == {"allow": true, "reason": "POST /drafts on cms writes a draft", "tags": {"stage": "draft"}}
}

test_draft_edit_is_allowed if {
	decide(call("cms", "PUT", "/drafts/7", {})).allow
}

test_publish_needs_editor_approval if {
	d := decide(call("cms", "POST", "/drafts/7/publish", {}))
	d.allow == true
	d.approval_required == true
	d.approval == {"roles": ["editor"], "min_approvals": 1, "ttl_s": 86400}
	d.reason == "POST /drafts/7/publish on cms commits work: it needs approval by editor; writes to drafts (/drafts, /drafts/*) need none"
	d.tags.stage == "commit"
}

test_commit_glob_crosses_segments if {
	decide(call("cms", "DELETE", "/pages/docs/intro", {})).approval_required
}

test_other_write_is_denied_with_the_endpoints if {
	d := decide(call("cms", "POST", "/settings", {}))
	d == {
		"allow": false,
		"reason": "POST /settings on cms is neither a draft nor a commit endpoint; drafts: /drafts, /drafts/*; commits (need approval): /drafts/*/publish, /pages/**",
	}
}

test_draft_glob_stays_in_one_segment if {
	d := decide(call("cms", "POST", "/drafts/7/archive", {}))
	d.allow == false
}

test_reads_are_allowed_anywhere_on_a_listed_tool if {
	d := decide(call("cms", "GET", "/pages/home", {}))
	d.allow == true
	not d.approval_required
	d.tags.stage == "read"
}

test_unlisted_tool_is_denied if {
	d := decide(call("github", "GET", "/repos/a/b", {}))
	d == {"allow": false, "reason": "tool github is not covered by the draft/commit policy; tools it covers: cms, wiki"}
}

test_tool_without_commit_paths_lists_none if {
	d := decide(call("wiki", "POST", "/pages/x", {}))
	d.reason == "POST /pages/x on wiki is neither a draft nor a commit endpoint; drafts: /sandbox/**; commits (need approval): none"
}

test_method_override_cannot_dodge_approval if {
	d := decide(call("cms", "GET", "/drafts/7/publish", {"x-http-method-override": "POST"}))
	d.allow == false
}

test_decision_always_defined_for_odd_input if {
	d := decide({})
	d.allow == false
	is_string(d.reason)
}
