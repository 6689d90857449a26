# Tests bring their own data (`with data.examples.money.* as ...`), so they pass
# whatever you change in data.json and whichever folder `callgate policy test` is run on.
package examples.money_test

import rego.v1

import data.examples.money

call(method, path, body) := {
	"agent": {"id": "support-bot", "roles": ["support"]},
	"tool": {"name": "payments", "kind": "http"},
	"request": {"method": method, "path": path, "query": {}, "headers": {}, "body": body, "size": 41},
	"mcp": null,
	"context": {"request_id": "r1", "time": "2026-11-23T18:00:00Z", "session": "sess-42", "model": null},
}

refund(body) := call("POST", "/v1/refunds", body)

decide_with(doc, default_currency) := d if {
	d := money.decision with input as doc
		with data.examples.money.endpoints as {"payments": {"methods": ["POST"], "paths": ["/v1/refunds", "/v1/transfers/*"]}}
		with data.examples.money.amount_field as ["amount"]
		with data.examples.money.currency_field as ["currency"]
		with data.examples.money.default_currency as default_currency
		with data.examples.money.currencies as {
			"EUR": {"approval_above": 1000, "deny_above": 10000},
			"JPY": {"approval_above": 150000, "deny_above": 1500000},
			"CHF": {"approval_above": 1000},
		}
		with data.examples.money.approval as {"roles": ["finance"], "ttl_s": 3600}
		with data.examples.money.rate_limit as {"limit": 20, "window_s": 3600}
}

decide(doc) := decide_with(doc, null)

test_small_refund_is_allowed if {
	d := decide(refund({"amount": 120, "currency": "EUR"}))
	d == {
		"allow": true,
		"reason": "120 EUR is within the 1000 EUR agents may move without approval",
		"rate_limits": [{"key": "money:support-bot", "limit": 20, "window_s": 3600}],
		"tags": {"money": true, "risk": "low", "amount": 120, "currency": "EUR"},
	}
}

test_amount_at_the_threshold_needs_no_approval if {
	d := decide(refund({"amount": 1000, "currency": "EUR"}))
	d.allow == true
	not d.approval_required
}

test_amount_over_the_threshold_needs_finance_approval if {
	d := decide(refund({"amount": 1200, "currency": "EUR"}))
	d.allow == true
	d.approval_required == true
	d.approval.roles == ["finance"]
	d.approval.min_approvals == 1
	d.approval.ttl_s == 3600
	d.reason == "payments over 1000 EUR need finance approval (this call: 1200 EUR)"
	d.tags.risk == "high"
}

test_fractions_count if {
	decide(refund({"amount": 1000.01, "currency": "EUR"})).approval_required
}

test_amount_over_the_ceiling_is_denied if {
	d := decide(refund({"amount": 10000.5, "currency": "EUR"}))
	d.allow == false
	d.reason == "amounts over 10000 EUR are never sent by agents (this call: 10000.5 EUR); ask a human to make it"
}

test_thresholds_are_per_currency if {
	decide(refund({"amount": 120000, "currency": "JPY"})).allow
	not decide(refund({"amount": 120000, "currency": "JPY"})).approval_required
	decide(refund({"amount": 120000, "currency": "EUR"})).allow == false
}

test_currency_code_is_case_insensitive if {
	decide(refund({"amount": 1200, "currency": "eur"})).approval_required
}

test_unknown_currency_is_denied if {
	d := decide(refund({"amount": 5, "currency": "BTC"}))
	d.allow == false
	d.reason == "currency BTC has no thresholds in this policy; known currencies: CHF, EUR, JPY"
}

test_currency_with_a_missing_threshold_is_denied if {
	d := decide(refund({"amount": 5, "currency": "CHF"}))
	d.allow == false
	d.reason == "currency CHF has no thresholds in this policy; known currencies: CHF, EUR, JPY"
}

