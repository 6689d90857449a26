"""Read a policy folder: Rego modules, their tests, data files, and the set's version.

- `*.rego` are policy modules; `*_test.rego` are Rego unit tests, loaded only by the test
  runner, never served.
- `*.json`, `*.yaml`, `*.yml` are data. Like `opa run`, a file's content (an object) is
  placed at `data.<its folder path>`: `policies/data.json` at `data`, `policies/teams/x.json`
  at `data.teams`. Two files setting the same key is an error.
- The version is the SHA-256 of the served files' relative paths and bytes, so any edit to a
  module or a data file changes it and a test-only edit does not (that one changes
  `tests_version`, so a reload still runs the new tests).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.policy.errors import PolicyLoadError

DATA_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class PolicySet:
    root: Path
    modules: tuple[tuple[str, str], ...]  # (relative path, Rego text), served
    tests: tuple[tuple[str, str], ...]  # (relative path, Rego text), *_test.rego
    data: dict[str, Any]
    data_files: tuple[str, ...]
    policy_version: str
    tests_version: str = ""  # the same hash over the tests: a test-only edit is a change too

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted([p for p, _ in self.modules] + list(self.data_files)))


def _visible_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _merge(into: dict[str, Any], new: dict[str, Any], where: str, problems: list[str]) -> None:
    for key, value in new.items():
        if key not in into:
            into[key] = value
        elif isinstance(into[key], dict) and isinstance(value, dict):
            _merge(into[key], value, f"{where}.{key}", problems)
        else:
            problems.append(f"{where}.{key} is set by more than one data file")


def _read_data(raw: bytes, suffix: str, rel: str, problems: list[str]) -> dict[str, Any] | None:
    try:
        text = raw.decode("utf-8")
        content = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        problems.append(f"{rel}: cannot read data file: {exc}")
        return None
    try:  # only what JSON can hold reaches the engine
        json.dumps(content, allow_nan=False)
    except TypeError as exc:  # YAML reads unquoted dates and times as such
        problems.append(f"{rel}: cannot read data file: {exc} (quote dates and times in YAML)")
        return None
    except ValueError:
        problems.append(f"{rel}: cannot read data file: it holds NaN or infinity")
        return None
    if content is None and suffix != ".json":
        return {}  # an empty YAML file holds no data
    if not isinstance(content, dict):
        problems.append(f"{rel}: a data file must hold an object at its top level")
        return None
    return content


def read_policy_dir(root: Path) -> PolicySet:
    if not root.is_dir():
        raise PolicyLoadError([f"{root}: policy folder does not exist"])
    modules: list[tuple[str, str]] = []
    tests: list[tuple[str, str]] = []
    data: dict[str, Any] = {}
    data_files: list[str] = []
    digest, tests_digest = hashlib.sha256(), hashlib.sha256()
    problems: list[str] = []
    for path in _visible_files(root):
        rel = path.relative_to(root).as_posix()
        if path.suffix != ".rego" and path.suffix not in DATA_SUFFIXES:
            continue
        try:
            raw = path.read_bytes()  # read once: the served text and the hash agree
        except OSError as exc:
            problems.append(f"{rel}: cannot read: {exc}")
            continue
        entry = rel.encode() + b"\0" + raw + b"\0"
        if path.suffix == ".rego":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"{rel}: cannot read: {exc}")
                continue
            if path.name.endswith("_test.rego"):
                tests.append((rel, text))
                tests_digest.update(entry)
                continue
            modules.append((rel, text))
        else:
            content = _read_data(raw, path.suffix, rel, problems)
            if content is None:
                continue
            nested = content
            for part in reversed(path.relative_to(root).parent.parts):
                nested = {part: nested}
            _merge(data, nested, "data", problems)
            data_files.append(rel)
        digest.update(entry)
    if not modules and not problems:
        problems.append(f"{root}: no .rego policy files found")
    if problems:
        raise PolicyLoadError(problems)
    return PolicySet(
        root=root,
        modules=tuple(modules),
        tests=tuple(tests),
        data=data,
        data_files=tuple(data_files),
        policy_version=digest.hexdigest(),
        tests_version=tests_digest.hexdigest(),
    )
