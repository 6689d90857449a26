"""The `approvers_sso` section (docs/configuration.md, docs/sso.md): what validation
refuses, each as one `path: problem` line, and the secrets taken from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, parse_config

SECRET_ENV = {
    "SSO_CLIENT_SECRET": "the-client-secret",
    "SSO_SESSION_SECRET": "s" * 40,
}
GOOD: dict[str, Any] = {
    "issuer": "https://login.example.com/realms/acme",
    "client_id": "callgate",
    "client_secret": "${SSO_CLIENT_SECRET}",
    "redirect_url": "https://callgate-admin.example.com/ui/sso/callback",
    "groups": {"payments-approvers": ["finance"], "sre": ["ops", "operator"]},
    "session_secret": "${SSO_SESSION_SECRET}",
}


def config_text(**changes: Any) -> str:
    sso = {**GOOD, **changes}
    return yaml.safe_dump({"approvers_sso": {k: v for k, v in sso.items() if v is not None}})


def problems_of(text: str, env: dict[str, str] = SECRET_ENV) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("/srv/callgate"), env)
    return info.value.problems


def test_the_secrets_come_from_the_environment_and_the_defaults_hold() -> None:
    sso = parse_config(config_text(), Path("/srv/callgate"), SECRET_ENV).approvers_sso
    assert sso is not None
    assert sso.client_secret == "the-client-secret"
    assert sso.session_secret == "s" * 40
    assert sso.scopes == ("openid", "email", "profile")
    assert (sso.groups_claim, sso.approver_id, sso.audience) == ("groups", "email", None)
    assert (sso.session_idle_s, sso.session_absolute_s) == (1800, 43200)
    assert sso.groups["sre"] == ("ops", "operator")
    # The issuer as the JWT verifier sees it: discovery, ID tokens for the client.
    assert sso.provider.discovery and sso.provider.audiences == ("callgate",)


def test_an_unset_secret_variable_is_named() -> None:
    problems = problems_of(config_text(), {"SSO_SESSION_SECRET": "s" * 40})
    assert problems == [
        "approvers_sso.client_secret: environment variable SSO_CLIENT_SECRET is not set"
    ]


BAD = [
    ("no-issuer", {"issuer": None}, "approvers_sso.issuer: Field required"),
    ("issuer-not-http", {"issuer": "login.example.com"}, "approvers_sso.issuer: must be an"),
    ("redirect-not-http", {"redirect_url": "/ui/sso/callback"}, "approvers_sso.redirect_url"),
    ("no-client-id", {"client_id": None}, "approvers_sso.client_id: Field required"),
    ("no-secret", {"client_secret": None}, "approvers_sso.client_secret: Field required"),
    ("no-openid", {"scopes": ["email"]}, "approvers_sso.scopes: must include openid"),
    ("no-groups", {"groups": {}}, "approvers_sso.groups"),
    ("role-not-a-name", {"groups": {"sre": ["has space"]}}, "approvers_sso.groups.sre[0]"),
    ("short-secret", {"session_secret": "short"}, "approvers_sso.session_secret"),
    ("zero-idle", {"session_idle_s": 0}, "approvers_sso.session_idle_s"),
    (
        "idle-over-absolute",
        {"session_idle_s": 7200, "session_absolute_s": 3600},
        "session_idle_s must not exceed session_absolute_s",
    ),
    ("alg-hs256", {"algorithms": ["HS256"]}, "HS256 is never accepted"),
    ("unknown-key", {"jwks_url": "https://x"}, "approvers_sso.jwks_url: unknown key"),
]


@pytest.mark.parametrize(("changes", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_settings_are_refused(changes: dict[str, Any], expected: str) -> None:
    problems = problems_of(config_text(**changes))
    assert any(expected in problem for problem in problems), problems
