"""`edge watchlist publish` checks before it sends, never rolls the broker back, and never leaves a gap.

Bundles are built from random embeddings (no photos needed) and published to a real Mosquitto.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.cli import main
from edge.watchlist.bundle import build_unsigned, sign_manifest, write_bundle
from edge.watchlist.chunks import Entry
from edge.watchlist.keys import generate_keypair, load_private_key
from edge.watchlist.manifest import now_utc
from tests.broker import Broker
from tests.mqtt_helpers import publish_bundle_unchecked

TOPICS = "edge/v1/watchlists/city/#"
MANIFEST = "edge/v1/watchlists/city/manifest"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    generate_keypair(folder / "good")
    generate_keypair(folder / "other")
    return folder


def bundle(keys: Path, out: Path, version: int, *, key: str = "good", expires_days: float = 30.0, entries: int = 3) -> Path:
    rng = np.random.default_rng(version)
    emb = rng.normal(size=(entries, 192)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    manifest, chunks = build_unsigned(
        [Entry(f"case-{i}", emb[i : i + 1]) for i in range(entries)],
        name="city",
        version=version,
        embedding_space="test-space",
        expires_at=now_utc() + timedelta(days=expires_days),
        dtype="float32",
    )
    data, sig = sign_manifest(manifest, load_private_key(keys / key / "watchlist.key"))
    write_bundle(out, data, chunks, sig)
    return out


def publish(keys: Path, folder: Path, broker: Broker, *extra: str) -> int:
    pub = ["--public-key", str(keys / "good" / "watchlist.pub")]
    return main(["watchlist", "publish", str(folder), "--broker", f"127.0.0.1:{broker.port}", *pub, *extra])


def retained(port: int) -> dict[str, bytes]:
    """Everything retained under the city watchlist (the UNSUBACK comes behind the retained messages)."""
    got: dict[str, bytes] = {}
    done = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda _c, _u, m: got.__setitem__(m.topic, bytes(m.payload)) if m.retain and m.payload else None
    c.on_subscribe = lambda cl, *_: cl.unsubscribe(TOPICS)
    c.on_unsubscribe = lambda *_: done.set()
    c.on_connect = lambda cl, *_: cl.subscribe(TOPICS, qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()
    return got


def version_on(port: int) -> int:
    return int(json.loads(json.loads(retained(port)[MANIFEST])["manifest"])["version"])


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Broker(tmp_path) as b:
        yield b


def test_a_good_bundle_is_published_and_replaces_the_previous_version_whole(keys: Path, tmp_path: Path, broker: Broker) -> None:
    assert publish(keys, bundle(keys, tmp_path / "v1", 1), broker) == 0
    assert publish(keys, bundle(keys, tmp_path / "v2", 2), broker) == 0
    assert version_on(broker.port) == 2
    assert sorted(retained(broker.port)) == [MANIFEST, "edge/v1/watchlists/city/v2/chunks/0"], "v1's chunks cleared after"


@pytest.mark.parametrize("damage", ["chunk altered", "chunk missing", "manifest edited", "untrusted key", "expired"])
def test_a_bundle_a_device_would_refuse_is_not_published(
    keys: Path, tmp_path: Path, broker: Broker, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert publish(keys, bundle(keys, tmp_path / "v1", 1), broker) == 0
    before = retained(broker.port)
    bad = bundle(keys, tmp_path / "v2", 2, key="other" if damage == "untrusted key" else "good")
    if damage == "chunk altered":
        chunk = bad / "chunks" / "00000.bin"
        data = bytearray(chunk.read_bytes())
        data[-1] ^= 1
        chunk.write_bytes(bytes(data))
    elif damage == "chunk missing":
        (bad / "chunks" / "00000.bin").unlink()
    elif damage == "manifest edited":
        doc = json.loads((bad / "manifest.json").read_text())
        doc["version"] = 99
        (bad / "manifest.json").write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    elif damage == "expired":
        shutil.rmtree(bad)
        bad = bundle(keys, tmp_path / "v2", 2, expires_days=-1)
    capsys.readouterr()
    assert publish(keys, bad, broker) != 0
    out = capsys.readouterr()
    assert "NOT PUBLISHED" in out.out + out.err
    assert retained(broker.port) == before, "the broker still holds v1, whole"


def test_a_version_not_newer_than_the_brokers_is_refused_unless_forced(
    keys: Path, tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    v10, v11 = bundle(keys, tmp_path / "v10", 10), bundle(keys, tmp_path / "v11", 11)
    assert publish(keys, v11, broker) == 0
    before = retained(broker.port)
    capsys.readouterr()
    assert publish(keys, v10, broker) == 1
    assert "older than v11 on the broker" in capsys.readouterr().out
    assert publish(keys, v11, broker) == 1, "the same version again is refused too"
    assert retained(broker.port) == before, "v11 and its chunks untouched"
    assert publish(keys, v10, broker, "--force") == 0
    assert version_on(broker.port) == 10


def test_a_retained_manifest_that_does_not_verify_is_replaced_only_when_forced(
    keys: Path, tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    # Retained without checks, signed with a key the operator does not give: forged, or a rotated-out key.
    publish_bundle_unchecked(bundle(keys, tmp_path / "v50", 50, key="other"), broker.port)
    capsys.readouterr()
    assert publish(keys, bundle(keys, tmp_path / "v2", 2), broker) == 1
    assert "retained on the broker (v50) does not verify" in capsys.readouterr().out
    assert version_on(broker.port) == 50
    assert publish(keys, bundle(keys, tmp_path / "v2", 2), broker, "--force") == 0
    assert sorted(retained(broker.port)) == [MANIFEST, "edge/v1/watchlists/city/v2/chunks/0"]


def test_the_previous_version_stays_whole_when_the_new_one_cannot_be_completed(
    keys: Path, tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert publish(keys, bundle(keys, tmp_path / "v1", 1), broker) == 0
    before = retained(broker.port)
    # The broker now lets this publisher retain chunks but not the manifest (a misconfigured ACL, say).
    acl = tmp_path / "acl"
    acl.write_text("topic read edge/v1/watchlists/#\ntopic write edge/v1/watchlists/city/+/chunks/#\n")
    broker.extra_conf = f"acl_file {acl}\n"
    broker.restart()
    capsys.readouterr()
    assert publish(keys, bundle(keys, tmp_path / "v2", 2), broker) == 2
    assert "refused" in capsys.readouterr().err
    after = retained(broker.port)
    assert after[MANIFEST] == before[MANIFEST], "devices are still offered v1"
    assert after["edge/v1/watchlists/city/v1/chunks/0"] == before["edge/v1/watchlists/city/v1/chunks/0"], "v1 is whole"


def test_the_documented_form_without_a_public_key_still_checks_contents_and_versions(
    keys: Path, tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edge watchlist publish BUNDLE_DIR --broker HOST:PORT` (the command surface release checks drive)."""

    def publish_bare(folder: Path) -> int:
        return main(["watchlist", "publish", str(folder), "--broker", f"127.0.0.1:{broker.port}"])

    assert publish_bare(bundle(keys, tmp_path / "v2", 2)) == 0
    assert version_on(broker.port) == 2
    bad = bundle(keys, tmp_path / "v3", 3)
    chunk = bad / "chunks" / "00000.bin"
    chunk.write_bytes(chunk.read_bytes()[:-1] + bytes([chunk.read_bytes()[-1] ^ 1]))
    capsys.readouterr()
    assert publish_bare(bad) != 0, "an altered chunk is refused without a key too"
    assert publish_bare(bundle(keys, tmp_path / "v1", 1)) != 0, "an older version is refused without a key too"
    assert "NOT PUBLISHED" in capsys.readouterr().out
    assert version_on(broker.port) == 2