test_missing_currency_is_denied_without_a_default if {
	d := decide(refund({"amount": 5}))
	d.reason == "say which currency the amount is in, at body.currency; known currencies: CHF, EUR, JPY"
}

test_missing_currency_uses_the_default_when_set if {
	d := decide_with(refund({"amount": 1200}), "EUR")
	d.approval_required
	d.tags.currency == "EUR"
}

test_decimal_string_amounts_are_read if {
	d := decide(refund({"amount": "1200.50", "currency": "EUR"}))
	d.approval_required
	d.tags.amount == 1200.5
	decide(refund({"amount": "0.50", "currency": "EUR"})).allow
}

test_odd_amounts_are_denied if {
	every amount in ["1e9", " 12", "007", "1,200", "twelve", "", true, [1], {"value": 1}] {
		d := decide(refund({"amount": amount, "currency": "EUR"}))
		d.allow == false
		startswith(d.reason, "the amount at body.amount must be a number or a decimal string, not ")
	}
}

test_negative_amount_is_denied if {
	d := decide(refund({"amount": -50, "currency": "EUR"}))
	d.reason == "the amount must not be negative (got -50)"
}

test_missing_amount_is_denied if {
	d := decide(refund({"currency": "EUR"}))
	d.reason == "the amount at body.amount is missing"
}

test_non_json_body_is_denied if {
	d := decide(refund(null))
	d.reason == "the body must be a JSON object with the amount at body.amount"
}

test_reads_are_allowed if {
	d := decide(call("GET", "/v1/refunds/re_1", null))
	d.allow == true
	d.tags.money == false
}

test_other_writes_are_denied_with_the_money_calls if {
	d := decide(call("DELETE", "/v1/refunds", null))
	d == {
		"allow": false,
		"reason": "DELETE /v1/refunds on payments does not move money and is not a read; calls that move money: POST /v1/refunds, /v1/transfers/* on payments",
	}
}

test_method_override_is_refused if {
	d := decide(object.union(refund({"amount": 99999, "currency": "EUR"}), {"request": {"method": "GET", "headers": {"x-http-method-override": "POST"}}}))
	d.allow == false
	d.reason == "the x-http-method-override header is not allowed; send the request with its real HTTP method"
}

test_decision_always_defined_for_odd_input if {
	d := decide({})
	d.allow == false
	is_string(d.reason)
}

test_method_override_with_underscores_is_refused if {
	d := decide(object.union(refund({"amount": 5, "currency": "EUR"}), {"request": {"method": "POST", "headers": {"x_http_method_override": "DELETE"}}}))
	d.allow == false
	d.reason == "the x_http_method_override header is not allowed; send the request with its real HTTP method"
}

test_approval_summary_says_what_and_how_much if {
	d := decide(refund({"amount": "1200.50", "currency": "eur", "order": "A1"}))
	d.approval.summary == "POST /v1/refunds · 1200.5 EUR"
}

test_approval_fields_are_the_amount_and_currency_paths if {
	d := decide(refund({"amount": 1200, "currency": "EUR"}))
	d.approval.fields == ["amount", "currency"]
}

test_approval_fields_follow_nested_amount_fields if {
	d := money.decision with input as refund({"transfer": {"amount": 5000, "currency": "EUR"}})
		with data.examples.money.endpoints as {"payments": {"methods": ["POST"], "paths": ["/v1/refunds"]}}
		with data.examples.money.amount_field as ["transfer", "amount"]
		with data.examples.money.currency_field as ["transfer", "currency"]
		with data.examples.money.default_currency as null
		with data.examples.money.currencies as {"EUR": {"approval_above": 1000, "deny_above": 10000}}
		with data.examples.money.approval as {"roles": ["finance"]}
		with data.examples.money.rate_limit as null
	d.approval.fields == ["transfer.amount", "transfer.currency"]
	d.approval.summary == "POST /v1/refunds · 5000 EUR"
}
