"""`callgate audit verify | export | tail | new` on real audit files: through click's
CliRunner on the real `callgate` command, and `tail` as a real process."""

from __future__ import annotations

import json
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from gateway.audit.chain import Row, chain_hash
from gateway.audit.events import event
from gateway.cli import main
from tests.support.audit_chain import append, call, calls, forge_in_middle, write_log

CALLGATE = str(Path(sys.executable).with_name("callgate"))
TIMEOUT = 5  # seconds, for every wait on the `tail` process


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["audit", *args], prog_name="callgate")


def jsonl(row: Row) -> str:
    """The export line of a row: its sealed record followed by prev_hash and hash."""
    _seq, _time, _kind, _request_id, text, link, digest = row
    return f'{text[:-1]},"prev_hash":"{link}","hash":"{digest}"}}'


def tamper_agent(path: Path, seq: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER audit_log_no_update")
    (text,) = db.execute("SELECT record FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    db.execute(
        "UPDATE audit_log SET record = ? WHERE seq = ?",
        (text.replace('"agent":"agent-', '"agent":"mallory-'), seq),
    )
    db.close()


@pytest.fixture
def audit_db(tmp_path: Path) -> tuple[Path, list[Row]]:
    path = tmp_path / "audit.db"
    return path, write_log(path, calls(6))


# --- verify -------------------------------------------------------------------------


def test_verify_intact(audit_db: tuple[Path, list[Row]]) -> None:
    path, rows = audit_db
    result = run("verify", "--db", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok 6 records, head {rows[-1][6]}\n"
    assert result.stderr == ""


def test_verify_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    write_log(path, [])
    result = run("verify", "--db", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok 0 records, head {'0' * 64}\n"


def test_verify_tampered(audit_db: tuple[Path, list[Row]]) -> None:
    path, _ = audit_db
    tamper_agent(path, 3)
    result = run("verify", "--db", str(path))
    assert result.exit_code == 1
    assert result.stdout == (
        "broken at record 3 (edited): its contents do not match its hash; "
        "2 records before it are intact\n"
    )


def test_verify_deleted_record(audit_db: tuple[Path, list[Row]]) -> None:
    path, _ = audit_db
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER audit_log_no_delete")
    db.execute("DELETE FROM audit_log WHERE seq = 3")
    db.close()
    result = run("verify", "--db", str(path))
    assert result.exit_code == 1
    assert result.stdout == (
        "broken at record 4 (deleted): record 3 is missing before record 4; "
        "2 records before it are intact\n"
    )


def test_verify_inserted_record(audit_db: tuple[Path, list[Row]]) -> None:
    path, _ = audit_db
    db = sqlite3.connect(path, isolation_level=None)
    forge_in_middle(db)
    db.close()
    result = run("verify", "--db", str(path))
    assert result.exit_code == 1
    assert result.stdout == (
        "broken at record 4 (inserted): record 4 links to record 3: what comes between was "
        "added later; 3 records before it are intact\n"
    )


def test_verify_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.db"
    result = run("verify", "--db", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"cannot open the audit log: {path}: no such database file\n"
    assert not path.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"this is not sqlite" * 100, "file is not a database", id="not-sqlite"),
        pytest.param(None, "no such table: audit_log", id="no-audit-table"),
    ],
)
def test_verify_unreadable_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "other.db"
    if content is None:
        sqlite3.connect(path).execute("CREATE TABLE things (a)").connection.close()
    else:
        path.write_bytes(content)
    result = run("verify", "--db", str(path))
    assert result.exit_code == 2
    assert result.stderr == f"cannot read the audit log: {message}\n"


@pytest.mark.parametrize("command", ["verify", "export", "tail", "new"])
@pytest.mark.parametrize(
    "options",
    [
        pytest.param([], id="neither"),
        pytest.param(["--config", "c.yaml", "--db", "a.db"], id="both"),
    ],
)
def test_exactly_one_of_config_and_db(tmp_path: Path, command: str, options: list[str]) -> None:
    extra = ["--after", str(tmp_path / "archive.db")] if command == "new" else []
    result = run(command, *options, *extra)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Error: give exactly one of --config or --db\n" in result.stderr
    assert result.stderr.startswith(f"Usage: callgate audit {command} [OPTIONS]")


def test_verify_lists_incomplete_calls(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    times = [f"2026-11-24T10:00:0{i}.000000Z" for i in range(5)]
    rows = write_log(
        path,
        [
            call("decision", "r1", time=times[0]),
            call("intent", "r1", time=times[1]),
            call("decision", "r2", agent="alice", tool="crm", time=times[2]),
            call("intent", "r2", agent="alice", tool="crm", method="POST", time=times[3]),
            call("outcome", "r1", time=times[4]),
        ],
    )
    result = run("verify", "--db", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"ok 5 records, head {rows[-1][6]}\n"
        "incomplete: record 4 2026-11-24T10:00:03.000000Z request r2 agent alice POST crm/items:"
        " intent without an outcome (still running, or the gateway stopped mid-call)\n"
    )


# --- --config -----------------------------------------------------------------------


def write_config(folder: Path, audit: dict[str, Any] | None) -> Path:
    """A callgate.yaml whose tool credential needs an environment variable that is unset."""
    folder.mkdir(parents=True, exist_ok=True)
    tree: dict[str, Any] = {
        "policy": {"path": "./policies"},
        "tools": [
            {
                "name": "crm",
                "upstream": "http://127.0.0.1:9",
                "credentials": {
                    "header": "Authorization",
                    "value": "Bearer ${UNSET_VAR_FOR_TEST}",
                },
            }
        ],
    }
    if audit is not None:
        tree["audit"] = audit
    path = folder / "callgate.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize(
    ("audit", "location"),
    [
        pytest.param({"url": "sqlite:///./data/log.db"}, "data/log.db", id="relative-url"),
        pytest.param({"url": "sqlite:///data/log.db"}, "data/log.db", id="bare-relative-url"),
        pytest.param(None, "callgate-data/audit.db", id="default-url"),
    ],
)
def test_config_finds_the_file_relative_to_the_config_folder(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    audit: dict[str, Any] | None,
    location: str,
) -> None:
    monkeypatch.delenv("UNSET_VAR_FOR_TEST", raising=False)
    config = write_config(tmp_path / "conf", audit)
    path = tmp_path / "conf" / location
    path.parent.mkdir()
    rows = write_log(path, calls(3))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = run("verify", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok 3 records, head {rows[-1][6]}\n"

    result = run("export", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(jsonl(row) + "\n" for row in rows)
    assert not (elsewhere / location).exists()


def test_config_with_an_absolute_audit_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSET_VAR_FOR_TEST", raising=False)
    path = tmp_path / "logs" / "audit.db"
    path.parent.mkdir()
    rows = write_log(path, calls(3))
    config = write_config(tmp_path / "conf", {"url": f"sqlite:///{path}"})
    monkeypatch.chdir(tmp_path / "conf")
    result = run("verify", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok 3 records, head {rows[-1][6]}\n"


def test_config_pointing_at_a_missing_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "conf", {"url": "sqlite:///./data/audit.db"})
    result = run("verify", "--config", str(config))
    assert result.exit_code == 2
    expected = (tmp_path / "conf" / "data" / "audit.db").resolve()
    assert result.stderr == f"cannot open the audit log: {expected}: no such database file\n"


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        pytest.param(
            lambda p: p.write_text("audit:\n  url: sqlite:///${UNSET_AUDIT_DIR_FOR_TEST}/a.db\n"),
            "audit.url: environment variable UNSET_AUDIT_DIR_FOR_TEST is not set",
            id="unset-variable-in-audit",
        ),
        pytest.param(
            lambda p: p.write_text("audit:\n  colour: red\n"),
            "audit.colour: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            lambda p: None, "(file): cannot read {path}: No such file or directory", id="missing"
        ),
    ],
)
def test_bad_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: Any, problem: str
) -> None:
    monkeypatch.delenv("UNSET_AUDIT_DIR_FOR_TEST", raising=False)
    config = tmp_path / "callgate.yaml"
    write(config)
    result = run("verify", "--config", str(config))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"{config}: {problem.format(path=config)}\n"


