"""``edge alerts``: duplicates and malformed messages neither lost nor double-counted; review and export."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from edge.central.ingest import ingest
from edge.central.store import Store
from edge.cli import main
from tests.broker import Broker
from tests.central_msgs import ack, hit, status

STATUS = status()
ACK = ack()


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode), st.sampled_from(["hits", "status", "watchlist/ack", "x"]))
@settings(max_examples=200, deadline=None)
def test_arbitrary_payloads_never_crash_the_subscriber(payload: bytes, kind: str) -> None:
    store = Store(":memory:")
    assert ingest(store, f"edge/v1/pole-1/{kind}", payload).kind in ("rejected", "hit", "status", "ack")


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(t, p, qos=1) for t, p in messages]
    for i in infos:
        i.wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def run_alerts(db: Path, port: int, seconds: float) -> int:
    return main(["alerts", "--db", str(db), "--broker", f"127.0.0.1:{port}", "--headless", "--duration", str(seconds)])


def test_headless_ingest_over_a_real_broker_then_export_and_review(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "central.db"
    hits = [hit(entry=f"case-{i}") for i in range(3)]
    with Broker(tmp_path) as broker:
        assert run_alerts(db, broker.port, 0.5) == 0  # registers the persistent session
        # While the console is down: three hits, one of them twice, and junk.
        messages = [("edge/v1/pole-1/hits", json.dumps(h).encode()) for h in [*hits, hits[1]]]
        messages += [("edge/v1/pole-1/hits", b"garbage"), ("edge/v1/pole-1/status", json.dumps(STATUS).encode())]
        publish_all(broker.port, messages)
        assert run_alerts(db, broker.port, 2.0) == 0
    out = capsys.readouterr().out
    assert "stored 3 hits (1 duplicates dropped), 1 malformed kept aside" in out
    assert main(["alerts", "--db", str(db), "--review", hits[0]["event_id"], "--confirm", "--by", "officer 17"]) == 0
    assert (
        main(["alerts", "--db", str(db), "--review", hits[1]["event_id"], "--reject", "--by", "officer 17", "--note", "not him"])
        == 0
    )
    capsys.readouterr()
    assert main(["alerts", "--db", str(db), "--export", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(r["entry_id"] for r in rows) == ["case-0", "case-1", "case-2"]
    reviews = {r["event_id"]: (r["review"], r["reviewed_by"]) for r in rows}
    assert reviews[hits[0]["event_id"]] == ("confirmed", "officer 17")
    assert reviews[hits[1]["event_id"]] == ("rejected", "officer 17")
    assert reviews[hits[2]["event_id"]] == ("candidate", "")
    assert main(["alerts", "--db", str(db), "--review", hits[2]["event_id"], "--confirm"]) == 2
    assert "reviewer's name" in capsys.readouterr().err


def test_json_export_and_a_broker_that_is_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "central.db"
    ingest(Store(db), "edge/v1/pole-1/hits", json.dumps(hit()).encode())
    assert main(["alerts", "--db", str(db), "--export", "json", "--out", str(tmp_path / "hits.json")]) == 0
    assert len(json.loads((tmp_path / "hits.json").read_text())) == 1
    from tests.broker import free_port

    assert main(["alerts", "--db", str(db), "--broker", f"127.0.0.1:{free_port()}", "--headless", "--duration", "1"]) == 2
    assert "cannot reach broker" in capsys.readouterr().err
