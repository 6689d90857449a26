"""The pipeline's order is a contract (docs/architecture.md): pin it."""

from gateway.pipeline import STAGES


def test_stage_order() -> None:
    assert [name for name, _ in STAGES] == [
        "identify",
        "route",
        "switches",
        "admit",
        "describe",
        "decide",
        "idempotency",
        "limits",
        "approval",
        "intent",
        "forward",
    ]


def test_every_stage_is_its_modules_run() -> None:
    for name, stage in STAGES:
        assert stage.__module__ == f"gateway.pipeline.{name}"
        assert stage.__name__ == "run"
