"""Signed revocations: single entries removed at once, replays refused, and a revoked entry kept out for good.

Real SQLite files; the end-to-end test runs the daemon against a real Mosquitto and revokes with
`edge watchlist revoke` as an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge import audit
from edge.cli import main
from edge.db import connect
from edge.dbcheck import check_and_recover
from edge.match import Matcher
from edge.publish import chunk_topic, manifest_topic
from edge.schemas import load as load_schema
from edge.watchlist.bundle import Bundle, b64, build_unsigned, sign_manifest
from edge.watchlist.keys import key_id
from edge.watchlist.revoke import apply_revoke, sign_revoke
from edge.watchlist.store import WatchlistStore
from tests.broker import Broker
from tests.mqtt_helpers import Subscriber
from tools.synthetic import SPACE, random_entries

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def keys(key: Ed25519PrivateKey) -> dict[str, object]:
    return {key_id(key.public_key()): key.public_key()}


def bundle(key: Ed25519PrivateKey, version: int, *, issued: datetime, n: int = 6, space: str = SPACE, dim: int = 192) -> Bundle:
    manifest, chunks = build_unsigned(
        random_entries(n, dimension=dim), name="fleet", version=version, embedding_space=space,
        expires_at=NOW + timedelta(days=30), issued_at=issued,
    )  # fmt: skip
    data, sig = sign_manifest(manifest, key)
    return Bundle(data, sig, dict(enumerate(chunks)))


def revoke(store: WatchlistStore, key: Ed25519PrivateKey, seq: int, ids: list[str], *, version: int = 1,
           issued: datetime = NOW, trusted: Ed25519PrivateKey | None = None) -> object:  # fmt: skip
    data, sig = sign_revoke(key, name="fleet", sequence=seq, version=version, entry_ids=ids, issued_at=issued)
    return apply_revoke(store, data, sig, keys(trusted or key), expected_name="fleet")  # type: ignore[arg-type]


def ids_of(store: WatchlistStore) -> set[str]:
    m = Matcher.from_store(store, "fleet")
    assert m is not None
    return {str(m.entry_ids[i]) for i in range(m.entry_count)}


def test_a_signed_revocation_removes_entries_and_replays_and_older_ones_are_refused(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = WatchlistStore(connect(tmp_path / "edge.db"))
    assert store.apply(bundle(key, 1, issued=NOW - timedelta(hours=2)), keys(key), embedding_space=SPACE).ok  # type: ignore[arg-type]
    r = revoke(store, key, 5, ["e0000001", "e0000002"])
    assert r.ok and r.removed == 2 and r.revoke_sequence == 5 and r.entry_count == 4  # type: ignore[attr-defined]
    assert ids_of(store) == {"e0000000", "e0000003", "e0000004", "e0000005"}
    assert revoke(store, key, 5, ["e0000003"]).reason == "replayed_revoke"  # type: ignore[attr-defined]
    assert revoke(store, key, 4, ["e0000003"]).reason == "older_revoke"  # type: ignore[attr-defined]
    forged = revoke(store, Ed25519PrivateKey.generate(), 9, ["e0000003"], trusted=key)
    assert forged.reason == "unknown_key"  # type: ignore[attr-defined]
    data, _ = sign_revoke(key, name="fleet", sequence=9, version=1, entry_ids=["e0000003"])
    tampered = apply_revoke(store, data.replace(b"e0000003", b"e0000004"), key.sign(data), keys(key), expected_name="fleet")  # type: ignore[arg-type]
    assert tampered.reason == "bad_signature"
    assert ids_of(store) == {"e0000000", "e0000003", "e0000004", "e0000005"}, "no refused revocation removed anything"
    assert [r.outcome for r in audit.records(store.conn, "watchlist.revoke_refused")] == [
        "replayed_revoke", "older_revoke", "unknown_key", "bad_signature"
    ]  # fmt: skip
    [rec] = audit.records(store.conn, "watchlist.revoked")
    assert rec.detail["sequence"] == 5 and rec.detail["removed"] == 2


def test_a_revoked_entry_stays_out_of_a_later_bundle_issued_before_the_revocation_even_after_a_rebuild(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    db = tmp_path / "data" / "edge.db"
    store = WatchlistStore(connect(db))
    early_v2 = bundle(key, 2, issued=NOW - timedelta(hours=1))  # built before the revocation, published after it
    assert store.apply(bundle(key, 1, issued=NOW - timedelta(hours=2)), keys(key), embedding_space=SPACE).ok  # type: ignore[arg-type]
    assert revoke(store, key, 1, ["e0000001"], issued=NOW).ok  # type: ignore[attr-defined]
    result = store.apply(early_v2, keys(key), embedding_space=SPACE)  # type: ignore[arg-type]
    assert result.ok and result.entry_count == 5 and "e0000001" not in ids_of(store)
    # The revocation survives a rebuilt database like the version floor does.
    store.conn.execute("UPDATE entries SET label = 'rot' WHERE entry_id = 'e0000003'")
    store.conn.close()
    assert not check_and_recover(db).ok
    fresh = WatchlistStore(connect(db))
    assert fresh.apply(early_v2, keys(key), embedding_space=SPACE).ok  # type: ignore[arg-type]
    assert "e0000001" not in ids_of(fresh)
    # A bundle issued after the revocation lists the entry on purpose: it is back.
    later_v3 = bundle(key, 3, issued=NOW + timedelta(minutes=1))
    assert fresh.apply(later_v3, keys(key), embedding_space=SPACE).ok  # type: ignore[arg-type]
    assert "e0000001" in ids_of(fresh)


def test_a_revocation_file_is_applied_locally_and_a_malformed_one_is_refused_clearly(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    keyfile, pub = tmp_path / "watchlist.key", tmp_path / "watchlist.pub"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'device_id = "pole-9"\ndata_dir = "{tmp_path / "data"}"\n[[sources]]\ncamera = "gate"\nurl = "x.avi"\n'
        f'[watchlist]\nname = "fleet"\npublic_keys = ["{pub}"]\n'
    )
    store = WatchlistStore(connect(tmp_path / "data" / "edge.db"))
    assert store.apply(bundle(key, 1, issued=NOW - timedelta(hours=1)), keys(key), embedding_space=SPACE).ok  # type: ignore[arg-type]
    out = tmp_path / "revoke.json"
    args = ["watchlist", "revoke", "--name", "fleet", "--entry", "e0000004", "--key", str(keyfile), "--version", "1"]
    assert main([*args, "--out", str(out)]) == 0
    assert main(["watchlist", "apply-revoke", str(out), "--config", str(cfg)]) == 0
    assert "e0000004" not in ids_of(store)
    assert main(["watchlist", "apply-revoke", str(out), "--config", str(cfg)]) == 1
    assert "REFUSED (replayed_revoke)" in capsys.readouterr().out
    out.write_bytes(b"[" * 5000)
    assert main(["watchlist", "apply-revoke", str(out), "--config", str(cfg)]) == 1
    assert "REFUSED (revoke_malformed)" in capsys.readouterr().out
    assert main([*args[:-2], "--version", "0", "--out", str(out)]) == 2  # the operator hears the device's objection
    assert "version" in capsys.readouterr().err


# --- end to end: daemon, broker, operator command ------------------------------------------------


def publish_bundle(port: int, b: Bundle) -> None:
    m = b.manifest()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(chunk_topic(m.name, m.version, i), data, qos=1, retain=True) for i, data in sorted(b.chunks.items())]
    doc = {"schema": "edge.watchlist-bundle/1", "manifest": b.manifest_bytes.decode(), "signature": b64(b.signature)}
    infos.append(c.publish(manifest_topic(m.name), json.dumps(doc), qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def test_a_revocation_published_by_the_operator_reaches_a_running_daemon_which_applies_audits_and_acks_it(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    from edge.config import RecognitionSettings
    from edge.models import load_manifest

    spec = load_manifest(None).get(RecognitionSettings().embedder, "embedder")
    space, dim = str(spec.extra["embedding_space"]), int(spec.extra["dimension"])
    keyfile, pub = tmp_path / "watchlist.key", tmp_path / "watchlist.pub"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    schema = load_schema("watchlist-ack")
    with Broker(tmp_path) as broker:
        sub = Subscriber(broker.port, ["edge/v1/+/watchlist/ack"]).connect()
        cfg = tmp_path / "edge.toml"
        cfg.write_text(
            f'device_id = "pole-7"\ndata_dir = "{tmp_path / "data"}"\n'
            f'[[sources]]\ncamera = "gate"\nurl = "{tmp_path / "no-camera.avi"}"\nstop_at_end = false\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nstatus_interval_s = 1\n'
            f'[watchlist]\nname = "fleet"\npublic_keys = ["{pub}"]\n'
        )
        log = tmp_path / "daemon.log"
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], stdout=log.open("ab"),
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        try:
            early_v2 = bundle(key, 2, issued=NOW - timedelta(minutes=30), space=space, dim=dim)
            publish_bundle(broker.port, bundle(key, 1, issued=NOW - timedelta(hours=1), space=space, dim=dim))
            assert sub.wait_for("/ack", 1)[0]["outcome"] == "applied"
            base = ["watchlist", "revoke", "--name", "fleet", "--key", str(keyfile), "--broker", f"127.0.0.1:{broker.port}"]
            assert main([*base, "--entry", "e0000002", "--previous-wait", "0.5"]) == 0
            ack = sub.wait_for("/ack", 2)[-1]
            jsonschema.validate(ack, schema)
            assert (ack["kind"], ack["outcome"], ack["removed"], ack["entry_count"]) == ("revoke", "applied", 1, 5)
            # A second revocation carries the first (the topic retains one message); an older sequence is refused.
            assert main([*base, "--entry", "e0000003", "--previous-wait", "0.5"]) == 0
            ack = sub.wait_for("/ack", 3)[-1]
            assert (ack["outcome"], ack["removed"], ack["entry_count"]) == ("applied", 1, 4)
            assert main([*base, "--entry", "e0000004", "--sequence", "1", "--previous-wait", "0.5"]) == 2, "refused locally"
            publish_bundle(broker.port, early_v2)  # issued before the revocations, still lists both entries
            ack = sub.wait_for("/ack", 4)[-1]
            assert (ack["version"], ack["outcome"], ack["entry_count"]) == (2, "applied", 4)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            sub.disconnect()
    c = connect(tmp_path / "data" / "edge.db")
    revoked = [r.detail["entry_ids"] for r in audit.records(c, "watchlist.revoked")]
    assert revoked == [["e0000002"], ["e0000002", "e0000003"]]
