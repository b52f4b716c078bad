"""The daemon against a real Mosquitto: hits delivered with the right fields, through outages and crashes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from edge.cli import main
from edge.demo import make_clip
from tests.broker import Broker, free_port
from tests.mqtt_helpers import Subscriber, publish_bundle_unchecked, wait_for_text

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = {
    name: json.loads((ROOT / "docs" / "schemas" / f"{name}.schema.json").read_text())
    for name in ("hit", "status", "watchlist-ack")
}


def stranger_head(faces_dir: Path) -> np.ndarray:
    """A frontal head shot of someone not on the watchlist (development photos)."""
    from edge.sources import load_image
    from tests.conftest import FACES

    img = load_image(FACES / "deepface" / "deepface__tests__unit__dataset__img12_jpg.jpg")
    from edge.analyze import FaceAnalyser
    from edge.config import RecognitionSettings

    d = FaceAnalyser.from_settings(RecognitionSettings(accelerator="cpu")).detector.detect(img)[0]
    x, y, w, h = d.box
    cx, cy, half = x + w / 2, y + h / 2, w * 0.75
    return img[int(max(0, cy - half)) : int(cy + half), int(max(0, cx - half)) : int(cx + half)].copy()


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> Path:
    """Keys, a signed watchlist with the astronaut as entry case-0001, and a clip where she and a stranger walk by."""
    ws = tmp_path_factory.mktemp("daemon")
    (ws / "photos" / "case-0001").mkdir(parents=True)
    shutil.copy(ROOT / "edge" / "samples" / "astronaut.png", ws / "photos" / "case-0001" / "enrol.png")
    assert main(["watchlist", "keygen", "--out", str(ws / "keys")]) == 0
    for v in (1, 2):
        assert main(
            ["watchlist", "build", "--photos", str(ws / "photos"), "--name", "city", "--version", str(v),
             "--key", str(ws / "keys" / "watchlist.key"), "--out", str(ws / f"v{v}"), "--quiet"]
        ) == 0  # fmt: skip
    make_clip(ws / "clip.avi", stranger=stranger_head(faces_dir))
    return ws


def write_config(kit: Path, tmp: Path, port: int, *, url: str | None = None, stop_at_end: bool = True, extra: str = "") -> Path:
    cfg = tmp / "edge.toml"
    cfg.write_text(
        f'device_id = "pole-7"\ndata_dir = "{tmp / "data"}"\n'
        f'[[sources]]\ncamera = "gate"\nurl = "{url or kit / "clip.avi"}"\nstop_at_end = {str(stop_at_end).lower()}\n'
        "reopen_max_backoff_s = 1\n"
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nstatus_interval_s = 1\n'
        f'[watchlist]\nname = "city"\npublic_keys = ["{kit / "keys" / "watchlist.pub"}"]\n'
        f"{extra}"
    )
    assert main(["watchlist", "apply", str(kit / "v1"), "--config", str(cfg)]) == 0
    return cfg


def start_daemon(cfg: Path, log: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra_env}
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def outbox_depth(cfg_dir: Path) -> int:
    db = cfg_dir / "data" / "edge.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        try:
            return int(c.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'hit'").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def unique_hits(sub: Subscriber) -> dict[str, dict[str, Any]]:
    return {h["event_id"]: h for h in sub.json("/hits")}


def test_hits_arrive_with_every_field_and_match_the_schema(kit: Path, tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()
    try:
        sub = Subscriber(broker.port, ["edge/v1/+/hits", "edge/v1/+/status"]).connect()
        cfg = write_config(kit, tmp_path, broker.port)
        assert finish(start_daemon(cfg, tmp_path / "daemon.log")) == 0, (tmp_path / "daemon.log").read_text()
        hits = list(unique_hits(sub).values())
        sub.wait_for("/status", 1, timeout=5)
        sub.disconnect()
    finally:
        broker.stop()
    assert [h["entry_id"] for h in hits] == ["case-0001"], "exactly the astronaut, never the stranger"
    for h in hits:
        jsonschema.validate(h, SCHEMAS["hit"])
        assert h["device_id"] == "pole-7" and h["camera"] == "gate"
        assert h["score"] >= h["threshold"] and h["frames_matched"] >= 2
        assert h["watchlist"]["version"] == 1
        assert "thumbnail_jpeg_b64" not in h
    statuses = sub.json("/status")
    assert statuses
    for st in statuses:
        jsonschema.validate(st, SCHEMAS["status"])
    assert statuses[-1]["state"] == "offline"  # a clean stop says so


def start_while_broker_down(kit: Path, tmp_path: Path) -> tuple[Broker, Subscriber, Path, subprocess.Popen[bytes]]:
    """A central subscriber with a persistent session, the broker stopped, and the daemon started until a hit is stored."""
    port = free_port()
    broker = Broker(tmp_path, port=port)
    broker.start()
    sub = Subscriber(port, ["edge/v1/+/hits"], client_id=f"central-{tmp_path.name}").connect()
    sub.disconnect()
    broker.stop()
    cfg = write_config(kit, tmp_path, port)
    proc = start_daemon(cfg, tmp_path / "daemon.log")
    deadline = time.monotonic() + 60
    while outbox_depth(tmp_path) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert outbox_depth(tmp_path) >= 1, "the hit is stored while the broker is away"
    return broker, sub, cfg, proc


def test_hits_made_while_the_broker_is_down_are_delivered_when_it_returns(kit: Path, tmp_path: Path) -> None:
    broker, sub, _, proc = start_while_broker_down(kit, tmp_path)
    try:
        # (Generous: on a loaded machine the clip took over a minute to process after its hit.)
        assert wait_for_text(tmp_path / "daemon.log", "waiting up to", timeout=600), "the recording ended; the daemon waits"
        assert proc.poll() is None, "the daemon waits for the broker instead of giving up"
    except AssertionError:
        proc.kill()  # not left running for the rest of the suite
        raise
    broker.start()
    try:
        assert finish(proc) == 0, (tmp_path / "daemon.log").read_text()
        sub.connect()
        got = sub.wait_for("/hits", 1, timeout=10)
        sub.disconnect()
    finally:
        broker.stop()
    assert [h["entry_id"] for h in {h["event_id"]: h for h in got}.values()] == ["case-0001"]
    assert outbox_depth(tmp_path) == 0


def test_a_daemon_killed_mid_stream_loses_no_hit_and_sends_none_twice(kit: Path, tmp_path: Path) -> None:
    broker, sub, cfg, proc = start_while_broker_down(kit, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert outbox_depth(tmp_path) >= 1
    broker.start()
    try:
        assert finish(start_daemon(cfg, tmp_path / "daemon2.log")) == 0, (tmp_path / "daemon2.log").read_text()
        sub.connect()
        sub.sync()  # everything queued for the subscriber has arrived: a duplicate would be here too
        got = sub.json("/hits")
        sub.disconnect()
    finally:
        broker.stop()
    assert [h["entry_id"] for h in got] == ["case-0001"], "delivered once: the replay re-derived the same event"


def _publish_bundle(bundle: Path, port: int, *extra: str) -> None:
    key = bundle.parent / "keys" / "watchlist.pub"
    assert main(["watchlist", "publish", str(bundle), "--broker", f"127.0.0.1:{port}", "--public-key", str(key), *extra]) == 0


def test_a_forged_bundle_is_refused_and_a_good_one_applied_over_mqtt(kit: Path, tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()
    try:
        sub = Subscriber(broker.port, ["edge/v1/+/watchlist/ack", "edge/v1/+/status"]).connect()
        # A live source that never ends keeps the daemon up while bundles arrive.
        cfg = write_config(kit, tmp_path, broker.port, url=str(tmp_path / "no-camera-yet.avi"), stop_at_end=False)
        proc = start_daemon(cfg, tmp_path / "daemon.log")
        forged = tmp_path / "forged"
        shutil.copytree(kit / "v2", forged)
        doc = json.loads((forged / "manifest.json").read_text())
        doc["version"] = 50
        (forged / "manifest.json").write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
        publish_bundle_unchecked(forged, broker.port)  # `edge watchlist publish` would refuse it
        acks = sub.wait_for("/watchlist/ack", 1)
        assert acks and acks[0]["outcome"] == "refused" and acks[0]["reason"] == "bad_signature"
        jsonschema.validate(acks[0], SCHEMAS["watchlist-ack"])
        _publish_bundle(kit / "v2", broker.port, "--force")  # replaces the forged manifest retained on the broker
        acks = sub.wait_for("/watchlist/ack", 2)
        assert acks[-1]["outcome"] == "applied" and acks[-1]["version"] == 2 and acks[-1]["previous_version"] == 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = sub.json("/status")
            if st and st[-1]["watchlist"]["version"] == 2:
                break
            time.sleep(0.2)
        assert sub.json("/status")[-1]["watchlist"]["version"] == 2
        cams = sub.json("/status")[-1]["cameras"]
        assert cams[0]["state"] == "reopening" and "not found" in cams[0]["error"], "a missing source is reported, not fatal"
        proc.send_signal(signal.SIGTERM)
        assert finish(proc, 30) == 0
        sub.disconnect()
    finally:
        broker.stop()
    with sqlite3.connect(tmp_path / "data" / "edge.db") as c:
        outcomes = [r[0] for r in c.execute("SELECT outcome FROM audit WHERE kind LIKE 'watchlist.%' ORDER BY id")]
    assert outcomes == ["applied", "bad_signature", "applied"]


def test_a_source_that_appears_later_is_reopened_and_used(kit: Path, tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()
    try:
        sub = Subscriber(broker.port, ["edge/v1/+/hits"]).connect()
        late = tmp_path / "late.avi"
        cfg = write_config(kit, tmp_path, broker.port, url=str(late))
        proc = start_daemon(cfg, tmp_path / "daemon.log")
        assert wait_for_text(tmp_path / "daemon.log", "reopening in")
        assert proc.poll() is None
        shutil.copy(kit / "clip.avi", late)
        assert finish(proc) == 0, (tmp_path / "daemon.log").read_text()
        hits = sub.wait_for("/hits", 1, timeout=5)
        sub.disconnect()
    finally:
        broker.stop()
    assert [h["entry_id"] for h in hits] == ["case-0001"]
    assert "reopening" in (tmp_path / "daemon.log").read_text()


def test_nothing_about_non_matching_faces_is_written_or_sent(kit: Path, tmp_path: Path) -> None:
    from edge.analyze import FaceAnalyser
    from edge.config import RecognitionSettings
    from edge.sources import OpenCVSource

    broker = Broker(tmp_path)
    broker.start()
    try:
        sub = Subscriber(broker.port, ["#"]).connect()
        cfg = write_config(kit, tmp_path, broker.port)
        assert finish(start_daemon(cfg, tmp_path / "daemon.log")) == 0
        sub.sync()
        sub.disconnect()
    finally:
        broker.stop()
    # The stranger's embedding, as the daemon computed it, appears in no file and no message.
    src = OpenCVSource("gate", str(kit / "clip.avi"))
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f.rgb())
    analyser = FaceAnalyser.from_settings(RecognitionSettings(accelerator="cpu"))
    stranger_faces = analyser.analyse(frames[-20])
    assert stranger_faces and stranger_faces[0].passed_gate, "the stranger is a face the pipeline matches against"
    stranger = stranger_faces[0].embedding
    needles = [stranger.astype("<f4").tobytes()[:16], stranger.astype("<f2").tobytes()[:16]]
    written = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    allowed = {"edge.db", "edge.db-wal", "edge.db-shm", "edge.db.watchlist-state.json"}
    assert {p.name for p in written} <= allowed, "no frames or crops on disk"
    for p in written:
        data = p.read_bytes()
        assert not any(n in data for n in needles), p
        assert b"\xff\xd8\xff" not in data, f"JPEG bytes in {p}"
    for topic, payload, _ in sub.messages:
        if "/watchlists/" in topic:
            continue  # the bundle itself (watchlisted people only)
        assert not any(n in payload for n in needles) and b"\xff\xd8\xff" not in payload, topic
        if topic.endswith("/hits"):
            assert json.loads(payload)["entry_id"] == "case-0001"
    assert np.isfinite(stranger).all()


def test_config_check_names_a_bad_key_and_show_masks_secrets(
    kit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(kit, tmp_path, 1883, extra="")
    (tmp_path / "pw").write_text("s3cret\n")
    cfg.write_text(
        cfg.read_text().replace("status_interval_s = 1", f'status_interval_s = 1\npassword_file = "{tmp_path / "pw"}"')
    )
    assert main(["config", "check", "--config", str(cfg)]) == 0
    assert main(["config", "show", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "contents not shown" in out
    cfg.write_text(cfg.read_text() + "\n[tracking]\nmin_frame = 3\n")
    assert main(["config", "check", "--config", str(cfg)]) == 2
    assert "tracking.min_frame: unknown key" in capsys.readouterr().err


def test_systemd_hears_ready_and_watchdog_pings_and_sigterm_stops_cleanly(kit: Path, tmp_path: Path) -> None:
    import socket

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    cfg = write_config(kit, tmp_path, free_port(), url=str(tmp_path / "no-camera.avi"), stop_at_end=False)
    proc = start_daemon(cfg, tmp_path / "daemon.log", NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="1000000")
    heard: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ("READY=1" in heard and heard.count("WATCHDOG=1") >= 2):
        with contextlib.suppress(TimeoutError):
            heard.append(sock.recv(256).decode())
    proc.send_signal(signal.SIGTERM)
    assert finish(proc, 30) == 0
    try:
        while True:
            heard.append(sock.recv(256).decode())
    except TimeoutError:
        pass
    sock.close()
    assert "READY=1" in heard and heard.count("WATCHDOG=1") >= 2 and "STOPPING=1" in heard, heard


def test_a_recording_waits_for_a_watchlist_published_over_mqtt(kit: Path, tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()
    try:
        sub = Subscriber(broker.port, ["edge/v1/+/hits", "edge/v1/+/watchlist/ack"]).connect()
        cfg = tmp_path / "edge.toml"
        cfg.write_text(
            f'device_id = "pole-7"\ndata_dir = "{tmp_path / "data"}"\n'
            f'[[sources]]\ncamera = "gate"\nurl = "{kit / "clip.avi"}"\nstop_at_end = true\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
            f'[watchlist]\nname = "city"\npublic_keys = ["{kit / "keys" / "watchlist.pub"}"]\n'
        )
        proc = start_daemon(cfg, tmp_path / "daemon.log")  # a fresh device: no watchlist yet
        assert wait_for_text(tmp_path / "daemon.log", "no watchlist applied yet")
        _publish_bundle(kit / "v1", broker.port)
        assert finish(proc) == 0, (tmp_path / "daemon.log").read_text()
        hits = sub.wait_for("/hits", 1, timeout=5)
        acks = sub.json("/watchlist/ack")
        sub.disconnect()
    finally:
        broker.stop()
    assert [a["outcome"] for a in acks] == ["applied"]
    assert [h["entry_id"] for h in hits] == ["case-0001"]


def test_a_thumbnail_travels_only_when_the_operator_turns_it_on(kit: Path, tmp_path: Path) -> None:
    import base64

    import cv2

    broker = Broker(tmp_path)
    broker.start()
    try:
        sub = Subscriber(broker.port, ["edge/v1/+/hits"]).connect()
        cfg = write_config(kit, tmp_path, broker.port, extra="[privacy]\nthumbnails = true\nthumbnail_px = 96\n")
        assert finish(start_daemon(cfg, tmp_path / "daemon.log")) == 0
        hits = sub.wait_for("/hits", 1, timeout=5)
        sub.disconnect()
    finally:
        broker.stop()
    [hit] = hits
    jsonschema.validate(hit, SCHEMAS["hit"])
    jpeg = np.frombuffer(base64.b64decode(hit["thumbnail_jpeg_b64"]), np.uint8)
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (96, 96, 3)
