"""Agents identified by their platform's JWTs (docs/configuration.md, "Workload identity"):
`keys`, each issuer's signing keys, fetched and cached; `claims`, reading a claim by its
dotted path; `verifier`, a token to its agent or the check it failed."""