# --- export -------------------------------------------------------------------------

TIMED = [
    ("decision", "r1", "alice", "crm", "2026-11-24T10:00:00.000000Z"),
    ("intent", "r1", "alice", "crm", "2026-11-24T10:01:00.000000Z"),
    ("outcome", "r1", "alice", "crm", "2026-11-24T10:02:00.000000Z"),
    ("decision", "r2", "bob", "crm", "2026-11-24T10:03:00.000000Z"),
    ("decision", "r3", "alice", "mail", "2026-11-24T10:04:00.000000Z"),
    ("decision", "r4", "bob", "mail", "2026-11-25T00:00:00.000000Z"),
]


@pytest.fixture
def timed_db(tmp_path: Path) -> tuple[Path, list[Row]]:
    path = tmp_path / "audit.db"
    records = [
        call(kind, request_id, agent=agent, tool=tool, time=time)
        for kind, request_id, agent, tool, time in TIMED
    ]
    started = event("gateway_started", version="0.1.0")
    started["time"] = "2026-11-24T09:59:59.999999Z"
    return path, write_log(path, [started, *records])


def test_export_everything(timed_db: tuple[Path, list[Row]]) -> None:
    path, rows = timed_db
    result = run("export", "--db", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(jsonl(row) + "\n" for row in rows)
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [entry["seq"] for entry in entries] == [1, 2, 3, 4, 5, 6, 7]
    prev = "0" * 64
    for entry, row in zip(entries, rows, strict=True):
        assert (entry["prev_hash"], entry["hash"]) == (prev, row[6])
        sealed = {k: v for k, v in entry.items() if k not in ("prev_hash", "hash")}
        assert chain_hash(json.dumps(sealed, sort_keys=True, separators=(",", ":")), prev) == row[6]
        prev = row[6]


@pytest.mark.parametrize(
    ("options", "seqs"),
    [
        pytest.param(["--agent", "alice"], [2, 3, 4, 6], id="agent"),
        pytest.param(["--tool", "mail"], [6, 7], id="tool"),
        pytest.param(["--agent", "bob", "--tool", "crm"], [5], id="agent-and-tool"),
        pytest.param(["--agent", "nobody"], [], id="unknown-agent"),
        pytest.param(["--since", "2026-11-24T10:01:00"], [3, 4, 5, 6, 7], id="since-inclusive"),
        pytest.param(["--until", "2026-11-24T10:01:00"], [1, 2], id="until-exclusive"),
        pytest.param(
            ["--since", "2026-11-24T10:01:00Z", "--until", "2026-11-24T10:03:00.000001Z"],
            [3, 4, 5],
            id="since-and-until",
        ),
        pytest.param(["--since", "2026-11-24T11:03:00+01:00"], [5, 6, 7], id="since-with-offset"),
        pytest.param(["--since", "2026-11-25"], [7], id="since-a-date"),
        pytest.param(["--until", "2026-11-24"], [], id="until-a-date"),
        pytest.param(
            ["--agent", "alice", "--since", "2026-11-24T10:02:00", "--until", "2026-11-25"],
            [4, 6],
            id="agent-and-times",
        ),
    ],
)
def test_export_filters(
    timed_db: tuple[Path, list[Row]], options: list[str], seqs: list[int]
) -> None:
    path, rows = timed_db
    result = run("export", "--db", str(path), *options)
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(jsonl(rows[seq - 1]) + "\n" for seq in seqs)


def test_export_to_a_file(tmp_path: Path, timed_db: tuple[Path, list[Row]]) -> None:
    path, rows = timed_db
    output = tmp_path / "out.jsonl"
    result = run("export", "--db", str(path), "--tool", "crm", "--output", str(output))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert output.read_text(encoding="utf-8") == "".join(jsonl(row) + "\n" for row in rows[1:5])


def test_export_keeps_non_ascii_text(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    rows = write_log(path, [call("decision", "r1", agent="zoë", path="/naïve/☃")])
    output = tmp_path / "out.jsonl"
    result = run("export", "--db", str(path), "--agent", "zoë", "--output", str(output))
    assert result.exit_code == 0, result.output
    assert output.read_text(encoding="utf-8") == jsonl(rows[0]) + "\n"
    assert "☃" in output.read_text(encoding="utf-8")


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "24/11/2026"])
def test_export_bad_time(timed_db: tuple[Path, list[Row]], option: str, value: str) -> None:
    path, _ = timed_db
    result = run("export", "--db", str(path), option, value)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.endswith(
        f"\nError: Invalid value for {option}: {value!r} is not an ISO 8601 date or time\n"
    )


