"""The central store, the same specification on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from edge.central.ingest import ingest, parse
from edge.central.store import Message, RevocationAck, Store, StoreError, UnknownEventError
from edge.central.store.engine import MIGRATIONS
from tests.central_msgs import ack, audit, encode, hit, revoke_ack, status, topic


def put(store: Store, doc: dict[str, object], *, device: str | None = None, retained: bool = False) -> str:
    return ingest(store, topic(doc, device), encode(doc), retained=retained).kind


@pytest.mark.parametrize("number", [str(10**400), "1e400", str(2**63), "-1e999"])
def test_one_device_s_absurd_number_is_refused_and_the_rest_of_its_batch_is_stored(db_url: str, number: str) -> None:
    """A schema-valid 400-digit threshold once failed the whole batch on every retry: ingest stopped for the fleet."""
    from edge.central.ingest import parse

    store = Store(db_url)
    good = [hit(entry="case-1"), hit(device="pole-2", entry="case-2")]
    poisoned = encode(hit(device="pole-3")).replace(b'"threshold": 0.574', b'"threshold": ' + number.encode())
    assert number.encode() in poisoned
    items = [parse(topic(good[0]), encode(good[0])), parse("edge/v1/pole-3/hits", poisoned)]
    items.append(parse(topic(good[1]), encode(good[1])))
    assert [r.kind for r in store.write(items)] == ["hit", "rejected", "hit"]
    assert len(store.hits()) == 2


def test_duplicates_are_stored_once_and_malformed_messages_kept_aside(db_url: str) -> None:
    store = Store(db_url)
    h = hit()
    assert put(store, h) == "hit"
    assert put(store, h) == "duplicate"
    no_score = hit()
    del no_score["score"]
    bad_entry = hit(entry="[/]")  # Rich markup in an id must never reach the console
    newline_id = hit(device="pole-1")
    newline_id["camera"] = "gate\n"  # the schema pattern's $ alone would let this through
    nul = hit(entry="case-1")
    nul["label"] = "a\u0000b"
    for t, payload in [
        ("edge/v1/pole-1/hits", b"{not json"),
        ("edge/v1/pole-1/hits", encode(no_score)),
        ("edge/v1/pole-1/hits", encode(hit(device="pole-2"))),  # pole-2's hit on pole-1's topic
        ("edge/v1/pole-1/hits", encode(status())),
        ("edge/v1/pole-1/hits", b"\xff\xfe"),
        ("edge/v1/pole-1/hits", encode(bad_entry)),
        ("edge/v1/pole-1/hits", encode(newline_id)),
        ("edge/v1/pole-1/hits", encode(nul)),
        ("edge/v1/" + "p" * 65 + "/status", encode(status(device="p" * 65))),
    ]:
        assert ingest(store, t, payload).kind == "rejected", payload[:80]
    assert put(store, status()) == "status"
    assert put(store, ack()) == "ack"
    assert put(store, audit()) == "audit"
    counts = store.counts()
    assert (counts["hits"], counts["duplicates"], counts["rejected"], counts["acks"], counts["devices"]) == (1, 1, 9, 1, 1)
    reasons = [r[1] for r in reversed(store.rejected())]
    assert "score" in reasons[1] and "published on pole-1" in reasons[2] and "entry_id" in reasons[5]


def test_a_redelivered_batch_changes_nothing(db_url: str) -> None:
    store = Store(db_url)
    batch = [parse(topic(h), encode(h)) for h in (hit(), hit(), hit())]
    assert [r.kind for r in store.write(batch)] == ["hit"] * 3
    assert [r.kind for r in store.write([*batch, batch[0]])] == ["duplicate"] * 4
    assert store.counts()["hits"] == 3


def test_two_conflicting_reviews_both_stay_in_order_with_reviewers_and_notes(db_url: str) -> None:
    store = Store(db_url)
    h = hit(event_id="0a1b2c3d-0000-4000-8000-000000000001")
    put(store, h)
    put(store, hit(event_id="0a1b9999-0000-4000-8000-000000000002"))
    first = store.review("0a1b2c", "confirm", "officer 17", note="matches the photo")
    second = store.review(h["event_id"], "reject", "sergeant 4", reason="wrong person", note="tattoo differs")
    assert first.previous_decision is None and second.previous_decision == "confirm"
    assert store.hit("0a1b2c3d").state == "rejected"
    for data in (json.loads(store.export("json")), list(csv.DictReader(io.StringIO(store.export("csv"))))):
        row = next(r for r in data if r["event_id"] == h["event_id"])
        history = row["history"] if isinstance(row["history"], list) else json.loads(row["history"])
        assert [(x["decision"], x["reviewer"], x["note"]) for x in history] == [
            ("confirm", "officer 17", "matches the photo"),
            ("reject", "sergeant 4", "tattoo differs"),
        ]
        assert history[1]["reason"] == "wrong person" and history[1]["previous_decision"] == "confirm"
        assert (row["review"], row["reviewed_by"]) == ("rejected", "sergeant 4")
    with pytest.raises(UnknownEventError, match="more than one"):
        store.review("0a1b", "confirm", "officer 17")
    with pytest.raises(UnknownEventError, match="no hit"):
        store.review("ffff", "confirm", "officer 17")
    with pytest.raises(UnknownEventError, match="prefix"):
        store.review("0a1b%", "confirm", "officer 17")
    with pytest.raises(StoreError, match="reviewer"):
        store.review(h["event_id"], "escalate", " ")
    store.review(h["event_id"], "not-this-person", "officer 17")
    store.review(h["event_id"], "escalate", "officer 17")
    assert store.hit(h["event_id"]).state == "escalated" and len(store.history(h["event_id"])) == 4


def test_hits_are_listed_by_receive_time_so_a_device_dated_9999_cannot_push_real_hits_off(db_url: str) -> None:
    store = Store(db_url)
    far = hit(first_seen="9999-12-31T23:59:59.999Z", entry="clock-broken")
    old = hit(first_seen="1970-01-01T00:00:00.000Z", entry="clock-reset")
    put(store, far)
    put(store, old)
    real = [hit(entry=f"real-{i}", first_seen=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")) for i in range(3)]
    for h in real:
        put(store, h)
    assert [h.entry_id for h in store.hits(limit=3)] == ["real-2", "real-1", "real-0"]
    assert put(store, far) == "duplicate"  # the far-off month's copy still de-duplicates
    assert {h.entry_id for h in store.hits()} >= {"clock-broken", "clock-reset"}


def test_fleet_view_online_from_live_status_and_version_from_what_was_published(db_url: str) -> None:
    store = Store(db_url)
    put(store, status("pole-1", version=3), retained=True)  # replayed by the broker: not heard now
    put(store, status("pole-2", version=4, depth=7))
    put(store, status("pole-3", version=2))
    put(store, status("pole-3", state="offline", version=2))  # the last will
    put(store, ack("pole-2", outcome="refused", reason="expired", version=5))
    put(store, hit("pole-1", version=99))  # a device cannot raise the fleet's version
    store.publish_watchlist("city", 4, "e" * 64, None, by="admin")
    fleet = {d.device_id: d for d in store.devices()}
    assert not fleet["pole-1"].online and fleet["pole-1"].heard_at is None and fleet["pole-1"].state == "online"
    assert fleet["pole-2"].online and fleet["pole-2"].outbox_depth == 7
    assert not fleet["pole-3"].online and fleet["pole-3"].state == "offline"
    assert [d.published_version for d in fleet.values()] == [4, 4, 4]
    assert [d.watchlist_behind for d in fleet.values()] == [True, False, True]
    assert fleet["pole-2"].refused_ack == (5, "expired", "expired")
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert not any(d.online for d in store.devices(at=later))  # silent for 10 minutes: not online
    # A retained copy arriving after a live status does not replace it.
    put(store, status("pole-2", version=3), retained=True)
    assert {d.device_id: d for d in store.devices()}["pole-2"].watchlist_version == 4
    assert store.audit_log()[0].action == "watchlist-publish"


def test_a_revocation_answer_is_kept_beside_the_bundle_answer_so_the_operator_sees_who_removed_the_entry(db_url: str) -> None:
    store = Store(db_url)
    for device in ("pole-1", "pole-2", "pole-3"):
        put(store, status(device, version=4))
    put(store, ack("pole-1"))  # bundle v3 applied
    put(store, revoke_ack("pole-1", sequence=2, removed=1))
    put(store, ack("pole-2", outcome="refused", reason="expired", version=5))
    put(store, revoke_ack("pole-2", sequence=2, outcome="refused", reason="replayed"))
    fleet = {d.device_id: d for d in store.devices()}
    assert fleet["pole-1"].refused_ack is None  # a later revocation does not hide the bundle answer, nor vice versa
    assert fleet["pole-1"].revocation == RevocationAck(2, "applied", 1, "applied", "applied")
    assert fleet["pole-2"].refused_ack == (5, "expired", "expired")
    assert fleet["pole-2"].revocation is not None and fleet["pole-2"].revocation.outcome == "refused"
    assert fleet["pole-3"].revocation is None  # never answered: the operator sees it has not removed the entry
    with store.engine.connect() as c:
        kinds = c.execute(text("SELECT kind, revoke_sequence, removed FROM watchlist_acks ORDER BY id")).all()
    assert [tuple(k) for k in kinds] == [("bundle", None, None), ("revoke", 2, 1), ("bundle", None, None), ("revoke", 2, None)]


def test_acks_stored_before_revocations_were_recorded_read_as_bundle_answers_after_the_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    engine = create_engine(f"sqlite:///{db}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")  # a store as the previous release left it
        conn.execute(text(
            "INSERT INTO watchlist_acks (device_id, watchlist, version, previous_version, outcome, reason, message, received_at)"
            " VALUES ('pole-1', 'city', 3, 2, 'refused', 'expired', 'expired', '2026-11-22 10:00:00')"
        ))  # fmt: skip
    engine.dispose()
    with Store(str(db)) as store:  # opening migrates to the newest revision
        put(store, status("pole-1", version=3))
        [pole] = store.devices()
        assert pole.refused_ack == (3, "expired", "expired") and pole.revocation is None


def test_audit_chain_heads_that_go_back_or_fork_are_flagged(db_url: str) -> None:
    store = Store(db_url)
    assert put(store, audit("pole-1", seq=10, head="1" * 64)) == "audit"
    assert put(store, audit("pole-1", seq=12, head="2" * 64)) == "audit"
    assert ingest(store, "edge/v1/pole-1/audit", encode(audit("pole-1", seq=11, head="3" * 64))).detail.startswith("went back")
    put(store, audit("pole-2", seq=5, head="4" * 64))
    assert ingest(store, "edge/v1/pole-2/audit", encode(audit("pole-2", seq=5, head="5" * 64))).detail.startswith("forked")
    put(store, status("pole-1"))
    put(store, status("pole-2"))
    put(store, status("pole-3"))
    put(store, audit("pole-3", seq=5, chain_ok=False))
    problems = {d.device_id: d.audit_problem for d in store.devices()}
    assert problems["pole-1"] and "went back" in problems["pole-1"]
    assert problems["pole-2"] and "forked" in problems["pole-2"]
    assert problems["pole-3"] == "the device reports its chain broken"


def test_retention_drops_whole_months_and_is_audited(db_url: str) -> None:
    store = Store(db_url)
    now = datetime.now(UTC)
    old = (now - timedelta(days=100)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    new = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    old_hit, new_hit = hit(first_seen=old), hit(first_seen=new)
    put(store, old_hit)
    put(store, new_hit)
    store.review(old_hit["event_id"], "confirm", "officer 17")
    cutoff = now - timedelta(days=40)
    preview = store.hits_before(cutoff)
    assert sum(n for _name, n in preview) == 1 and len(store.hits()) == 2  # a preview changes nothing
    assert store.drop_hits_before(cutoff, actor="retention-job") == preview
    assert [h.event_id for h in store.hits()] == [new_hit["event_id"]]
    assert store.counts()["reviews"] == 0
    entry = store.audit_log()[0]
    assert (entry.actor, entry.action) == ("retention-job", "retention") and "1 hits removed" in entry.detail
    if store.backend == "postgresql":
        assert "hits_y" in entry.detail  # a whole partition went


def test_a_month_that_gets_its_partition_late_takes_its_hits_from_the_default_partition() -> None:
    from edge.central.store import partitions
    from tests.central_db import pg_database

    with pg_database() as url:
        store = Store(url)
        month = partitions.add_months(partitions.month_start(datetime.now(UTC)), 6)  # beyond the on-demand window
        h = hit(first_seen=month.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        put(store, h)
        with store.engine.begin() as c:
            assert c.execute(text("SELECT count(*) FROM hits_other")).scalar_one() == 1
            assert partitions.ensure(c, month)
        with store.engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM hits_other")).scalar_one() == 0
            assert c.execute(text(f"SELECT count(*) FROM {partitions.partition_name(month)}")).scalar_one() == 1
        assert put(store, h) == "duplicate"


def test_opening_twice_and_several_at_once_migrates_once(db_url: str) -> None:
    Store(db_url).close()
    with Store(db_url) as store, store.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0002"


def test_a_missing_folder_or_file_is_a_clear_error(tmp_path: str) -> None:
    with pytest.raises(StoreError, match=r"folder .* does not exist"):
        Store(f"{tmp_path}/nowhere/central.db")
    with pytest.raises(StoreError, match="no such database"):
        Store(f"{tmp_path}/centrl.db", must_exist=True)
    with pytest.raises(StoreError, match="not supported"):
        Store("mysql://x@y/z")


ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", min_size=1, max_size=64)
stamps = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 1)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"
)


@given(
    device=ids,
    entry=ids,
    first_seen=stamps,
    score=st.floats(-1, 1),
    label=st.none() | st.text(max_size=50),
    version=st.integers(1, 2**62),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_stored_hit_reads_back_as_sent(db_url: str, device: str, entry: str, first_seen: str, score: float,
                                         label: str | None, version: int) -> None:  # fmt: skip
    store = Store(db_url)
    h = hit(device=device, entry=entry, first_seen=first_seen, version=version)
    h["score"] = score
    if label is not None:
        h["label"] = label
    msg = parse(topic(h), encode(h))
    if label is not None and "\x00" in label:
        assert not isinstance(msg, Message)
        return
    assert isinstance(msg, Message)
    assert store.write([msg])[0].kind == "hit"
    back = store.hit(h["event_id"])
    assert (back.device_id, back.entry_id, back.score, back.label, back.watchlist_version) == (
        device,
        entry,
        score,
        label,
        version,
    )
    assert back.first_seen.strftime("%Y-%m-%dT%H:%M:%S.") + f"{back.first_seen.microsecond // 1000:03d}Z" == first_seen
    assert store.hit_payload(h["event_id"]) == h
    store.close()


def test_event_ids_are_uuids() -> None:
    assert isinstance(uuid.UUID(hit()["event_id"]), uuid.UUID)


def test_without_the_connection_test_a_dropped_connection_fails_one_batch_and_the_retry_is_stored() -> None:
    """Ingest workers open the store with ``ping=False``: a batch on a connection the server dropped
    fails (the worker keeps it unacknowledged and retries), the retry gets a new connection."""
    import psycopg

    from tests.central_db import PG_ADMIN, pg_database

    with pg_database() as url:
        store = Store(url, ping=False)
        first, second = hit(), hit()
        assert put(store, first) == "hit"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (url.rsplit("/", 1)[1],))
        batch = [parse(topic(second), encode(second))]
        with pytest.raises(StoreError, match="could not store a batch of 1"):
            store.write(batch)
        assert [r.kind for r in store.write(batch)] == ["hit"]
        assert store.counts()["hits"] == 2
        store.close()
