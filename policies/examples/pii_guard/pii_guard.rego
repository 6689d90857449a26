# Example: keep payment card numbers away from tools that should not see them.
#
# Every string (and integer) in the JSON body and every query value is searched for runs
# of digits, optionally grouped by single spaces or dashes ("4111 1111-1111 1111"). A run
# of 13 to 19 digits that does not start with 0 and passes the Luhn checksum is taken for
# a card number. A call carrying one is refused, unless its tool is in data
# `payment_tools`; either way the decision's `redact` lists where the numbers are
# (request.body.card.number, request.query.pan), so the audit log masks them.
#
# Limits, on purpose kept simple: a card number glued to more digits ("...1111 2024") is
# not seen, and any 13-19 digit identifier that happens to pass Luhn (1 in 10 do, and
# IMEI numbers always do) is taken for a card. Non-JSON bodies and headers are not
# searched. Body keys containing "." cannot be named exactly in `redact`.
#
# This policy allows every call without a card number: it is a guard to combine with a
# policy that decides who may call what (see ../README.md, "Combining examples").
#
# Adopt with `policy.decision: examples/pii_guard/decision` in callgate.yaml.
package examples.pii_guard

import rego.v1

default decision := {"allow": false, "reason": "no rule of the pii_guard policy allowed this call"}

decision := {
	"allow": true,
	"reason": "no payment card number in the request",
	"tags": {"pii": "none"},
} if {
	is_object(input.request)
	count(card_fields) == 0
} else := {
	"allow": true,
	"reason": sprintf("card number at %s may go to payment tool %s; it is masked in the audit log", [
		concat(", ", sort(card_fields)),
		input.tool.name,
	]),
	"redact": sort(card_fields),
	"tags": {"pii": "card_number"},
} if {
	input.tool.name in data.examples.pii_guard.payment_tools
} else := {
	"allow": false,
	"reason": sprintf("the request carries what looks like a payment card number (at %s); card numbers may only be sent to %s; remove it and send the call again", [
		concat(", ", sort(card_fields)),
		concat(", ", sort(data.examples.pii_guard.payment_tools)),
	]),
	"redact": sort(card_fields),
	"tags": {"pii": "card_number", "risk": "high"},
} if {
	is_object(input.request)
}

# Where card numbers are, as `redact` paths.
card_fields contains concat(".", ["request", "body", path]) if {
	walk(input.request.body, [keys, value])
	card_in(value)
	count(keys) > 0
	path := concat(".", [sprintf("%v", [k]) | some k in keys])
}

card_fields contains "request.body" if card_in(input.request.body)

card_fields contains concat(".", ["request", "query", name]) if {
	some name, values in input.request.query
	some value in values
	card_in(value)
}

card_in(value) if {
	is_string(value)
	some run in regex.find_n(`[0-9]+(?:[ -][0-9]+)*`, value, -1)
	card_number(strings.replace_n({" ": "", "-": ""}, run))
}

card_in(value) if {
	is_number(value)
	value == floor(value)
	value > 0
	card_number(format_int(value, 10))
}

# [0-9], not \d: \d also matches other scripts' digits, which to_number cannot read.
card_number(digits) if {
	regex.match(`^[1-9][0-9]{12,18}$`, digits)
	luhn_valid(digits)
}

# Luhn: from the right, double every second digit (minus 9 when over 9); the sum of all
# digits must end in 0.
luhn_valid(digits) if {
	reversed := [to_number(c) | some c in split(strings.reverse(digits), "")]
	sum([luhn_value(i, d) | some i, d in reversed]) % 10 == 0
}

luhn_value(i, d) := d if i % 2 == 0

luhn_value(i, d) := (2 * d) - 9 if {
	i % 2 == 1
	d > 4
}

luhn_value(i, d) := 2 * d if {
	i % 2 == 1
	d <= 4
}