def test_export_bad_time_leaves_an_existing_output_file_alone(
    tmp_path: Path, timed_db: tuple[Path, list[Row]]
) -> None:
    path, _ = timed_db
    output = tmp_path / "last-month.jsonl"
    output.write_text("yesterday's export\n")
    result = run("export", "--db", str(path), "--since", "yesterday", "--output", str(output))
    assert result.exit_code == 2
    assert output.read_text() == "yesterday's export\n"


def test_export_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.db"
    result = run("export", "--db", str(path))
    assert result.exit_code == 2
    assert result.stderr == f"cannot open the audit log: {path}: no such database file\n"


def test_export_of_a_file_that_is_not_an_audit_log(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE things (a)").connection.close()
    result = run("export", "--db", str(path))
    assert result.exit_code == 2
    assert result.stderr == "cannot read the audit log: no such table: audit_log\n"


# --- tail ---------------------------------------------------------------------------


def read_lines(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    """Queue each line `proc` prints, so that the test can wait for one with a timeout."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)


@pytest.mark.parametrize(("last", "shown"), [(2, 2), (10, 4)], ids=["last-2", "more-than-all"])
def test_tail_prints_the_last_records_then_new_ones(tmp_path: Path, last: int, shown: int) -> None:
    path = tmp_path / "audit.db"
    rows = write_log(path, calls(4))
    proc = subprocess.Popen(
        [CALLGATE, "audit", "tail", "--db", str(path), "-n", str(last), "--interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(proc, lines), daemon=True)
    reader.start()
    try:
        for row in rows[-shown:]:
            assert lines.get(timeout=TIMEOUT) == jsonl(row) + "\n"

        db = sqlite3.connect(path, isolation_level=None)
        new = append(db, [call("decision", "r9", agent="late")])
        new += append(db, [call("intent", "r9", agent="late"), call("outcome", "r9")])
        db.close()
        for row in new:
            assert lines.get(timeout=TIMEOUT) == jsonl(row) + "\n"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 0
        reader.join(timeout=TIMEOUT)
        assert lines.empty()
        assert proc.stderr is not None
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_tail_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.db"
    result = subprocess.run(
        [CALLGATE, "audit", "tail", "--db", str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert result.stderr == f"cannot open the audit log: {path}: no such database file\n"


# --- new ----------------------------------------------------------------------------


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list[Row]]:
    path = tmp_path / "archive" / "audit-2026-11.db"
    path.parent.mkdir()
    return path, write_log(path, calls(5))


def head_of(path: Path) -> str:
    db = sqlite3.connect(path)
    (head,) = db.execute("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    db.close()
    return str(head)


def test_new_continues_the_archive(tmp_path: Path, archive: tuple[Path, list[Row]]) -> None:
    archive_path, archive_rows = archive
    archive_head = archive_rows[-1][6]
    new = tmp_path / "data" / "audit.db"
    result = run("new", "--after", str(archive_path), "--db", str(new))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"ok {new} continues {archive_path} from record 5, head {archive_head}\n"
    )

    result = run("verify", "--db", str(new))
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"ok 1 records, head {head_of(new)} (continues from {archive_head})\n")

    db = sqlite3.connect(new, isolation_level=None)
    rows = append(db, calls(3))
    db.close()
    assert [row[0] for row in rows] == [7, 8, 9]
    result = run("verify", "--db", str(new))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok 4 records, head {rows[-1][6]} (continues from {archive_head})\n"


def test_new_with_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive: tuple[Path, list[Row]]
) -> None:
    monkeypatch.delenv("UNSET_VAR_FOR_TEST", raising=False)
    archive_path, archive_rows = archive
    config = write_config(tmp_path / "conf", None)
    result = run("new", "--after", str(archive_path), "--config", str(config))
    assert result.exit_code == 0, result.output
    new = tmp_path / "conf" / "callgate-data" / "audit.db"
    result = run("verify", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"ok 1 records, head {head_of(new)} (continues from {archive_rows[-1][6]})\n"
    )


def test_new_refuses_a_log_with_records(tmp_path: Path, archive: tuple[Path, list[Row]]) -> None:
    archive_path, _ = archive
    new = tmp_path / "audit.db"
    rows = write_log(new, calls(3))
    result = run("new", "--after", str(archive_path), "--db", str(new))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"{new}: the new audit log is not empty\n"
    assert head_of(new) == rows[-1][6]
    assert run("verify", "--db", str(new)).stdout == f"ok 3 records, head {rows[-1][6]}\n"


def test_new_refuses_a_broken_archive(tmp_path: Path, archive: tuple[Path, list[Row]]) -> None:
    archive_path, _ = archive
    tamper_agent(archive_path, 2)
    new = tmp_path / "data" / "audit.db"
    result = run("new", "--after", str(archive_path), "--db", str(new))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"{archive_path}: the archive's chain is broken: its contents do not match its hash\n"
    )
    assert not new.exists()
    assert not new.parent.exists()


def test_new_refuses_the_archive_itself(archive: tuple[Path, list[Row]]) -> None:
    archive_path, archive_rows = archive
    result = run("new", "--after", str(archive_path), "--db", str(archive_path))
    assert result.exit_code == 2
    assert "Error: the new audit file must not be the archive\n" in result.stderr
    assert head_of(archive_path) == archive_rows[-1][6]


def test_new_refuses_a_missing_archive(tmp_path: Path) -> None:
    archive_path = tmp_path / "nope.db"
    new = tmp_path / "audit.db"
    result = run("new", "--after", str(archive_path), "--db", str(new))
    assert result.exit_code == 2
    assert result.stderr == f"cannot open the audit log: {archive_path}: no such database file\n"
    assert not new.exists()
