# Example: money thresholds.
#
# Calls that move money (data `endpoints`: tool -> methods and path globs) are judged by
# the amount in their JSON body (data `amount_field`, `currency_field`: paths into the
# body, so ["amount"] or ["transfer", "amount"]):
#
# - up to `approval_above` of its currency: allowed;
# - over `approval_above`: parked for a human with one of `approval.roles`;
# - over `deny_above`: refused outright.
#
# Thresholds are per currency (data `currencies`, keyed by upper-case ISO 4217 code) and
# in the unit the tool's amount field uses: for an API that counts cents, write 100000
# for 1000.00 EUR. A currency not in `currencies` is refused, since nobody said what is
# a large amount of it; a body without a currency uses `default_currency` when that is
# set, and is refused when it is null. Amounts may be JSON numbers or decimal strings
# ("1200.50"); anything else, and negative amounts, are refused.
#
# A parked call shows approvers `approval.summary` ("POST /v1/refunds · 1200 EUR") and
# the amount and currency fields first (`approval.fields`).
#
# Reads (GET, HEAD) on these tools are allowed; other calls are refused. Money calls
# also carry the decision's `rate_limits` from data `rate_limit` (per agent).
#
# Adopt with `policy.decision: examples/money/decision` in callgate.yaml.
package examples.money

import rego.v1

default decision := {"allow": false, "reason": "no rule of the money policy allowed this call"}

decision := {
	"allow": false,
	"reason": sprintf("the %s header is not allowed; send the request with its real HTTP method", [min(override_headers)]),
} if {
	count(override_headers) > 0
} else := {
	"allow": true,
	"reason": sprintf("%s on %s is a read", [input.request.method, input.tool.name]),
	"tags": {"money": false},
} if {
	input.tool.name in object.keys(data.examples.money.endpoints)
	input.request.method in {"GET", "HEAD"}
} else := {
	"allow": false,
	"reason": sprintf("%s %s on %s does not move money and is not a read; calls that move money: %s", [
		input.request.method,
		input.request.path,
		input.tool.name,
		money_calls,
	]),
} if {
	not money_call
} else := {
	"allow": false,
	"reason": amount_problem,
	"tags": {"money": true, "risk": "high"},
} if {
	amount_problem
} else := {
	"allow": false,
	"reason": sprintf("amounts over %v %s are never sent by agents (this call: %v %s); ask a human to make it", [
		limits.deny_above, currency, amount, currency,
	]),
	"tags": tags("blocked"),
} if {
	amount > limits.deny_above
} else := {
	"allow": true,
	"approval_required": true,
	"reason": sprintf("payments over %v %s need %s approval (this call: %v %s)", [
		limits.approval_above, currency, concat(" or ", approval_request.roles), amount, currency,
	]),
	"approval": object.union(approval_request, {
		"summary": sprintf("%s %s · %v %s", [input.request.method, input.request.path, amount, currency]),
		"fields": [concat(".", data.examples.money.amount_field), concat(".", data.examples.money.currency_field)],
	}),
	"rate_limits": rate_limits,
	"tags": tags("high"),
} if {
	amount > limits.approval_above
} else := {
	"allow": true,
	"reason": sprintf("%v %s is within the %v %s agents may move without approval", [
		amount, currency, limits.approval_above, currency,
	]),
	"rate_limits": rate_limits,
	"tags": tags("low"),
}

body := input.request.body

money_call if {
	endpoint := data.examples.money.endpoints[input.tool.name]
	input.request.method in endpoint.methods
	some pattern in endpoint.paths
	glob.match(pattern, ["/"], input.request.path)
}

money_calls := concat("; ", [sprintf("%s %s on %s", [concat("|", e.methods), concat(", ", e.paths), tool]) |
	some tool, e in data.examples.money.endpoints
])

# The first problem that keeps the amount from being judged, if any.
amount_problem := sprintf("the body must be a JSON object with the amount at %s", [field_name(data.examples.money.amount_field)]) if {
	not is_object(body)
} else := sprintf("the amount at %s is missing", [field_name(data.examples.money.amount_field)]) if {
	raw_amount == null
} else := sprintf("the amount at %s must be a number or a decimal string, not %s", [
	field_name(data.examples.money.amount_field),
	json.marshal(raw_amount),
]) if {
	not amount
} else := sprintf("the amount must not be negative (got %v)", [amount]) if {
	amount < 0
} else := sprintf("say which currency the amount is in, at %s; known currencies: %s", [
	field_name(data.examples.money.currency_field),
	known_currencies,
]) if {
	not currency
} else := sprintf("currency %s has no thresholds in this policy; known currencies: %s", [currency, known_currencies]) if {
	not limits
}

raw_amount := object.get(body, data.examples.money.amount_field, null) if is_object(body)

amount := raw_amount if is_number(raw_amount)

# Plain decimal strings only: to_number would also read "1e9", and it fails the whole
# evaluation (503 policy_unavailable) on text it cannot read, which in regorus includes
# leading zeros ("007").
amount := to_number(raw_amount) if {
	is_string(raw_amount)
	regex.match(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?$`, raw_amount)
}

currency := upper(given) if {
	is_object(body)
	given := object.get(body, data.examples.money.currency_field, null)
	is_string(given)
} else := data.examples.money.default_currency if {
	is_string(data.examples.money.default_currency)
}

# Both thresholds must be numbers: a currency with one missing is refused, not unlimited.
limits := found if {
	found := data.examples.money.currencies[currency]
	is_number(found.approval_above)
	is_number(found.deny_above)
}

known_currencies := concat(", ", sort(object.keys(data.examples.money.currencies)))

approval_request := object.union({"roles": [], "min_approvals": 1}, data.examples.money.approval)

rate_limits := [{
	"key": sprintf("money:%s", [input.agent.id]),
	"limit": data.examples.money.rate_limit.limit,
	"window_s": data.examples.money.rate_limit.window_s,
}] if {
	is_object(data.examples.money.rate_limit)
} else := []

tags(risk) := {"money": true, "risk": risk, "amount": amount, "currency": currency}

field_name(field) := concat(".", ["body", concat(".", field)])

override_headers contains name if {
	some name in [
		"x-http-method-override", "x-http-method", "x-method-override",
		"x_http_method_override", "x_http_method", "x_method_override",
	]
	input.request.headers[name]
}
