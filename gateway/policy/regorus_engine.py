"""Building a regorus Engine and reading its errors, for serving and for Rego tests.

A regorus Engine is bound to the thread that made it; see gateway/policy/embedded.py.
"""

from __future__ import annotations

import re
from typing import Any

import regorus

from gateway.policy.builtins import unknown_functions
from gateway.policy.errors import PolicyLoadError

_LOCATION = re.compile(r"-->\s*(\S+?):(\d+):(\d+)")
_ERROR_LINE = re.compile(r"^error:\s*(.+)$", re.MULTILINE)


def engine_message(exc: BaseException) -> str:
    """One line from a regorus error: `file:line:col: message` where it names a place.

    regorus renders errors like a compiler (a source excerpt with a caret), followed by
    a Rust backtrace and a 'Caused by' echo; only the place and the message are kept.
    """
    text = str(exc)
    for marker in ("\nStack backtrace:", "\nCaused by:"):
        text = text.split(marker, 1)[0]
    location, error = _LOCATION.search(text), _ERROR_LINE.search(text)
    if location and error:
        file, line, col = location.groups()
        return f"{file}:{line}:{col}: {error.group(1).strip()}"
    return " ".join(text.split()) or type(exc).__name__


def reraise_interrupts(exc: BaseException) -> None:
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        raise exc


def build_engine(modules: tuple[tuple[str, str], ...], data: dict[str, Any]) -> Any:
    """A regorus Engine with these modules and data; PolicyLoadError on any problem."""
    engine = regorus.Engine()
    problems = []
    for rel, text in modules:
        try:
            engine.add_policy(rel, text)
        except BaseException as exc:
            reraise_interrupts(exc)
            message = engine_message(exc)
            problems.append(message if message.startswith(f"{rel}:") else f"{rel}: {message}")
    if not problems:
        try:
            engine.add_data(data)
        except BaseException as exc:  # the loader lets only JSON values through; still
            reraise_interrupts(exc)
            problems = [f"the data files cannot be loaded: {engine_message(exc)}"]
        else:
            problems = unknown_functions(engine.get_ast_as_json())
    if problems:
        # Freed here, on this thread: the traceback would otherwise keep it for a garbage
        # collection that may run on any thread, and regorus engines must not be freed
        # on another thread than their own.
        engine = None
        raise PolicyLoadError(problems)
    return engine
