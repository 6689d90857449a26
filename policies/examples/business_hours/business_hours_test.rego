# Tests bring their own data (`with data.examples.business_hours.* as ...`), so they pass
# whatever you change in data.json and whichever folder `callgate policy test` is run on.
package examples.business_hours_test

import rego.v1

import data.examples.business_hours

call(method, time) := {
	"agent": {"id": "ops-bot", "roles": ["ops"]},
	"tool": {"name": "deploys", "kind": "http"},
	"request": {"method": method, "path": "/deployments", "query": {}, "headers": {}, "body": null, "size": 0},
	"mcp": null,
	"context": {"request_id": "r1", "time": time, "session": null, "model": null},
}

decide_with(doc, after_hours_approval) := d if {
	d := business_hours.decision with input as doc
		with data.examples.business_hours.timezone as "Europe/Berlin"
		with data.examples.business_hours.days as ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
		with data.examples.business_hours.open as "09:00"
		with data.examples.business_hours.close as "18:00"
		with data.examples.business_hours.holidays as ["2026-12-25"]
		with data.examples.business_hours.read_methods as ["GET", "HEAD"]
		with data.examples.business_hours.after_hours_approval as after_hours_approval
}

decide(doc) := decide_with(doc, null)

hours := "business hours are Monday, Tuesday, Wednesday, Thursday, Friday, 09:00 to 18:00 Europe/Berlin, except holidays"

# 2026-11-23 is a Monday; Berlin is UTC+1 in November and UTC+2 in July.

test_write_during_business_hours_is_allowed if {
	d := decide(call("POST", "2026-11-23T10:15:00Z"))
	d == {
		"allow": true,
		"reason": "POST is allowed during business hours (Monday 11:15 Europe/Berlin)",
		"tags": {"hours": "business"},
	}
}

test_write_after_hours_is_denied_with_the_hours if {
	d := decide(call("POST", "2026-11-23T18:00:00Z"))
	d.allow == false
	d.reason == concat("", ["POST is only allowed during business hours; ", hours, "; it is now Monday 19:00 Europe/Berlin; reads (GET, HEAD) are allowed at any time"])
}

test_weekend_write_is_denied if {
	d := decide(call("DELETE", "2026-11-28T11:00:00Z"))
	d.allow == false
	contains(d.reason, "it is now Saturday 12:00 Europe/Berlin;")
}

test_reads_are_allowed_at_any_time if {
	d := decide(call("GET", "2026-11-29T03:00:00Z"))
	d == {"allow": true, "reason": "GET is a read, allowed at any time", "tags": {"hours": "any"}}
}

test_open_is_inclusive_and_close_exclusive if {
	decide(call("POST", "2026-11-23T08:00:00Z")).allow # 09:00 Berlin
	decide(call("POST", "2026-11-23T16:59:59Z")).allow # 17:59:59 Berlin
	decide(call("POST", "2026-11-23T07:59:59Z")).allow == false # 08:59:59 Berlin
	decide(call("POST", "2026-11-23T17:00:00Z")).allow == false # 18:00 Berlin
}

test_daylight_saving_time_is_followed if {
	decide(call("POST", "2026-07-01T07:30:00Z")).allow # 09:30 CEST
	decide(call("POST", "2026-01-15T07:30:00Z")).allow == false # 08:30 CET
}

test_local_date_decides_the_day if {
	# 23:30 UTC on Sunday is already Monday 00:30 in Berlin: a weekday, but before opening.
	d := decide(call("POST", "2026-11-22T23:30:00Z"))
	contains(d.reason, "it is now Monday 00:30 Europe/Berlin;")
}

test_time_with_an_offset_is_understood if {
	decide(call("POST", "2026-11-23T12:00:00+03:00")).allow # 10:00 Berlin
}

test_holiday_is_closed if {
	d := decide(call("POST", "2026-12-25T10:00:00Z")) # a Friday
	d.allow == false
	contains(d.reason, "it is now Friday 11:00 Europe/Berlin (a holiday);")
}

test_after_hours_write_can_need_approval_instead if {
	d := decide_with(call("POST", "2026-11-28T11:00:00Z"), {"roles": ["oncall"], "ttl_s": 1800})
	d.allow == true
	d.approval_required == true
	d.approval == {"roles": ["oncall"], "min_approvals": 1, "ttl_s": 1800}
	startswith(d.reason, "POST outside business hours needs approval by oncall; business hours are ")
}

test_approval_setting_leaves_business_hours_alone if {
	d := decide_with(call("POST", "2026-11-23T10:15:00Z"), {"roles": ["oncall"]})
	d.allow == true
	not d.approval_required
}

test_missing_or_malformed_time_is_denied if {
	every t in [null, "", "yesterday", "2026-13-01T10:00:00Z", "2026-11-23 10:15:00Z", 1795456800] {
		d := decide(call("POST", t))
		d == {"allow": false, "reason": "the call has no valid time (context.time), so business hours cannot be checked"}
	}
}

test_malformed_hours_in_data_keep_writes_shut if {
	d := business_hours.decision with input as call("POST", "2026-11-23T10:15:00Z")
		with data.examples.business_hours.timezone as "UTC"
		with data.examples.business_hours.days as ["Monday"]
		with data.examples.business_hours.open as "9am"
		with data.examples.business_hours.close as "18:00"
		with data.examples.business_hours.holidays as []
		with data.examples.business_hours.read_methods as ["GET"]
		with data.examples.business_hours.after_hours_approval as null
	d.allow == false
}

test_method_override_is_refused if {
	d := decide(object.union(call("GET", "2026-11-28T11:00:00Z"), {"request": {"headers": {"x-method-override": "POST"}}}))
	d.allow == false
	d.reason == "the x-method-override header is not allowed; send the request with its real HTTP method"
}

test_decision_always_defined_for_odd_input if {
	d := decide({})
	d.allow == false
	is_string(d.reason)
}

test_close_at_midnight_is_written_24_00 if {
	d := business_hours.decision with input as call("POST", "2026-11-23T23:30:00Z")
		with data.examples.business_hours.timezone as "UTC"
		with data.examples.business_hours.days as ["Monday"]
		with data.examples.business_hours.open as "00:00"
		with data.examples.business_hours.close as "24:00"
		with data.examples.business_hours.holidays as []
		with data.examples.business_hours.read_methods as ["GET"]
		with data.examples.business_hours.after_hours_approval as null
	d.allow == true
}
