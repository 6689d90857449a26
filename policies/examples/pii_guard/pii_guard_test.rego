# Tests bring their own data (`with data.examples.pii_guard.payment_tools as ...`), so
# they pass whatever you change in data.json and whichever folder `callgate policy test`
# is run on. The card numbers are the well-known test numbers of card networks.
package examples.pii_guard_test

import rego.v1

import data.examples.pii_guard

call(tool, query, body) := {
	"agent": {"id": "support-bot", "roles": ["support"]},
	"tool": {"name": tool, "kind": "http"},
	"request": {"method": "POST", "path": "/v1/things", "query": query, "headers": {}, "body": body, "size": 0},
	"mcp": null,
	"context": {"request_id": "r1", "time": "2026-11-23T18:00:00Z", "session": null, "model": null},
}

decide(doc) := d if {
	d := pii_guard.decision with input as doc with data.examples.pii_guard.payment_tools as ["payments", "psp"]
}

test_clean_body_is_allowed if {
	d := decide(call("tickets", {}, {"subject": "refund", "order": "A-1234", "amount": 1200}))
	d == {"allow": true, "reason": "no payment card number in the request", "tags": {"pii": "none"}}
}

test_card_number_to_other_tool_is_denied_and_redacted if {
	d := decide(call("tickets", {}, {"subject": "refund", "note": "card 4111 1111 1111 1111, exp 12/26"}))
	d == {
		"allow": false,
		"reason": "the request carries what looks like a payment card number (at request.body.note); card numbers may only be sent to payments, psp; remove it and send the call again",
		"redact": ["request.body.note"],
		"tags": {"pii": "card_number", "risk": "high"},
	}
}

test_card_number_to_payment_tool_is_allowed_and_redacted if {
	d := decide(call("payments", {}, {"card": {"number": "5555555555554444"}, "amount": 10}))
	d.allow == true
	d.redact == ["request.body.card.number"]
	d.reason == "card number at request.body.card.number may go to payment tool payments; it is masked in the audit log"
}

test_number_failing_luhn_is_not_a_card if {
	decide(call("tickets", {}, {"note": "4111 1111 1111 1112"})).allow
}

test_lengths_13_to_19_are_checked if {
	decide(call("tickets", {}, {"n": "4222222222222"})).allow == false # 13 digits, Visa test
	decide(call("tickets", {}, {"n": "378282246310005"})).allow == false # 15 digits, Amex test
	decide(call("tickets", {}, {"n": "6011 0009 9013 9424"})).allow == false # Discover test
	decide(call("tickets", {}, {"n": "422222222222"})).allow # 12 digits
	decide(call("tickets", {}, {"n": "41111111111111111111"})).allow # 20 digits
}

test_dashes_and_spaces_group_digits if {
	decide(call("tickets", {}, {"n": "pay with 4111-1111-1111-1111 please"})).allow == false
	decide(call("tickets", {}, {"n": "4111--1111--1111--1111"})).allow # not a single separator
}

test_leading_zero_runs_are_not_cards if {
	decide(call("tickets", {}, {"n": "0000000000000"})).allow
}

test_integer_card_numbers_are_found if {
	d := decide(call("tickets", {}, {"pan": 4111111111111111}))
	d.redact == ["request.body.pan"]
}

test_nested_lists_and_query_values_are_searched if {
	d := decide(call("crm", {"q": ["x", "4111111111111111"]}, {"items": [{"memo": "ok"}, {"memo": "5555 5555 5555 4444"}]}))
	d.allow == false
	d.redact == ["request.body.items.1.memo", "request.query.q"]
}

test_body_that_is_just_a_string_is_searched if {
	d := decide(call("crm", {}, "4111111111111111"))
	d.redact == ["request.body"]
}

test_other_script_digits_do_not_break_the_guard if {
	decide(call("crm", {}, {"n": "٤١١١١١١١١١١١١١١١"})).allow
}

test_decision_always_defined_for_odd_input if {
	d := decide({})
	d.allow == false
	is_string(d.reason)
}
