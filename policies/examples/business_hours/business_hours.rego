# Example: writes only during business hours.
#
# Reads (data `read_methods`) are allowed at any time. Any other call is allowed only on
# the weekdays in data `days`, from `open` (inclusive) to `close` (exclusive), local time
# in data `timezone` (an IANA name such as "Europe/Berlin"; daylight saving time is
# handled), and not on the dates in `holidays` ("YYYY-MM-DD", local). `open` must be
# before `close`: a window over midnight is not supported.
#
# Outside those hours a write is refused, or, when data `after_hours_approval` is an
# approval object such as {"roles": ["oncall"]}, parked for a human with one of its roles.
#
# The time is input.context.time: the gateway's clock when the call arrived (RFC 3339,
# UTC), never a value the agent sends, so tests can pin it. A timezone name the engine
# does not know fails every write with 503 policy_unavailable (fail closed), so check
# data changes with `callgate policy test`.
#
# Adopt with `policy.decision: examples/business_hours/decision` in callgate.yaml.
package examples.business_hours

import rego.v1

default decision := {"allow": false, "reason": "no rule of the business_hours policy allowed this call"}

decision := {
	"allow": false,
	"reason": sprintf("the %s header is not allowed; send the request with its real HTTP method", [min(override_headers)]),
} if {
	count(override_headers) > 0
} else := {
	"allow": true,
	"reason": sprintf("%s is a read, allowed at any time", [method]),
	"tags": {"hours": "any"},
} if {
	method in data.examples.business_hours.read_methods
} else := {
	"allow": false,
	"reason": "the call has no valid time (context.time), so business hours cannot be checked",
} if {
	not valid_time
} else := {
	"allow": true,
	"reason": sprintf("%s is allowed during business hours (%s)", [method, now_text]),
	"tags": {"hours": "business"},
} if {
	open_now
} else := {
	"allow": true,
	"approval_required": true,
	"reason": sprintf("%s outside business hours needs approval by %s; %s", [
		method,
		concat(" or ", data.examples.business_hours.after_hours_approval.roles),
		hours_text,
	]),
	"approval": object.union({"min_approvals": 1}, data.examples.business_hours.after_hours_approval),
	"tags": {"hours": "after", "risk": "high"},
} if {
	is_object(data.examples.business_hours.after_hours_approval)
} else := {
	"allow": false,
	"reason": sprintf("%s is only allowed during business hours; %s", [method, hours_text]),
	"tags": {"hours": "after"},
} if {
	is_string(method)
}

method := input.request.method

# Checked before parsing: time.parse_rfc3339_ns fails the whole evaluation (503) on text
# it cannot read, where OPA would only make the rule undefined.
valid_time if {
	is_string(input.context.time)
	regex.match(`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`, input.context.time)
}

local := [ns, data.examples.business_hours.timezone] if {
	valid_time
	ns := time.parse_rfc3339_ns(input.context.time)
}

weekday := time.weekday(local)

clock := time.clock(local)

today := sprintf("%04d-%02d-%02d", time.date(local))

minute_of_day := (clock[0] * 60) + clock[1]

# "09:30" -> 570, "24:00" -> 1440; undefined for anything else, which keeps the window
# shut. Digit by digit: regorus's to_number refuses leading zeros ("09").
minutes(hh_mm) := (((d[0] * 10) + d[1]) * 60) + (d[2] * 10) + d[3] if {
	regex.match(`^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$`, hh_mm)
	d := [to_number(c) | some c in split(replace(hh_mm, ":", ""), "")]
}

open_now if {
	weekday in data.examples.business_hours.days
	not today in data.examples.business_hours.holidays
	minute_of_day >= minutes(data.examples.business_hours.open)
	minute_of_day < minutes(data.examples.business_hours.close)
}

now_text := sprintf("%s %02d:%02d %s", [weekday, clock[0], clock[1], data.examples.business_hours.timezone])

holiday_text := " (a holiday)" if {
	today in data.examples.business_hours.holidays
} else := ""

hours_text := sprintf("business hours are %s, %s to %s %s, except holidays; it is now %s%s; reads (%s) are allowed at any time", [
	concat(", ", data.examples.business_hours.days),
	data.examples.business_hours.open,
	data.examples.business_hours.close,
	data.examples.business_hours.timezone,
	now_text,
	holiday_text,
	concat(", ", data.examples.business_hours.read_methods),
])

override_headers contains name if {
	some name in ["x-http-method-override", "x-http-method", "x-method-override"]
	input.request.headers[name]
}
