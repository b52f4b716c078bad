"""The operator's watchlist commands, run as an operator would: keygen, build, verify, apply, publish."""

from __future__ import annotations

import json
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.cli import main
from tests.broker import running_broker
from tests.conftest import rows

ENROL = {"case-angelina": "Angelina", "case-mark": "Mark", "case-jack": "Jack"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> Path:
    ws = tmp_path_factory.mktemp("wl")
    by_person: dict[str, list[str]] = {}
    for r in rows("faces.csv"):
        by_person.setdefault(r["identity"], []).append(r["path"])
    for entry, person in ENROL.items():
        d = ws / "photos" / entry
        d.mkdir(parents=True)
        for p in sorted(by_person[person])[:2]:
            shutil.copy(faces_dir / p, d / Path(p).name)
    shutil.copy(faces_dir / "nonfaces/scikit-image-data__brick_png.png", ws / "photos" / "case-mark" / "brick.png")
    (ws / "photos" / "case-jack" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    assert main(["watchlist", "keygen", "--out", str(ws / "keys")]) == 0
    assert main(
        ["watchlist", "build", "--photos", str(ws / "photos"), "--name", "city", "--version", "1",
         "--key", str(ws / "keys" / "watchlist.key"), "--out", str(ws / "v1"), "--quiet"]
    ) == 0  # fmt: skip
    return ws


def pub(ws: Path) -> list[str]:
    return ["--public-key", str(ws / "keys" / "watchlist.pub")]


def verify(ws: Path, bundle: Path, *extra: str) -> int:
    return main(["watchlist", "verify", str(bundle), "--public-key", str(ws / "keys" / "watchlist.pub"), *extra])


def test_keygen_writes_a_private_key_only_its_owner_can_read(workspace: Path) -> None:
    mode = stat.S_IMODE((workspace / "keys" / "watchlist.key").stat().st_mode)
    assert mode == 0o600
    assert b"BEGIN PRIVATE KEY" in (workspace / "keys" / "watchlist.key").read_bytes()
    assert b"BEGIN PUBLIC KEY" in (workspace / "keys" / "watchlist.pub").read_bytes()


def test_build_lists_every_rejected_photo_and_why(workspace: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(
        ["watchlist", "build", "--photos", str(workspace / "photos"), "--name", "city", "--version", "9",
         "--out", str(tmp_path / "unsigned"), "--quiet"]
    ) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "brick.png: no face found" in out
    assert "broken.jpg: not a decodable image" in out
    assert "3 entries" in out and "UNSIGNED" in out
    assert not (tmp_path / "unsigned" / "manifest.sig").exists()
    # An unsigned bundle is refused until signed elsewhere with `sign`.
    assert verify(workspace, tmp_path / "unsigned") == 1
    assert main(["watchlist", "sign", str(tmp_path / "unsigned"), "--key", str(workspace / "keys" / "watchlist.key")]) == 0
    assert verify(workspace, tmp_path / "unsigned") == 0


def test_verify_accepts_a_good_bundle_and_explains_each_refusal(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify(workspace, workspace / "v1") == 0
    assert "would be applied" in capsys.readouterr().out
    assert verify(workspace, workspace / "v1", "--current-version", "1") == 1
    assert "replayed_version" in capsys.readouterr().out
    assert verify(workspace, workspace / "v1", "--current-version", "4") == 1
    assert "older_version" in capsys.readouterr().out

    bad = tmp_path / "bad"
    shutil.copytree(workspace / "v1", bad)
    chunk = bad / "chunks" / "00000.bin"
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\x00")
    assert verify(workspace, bad) == 1
    assert "chunk_hash_mismatch" in capsys.readouterr().out

    shutil.rmtree(bad)
    shutil.copytree(workspace / "v1", bad)
    doc = json.loads((bad / "manifest.json").read_text())
    doc["version"] = 99
    (bad / "manifest.json").write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    assert verify(workspace, bad) == 1
    assert "bad_signature" in capsys.readouterr().out

    (bad / "chunks" / "00000.bin").unlink()
    shutil.copy(workspace / "v1" / "manifest.json", bad / "manifest.json")
    assert verify(workspace, bad) == 1
    assert "missing_chunk" in capsys.readouterr().out

    other = tmp_path / "otherkeys"
    main(["watchlist", "keygen", "--out", str(other)])
    capsys.readouterr()
    assert main(["watchlist", "verify", str(workspace / "v1"), "--public-key", str(other / "watchlist.pub")]) == 1
    assert "unknown_key" in capsys.readouterr().out


def test_apply_with_a_device_config_audits_and_refuses_replays(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'device_id = "pole-1"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[watchlist]\nname = "city"\npublic_keys = ["{workspace / "keys" / "watchlist.pub"}"]\n'
    )
    assert main(["watchlist", "apply", str(workspace / "v1"), "--config", str(cfg)]) == 0
    assert "applied watchlist city v1 (3 entries)" in capsys.readouterr().out
    assert main(["watchlist", "apply", str(workspace / "v1"), "--config", str(cfg)]) == 1
    assert "REFUSED (replayed_version)" in capsys.readouterr().out
    assert main(["watchlist", "show", "--config", str(cfg)]) == 0
    assert '"version": 1' in capsys.readouterr().out


def collect_retained(port: int, topic: str, wait: float = 1.5) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    done = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if msg.retain and msg.payload:
            got[msg.topic] = msg.payload

    c.on_message = on_message
    c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(wait)
    c.disconnect()
    c.loop_stop()
    return got


def test_publish_retains_manifest_and_chunks_and_clears_the_previous_version(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(
        ["watchlist", "build", "--photos", str(workspace / "photos"), "--name", "city", "--version", "2",
         "--key", str(workspace / "keys" / "watchlist.key"), "--out", str(tmp_path / "v2"), "--quiet"]
    ) == 0  # fmt: skip
    with running_broker(tmp_path) as broker:
        broker_addr = f"127.0.0.1:{broker.port}"
        assert main(["watchlist", "publish", str(workspace / "v1"), "--broker", broker_addr, *pub(workspace)]) == 0
        got = collect_retained(broker.port, "edge/v1/watchlists/city/#")
        assert set(got) == {"edge/v1/watchlists/city/manifest", "edge/v1/watchlists/city/v1/chunks/0"}
        msg = json.loads(got["edge/v1/watchlists/city/manifest"])
        assert msg["manifest"].encode() == (workspace / "v1" / "manifest.json").read_bytes()
        assert got["edge/v1/watchlists/city/v1/chunks/0"] == (workspace / "v1" / "chunks" / "00000.bin").read_bytes()

        from edge.central.store import Store

        db = tmp_path / "central.db"
        Store(db).close()
        assert (
            main(
                [
                    "watchlist",
                    "publish",
                    str(tmp_path / "v2"),
                    "--broker",
                    broker_addr,
                    "--db",
                    str(db),
                    "--by",
                    "ops",
                    *pub(workspace),
                ]
            )
            == 0
        )
        assert "cleared 1 retained chunks of v1" in capsys.readouterr().out
        published = Store(db).published()["city"]  # the fleet's current version, for the console and the fleet view
        assert (published.version, published.published_by) == (2, "ops")
        got = collect_retained(broker.port, "edge/v1/watchlists/city/#")
        assert set(got) == {"edge/v1/watchlists/city/manifest", "edge/v1/watchlists/city/v2/chunks/0"}


def test_publish_to_a_broker_that_is_down_fails_clearly(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.broker import free_port

    assert main(["watchlist", "publish", str(workspace / "v1"), "--broker", f"127.0.0.1:{free_port()}", *pub(workspace)]) == 2
    assert "cannot reach broker" in capsys.readouterr().err
