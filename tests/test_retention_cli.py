"""``edge alerts --drop-before YYYY-MM``: retention by whole months, on SQLite and on a real PostgreSQL
(where a month is a partition, detached and dropped), previewed with ``--dry-run``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from edge.central.store import Store
from tests.central_msgs import hit
from tests.test_alerts_cli import run
from tests.test_store import put


def _stamp(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_retention_previews_then_drops_the_months_before_the_one_given(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    this_month = now.strftime("%Y-%m")
    store = Store(db_url)
    old = [hit(first_seen=_stamp(now - timedelta(days=70))) for _ in range(3)]
    new = hit(first_seen=_stamp(now))
    for h in [*old, new]:
        put(store, h)
    store.review(old[0]["event_id"], "confirm", "officer 17")

    assert run(["alerts", "--db", db_url, "--drop-before", this_month, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 3 hits first seen before" in out and "nothing changed" in out
    assert store.counts()["hits"] == 4 and store.counts()["reviews"] == 1
    if store.backend == "postgresql":
        assert "(dry run) partition hits_y" in out

    assert run(["alerts", "--db", db_url, "--drop-before", this_month, "--by", "retention-job"]) == 0
    out = capsys.readouterr().out
    assert "removed 3 hits first seen before" in out
    assert [h.event_id for h in store.hits()] == [new["event_id"]] and store.counts()["reviews"] == 0
    entry = store.audit_log()[0]
    assert (entry.actor, entry.action) == ("retention-job", "retention")
    if store.backend == "postgresql":
        assert "detached and dropped" in out
        with store.engine.connect() as c:  # the month's table itself is gone, not only its rows
            tables = c.execute(text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'hits_y%'")).scalars().all()
        old_month = (now - timedelta(days=70)).strftime("hits_y%Ym%m")
        assert old_month not in tables and now.strftime("hits_y%Ym%m") in tables

    assert run(["alerts", "--db", db_url, "--drop-before", this_month]) == 0  # again: nothing left to drop
    assert "removed 0 hits" in capsys.readouterr().out
    store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drop-before", "2026-13"], "month 01-12"),
        (["--drop-before", "2026-1"], "YYYY-MM"),
        (["--drop-before", "last month"], "YYYY-MM"),
        (["--drop-before", "2999-01"], "current month"),
        (["--dry-run", "--export", "csv"], "--dry-run goes with --drop-before"),
        (["--drop-before", "2020-01", "--export", "csv"], "separate runs"),
    ],
)
def test_bad_retention_arguments_exit_non_zero_with_a_message(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "central.db"
    Store(db).close()
    assert run(["alerts", "--db", str(db), *args]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_retention_on_a_misspelled_sqlite_file_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "centrl.db"
    assert run(["alerts", "--db", str(missing), "--drop-before", "2020-01"]) != 0
    assert "no such database" in capsys.readouterr().err and not missing.exists()
