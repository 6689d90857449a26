"""The pipeline's order is a contract (docs/architecture.md): pin it."""

from gateway.pipeline import STAGES
from gateway.pipeline.stage import Around


def test_stage_order() -> None:
    assert [name for name, _ in STAGES] == [
        "account",
        "identify",
        "route",
        "switches",
        "admit",
        "describe",
        "operation",
        "decide",
        "idempotency",
        "limits",
        "approval",
        "intent",
        "sending",
        "forward",
    ]


def test_every_stage_is_a_function_of_its_module() -> None:
    """A stage is its module's `run`, or an around-stage its module's `around`; the one
    exception is `sending`, idempotency's hold on its claim while the call is sent."""
    for name, stage in STAGES:
        function = stage.wrap if isinstance(stage, Around) else stage
        module = "idempotency" if name == "sending" else name
        assert function.__module__ == f"gateway.pipeline.{module}"
        expected = (
            "sending" if name == "sending" else "around" if isinstance(stage, Around) else "run"
        )
        assert function.__name__ == expected
