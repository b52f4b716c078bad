"""A real MQTT subscriber for tests: a persistent session, so messages sent while it is away are kept for it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SENTINEL = "test/sync"


def wait_for_text(path: Any, text: str, timeout: float = 120.0) -> bool:
    """Wait until ``text`` appears in the file at ``path`` (a log), or the deadline passes.

    The deadline only bounds a failing test: a loaded 2-core runner needed over 30 s for a daemon's start.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in path.read_text():
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class Subscriber:
    def __init__(self, port: int, topics: list[str], client_id: str = "test-central") -> None:
        self.port = port
        self.topics = topics
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        for t in [*self.topics, SENTINEL]:
            client.subscribe(t, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def connect(self) -> Subscriber:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self._subscribed.clear()
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(5), "subscription not acknowledged"
        return self

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def sync(self, timeout: float = 10.0) -> None:
        """Wait until everything the broker held for this subscriber before now has arrived.

        Publishes a marker behind it: the broker delivers a session's messages in order.
        """
        marker = uuid.uuid4().hex.encode()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        c.publish(SENTINEL, marker, qos=1).wait_for_publish(timeout)
        c.disconnect()
        c.loop_stop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(t == SENTINEL and p == marker for t, p, _ in self.messages):
                    return
            time.sleep(0.05)
        raise AssertionError("the broker did not deliver the sync marker")

    def json(self, suffix: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix) and p]

    def wait_for(self, suffix: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.json(suffix)
            if len(got) >= count:
                return got
            time.sleep(0.1)
        return self.json(suffix)


def publish_bundle_unchecked(bundle: Any, port: int) -> None:
    """Retain a bundle folder's manifest and chunks as they are, with no checks: what a forger could send.

    (`edge watchlist publish` verifies first and would refuse a forged bundle.)
    """
    from edge.operator.watchlist_publish import BUNDLE_SCHEMA
    from edge.publish import chunk_topic, manifest_topic
    from edge.watchlist.bundle import b64, read_bundle

    b = read_bundle(bundle)
    m = b.manifest()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(chunk_topic(m.name, m.version, i), data, qos=1, retain=True) for i, data in sorted(b.chunks.items())]
    doc = {"schema": BUNDLE_SCHEMA, "manifest": b.manifest_bytes.decode(), "signature": b64(b.signature)}
    infos.append(c.publish(manifest_topic(m.name), json.dumps(doc), qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()
