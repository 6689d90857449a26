"""The `identity.jwt` section (docs/configuration.md, "Workload identity"): what validation
refuses, each as one `path: problem` line, and the files resolved next to the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config


def provider(extra: str) -> str:
    return (
        "identity:\n  jwt:\n    - {issuer: 'https://idp.example', audiences: [callgate]"
        + extra
        + "}\n"
    )


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("/srv/callgate"), {})
    return info.value.problems


BAD = [
    ("alg-none", ", discovery: true, algorithms: [RS256, none]", "none is never accepted"),
    ("alg-hs256", ", discovery: true, algorithms: [HS256]", "HS256 is never accepted"),
    ("alg-unknown", ", discovery: true, algorithms: [RS1]", "unknown algorithm 'RS1'"),
    ("no-key-source", "", "give exactly one of discovery: true, jwks_url or jwks_file"),
    (
        "two-key-sources",
        ", discovery: true, jwks_url: 'https://idp.example/keys'",
        "give exactly one of discovery: true, jwks_url or jwks_file",
    ),
    ("jwks-url-not-http", ", jwks_url: 'file:///etc/keys'", "must be an absolute http://"),
    ("no-audience", ", discovery: true, audiences: []", "identity.jwt[0].audiences"),
    ("leeway-too-long", ", discovery: true, leeway_s: 3600", "identity.jwt[0].leeway_s"),
    ("unknown-key", ", discovery: true, jku: x", "identity.jwt[0].jku: unknown key"),
]


@pytest.mark.parametrize(("extra", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_providers_are_refused(extra: str, expected: str) -> None:
    problems = problems_of(provider(extra).replace("audiences: [callgate], audiences", "audiences"))
    assert any(expected in problem for problem in problems), problems


def test_an_issuer_configured_twice_is_refused() -> None:
    one = "    - {issuer: 'https://idp.example', audiences: [a], discovery: true}\n"
    problems = problems_of("identity:\n  jwt:\n" + one + one)
    assert any("configured twice" in problem for problem in problems), problems


def test_defaults_and_files_next_to_the_config(tmp_path: Path) -> None:
    config = parse_config(
        provider(", jwks_file: keys/jwks.json, ca_file: ca.crt, token_file: /run/token"),
        tmp_path,
        {},
    )
    (jwt,) = config.identity.jwt
    assert jwt.algorithms == ("RS256", "ES256", "EdDSA")
    assert jwt.agent_id == "sub" and jwt.roles is None and jwt.leeway_s == 30
    assert jwt.jwks_file == tmp_path / "keys" / "jwks.json"
    assert jwt.ca_file == tmp_path / "ca.crt"
    assert jwt.token_file == Path("/run/token")
