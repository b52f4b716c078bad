"""MQTT: topic names of the v1 contract and a client factory (MQTT v5, TLS, credentials).

MQTT v5 because Mosquitto acknowledges publishes its ACL denies, and only a v5 PUBACK
reason code tells the sender it failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.errors import EdgeError

log = logging.getLogger(__name__)

PREFIX = "edge/v1"


class BrokerError(EdgeError):
    """The broker cannot be reached, refused us, or refused a publish."""


def hits_topic(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/hits"


def status_topic(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/status"


def ack_topic(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/watchlist/ack"


def manifest_topic(name: str) -> str:
    return f"{PREFIX}/watchlists/{name}/manifest"


def chunk_topic(name: str, version: int, n: int) -> str:
    return f"{PREFIX}/watchlists/{name}/v{version}/chunks/{n}"


def revoke_topic(name: str) -> str:
    return f"{PREFIX}/watchlists/{name}/revoke"


@dataclass(frozen=True)
class BrokerOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = None
    client_id: str = ""
    keepalive: int = 30


def parse_host_port(value: str, default_port: int = 1883) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError as exc:
        raise EdgeError(f"broker address {value!r} is not HOST:PORT") from exc


def make_client(opts: BrokerOptions) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=opts.client_id, protocol=mqtt.MQTTv5)
    if opts.username:
        client.username_pw_set(opts.username, opts.password)
    if opts.ca is not None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(opts.ca))
        if opts.cert is not None:
            ctx.load_cert_chain(str(opts.cert), str(opts.key) if opts.key else None)
        client.tls_set_context(ctx)
    return client


def connect_blocking(client: mqtt.Client, opts: BrokerOptions, timeout: float = 10.0) -> None:
    """Connect and start the network loop; raise BrokerError with the broker's reason on failure."""
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        result["reason"] = reason
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(opts.host, opts.port, keepalive=opts.keepalive)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"cannot reach broker {opts.host}:{opts.port}: {exc}") from exc
    client.loop_start()
    if not done.wait(timeout):
        client.loop_stop()
        raise BrokerError(f"broker {opts.host}:{opts.port} did not answer within {timeout:.0f}s")
    reason = result["reason"]
    if reason.is_failure:
        client.loop_stop()
        raise BrokerError(f"broker {opts.host}:{opts.port} refused the connection: {reason}")


class Publisher:
    """The daemon's MQTT side: drains the outbox (QoS 1), heartbeats status, and feeds watchlist messages in.

    A row leaves the outbox only in ``on_publish`` with a success reason code: paho's
    ``wait_for_publish`` raises while offline and its in-memory queue dies with the process,
    so delivery is tracked against the SQLite outbox instead. A PUBACK with a failure code
    (for instance an ACL denial, which Mosquitto acknowledges) keeps the row, counts it and
    retries it later.
    """

    RESEND_AFTER_S = 30.0
    RETRY_FAILED_AFTER_S = 60.0

    def __init__(
        self,
        opts: BrokerOptions,
        *,
        device_id: str,
        outbox: Any,
        subscriptions: list[str],
        on_message: Any,
        max_inflight: int = 50,
    ) -> None:
        self.opts = opts
        self.device_id = device_id
        self.outbox = outbox
        self.subscriptions = subscriptions
        self.on_message_cb = on_message
        self.max_inflight = max_inflight
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.failed_publishes = 0
        self._inflight: dict[int, tuple[str, float]] = {}
        self._retry_at: dict[str, float] = {}
        self._publishing = False
        self._early: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = make_client(opts)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        will = json.dumps({"schema": "edge.status/1", "device_id": device_id, "state": "offline"})
        self.client.will_set(status_topic(device_id), will, qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.client.connect_async(self.opts.host, self.opts.port, keepalive=self.opts.keepalive)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._flush_loop, name="outbox-flush", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        self._kick.set()

    def publish_status(self, payload: dict[str, Any]) -> None:
        if self.connected.is_set():
            self.client.publish(status_topic(self.device_id), json.dumps(payload), qos=1, retain=True)

    def stop(self, offline_payload: dict[str, Any] | None = None) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if offline_payload is not None and self.connected.is_set():
            info = self.client.publish(status_topic(self.device_id), json.dumps(offline_payload), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=3)
        self.client.disconnect()
        self.client.loop_stop()

    # --- paho callbacks (network thread) ---

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.error("MQTT %s:%d: %s", self.opts.host, self.opts.port, self.last_error)
            return
        log.info("MQTT connected to %s:%d as %s", self.opts.host, self.opts.port, self.opts.username or "(anonymous)")
        self.connected.set()
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        self._kick.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning("MQTT disconnected from %s:%d (%s); hits stay in the outbox", self.opts.host, self.opts.port, reason)
        self.connected.clear()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._lock:
            item = self._inflight.pop(mid, None)
            if item is None and self._publishing:
                self._early[mid] = reason  # acknowledged before the flush thread could register it
        if item is None:
            return
        self._settle(item[0], reason)

    def _settle(self, event_id: str, reason: Any) -> None:
        if reason.is_failure:
            self.failed_publishes += 1
            self.last_error = f"broker refused message {event_id}: {reason}"
            log.error("%s; kept in the outbox, retried in %.0fs", self.last_error, self.RETRY_FAILED_AFTER_S)
            self.outbox.failed(event_id, str(reason))
            self._retry_at[event_id] = time.monotonic() + self.RETRY_FAILED_AFTER_S
            return
        self.outbox.delivered(event_id)
        self._kick.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: Any) -> None:
        try:
            self.on_message_cb(msg.topic, bytes(msg.payload), bool(msg.retain))
        except Exception:  # a bad message must never take the network thread down
            log.exception("error handling a message on %s", msg.topic)

    # --- outbox drain ---

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(timeout=1.0)
            self._kick.clear()
            if self.connected.is_set():
                try:
                    self._flush_once()
                except Exception as exc:  # keep draining on the next kick; the rows are safe in SQLite
                    self.last_error = f"outbox flush failed: {exc}"
                    log.exception("outbox flush failed")

    def _flush_once(self) -> None:
        now = time.monotonic()
        with self._lock:
            stale = [mid for mid, (_, t) in self._inflight.items() if now - t > self.RESEND_AFTER_S]
            for mid in stale:
                del self._inflight[mid]
            busy = {eid for eid, _ in self._inflight.values()}
            room = self.max_inflight - len(self._inflight)
        waiting = {eid for eid, t in self._retry_at.items() if t > now}
        for eid in [eid for eid, t in self._retry_at.items() if t <= now]:
            del self._retry_at[eid]
        if room <= 0:
            return
        for row in self.outbox.pending(room, busy | waiting):
            # paho's publish() takes its own locks and its network thread calls _on_publish holding them: calling
            # publish() under self._lock deadlocked both threads (found by tools/faults.py disk-full under load).
            with self._lock:
                self._publishing = True
            early = None
            info: Any = None
            try:
                info = self.client.publish(row.topic, row.payload, qos=1)
            finally:
                with self._lock:
                    self._publishing = False
                    ok = info is not None and info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)
                    if ok:
                        # Message ids are unique among messages in flight, so an early ack for this mid is this row's.
                        early = self._early.pop(info.mid, None)
                        if early is None:
                            self._inflight[info.mid] = (row.event_id, now)
                    self._early.clear()
            if not ok:
                log.warning("publish of %s failed (%s); retried later", row.event_id, mqtt.error_string(info.rc) if info else "?")
                continue
            if early is not None:
                self._settle(row.event_id, early)

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the outbox is empty (everything acknowledged) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.stats().depth == 0:
                return True
            self._kick.set()
            time.sleep(0.2)
        return bool(self.outbox.stats().depth == 0)


class ConsoleSink:
    """Stands in for the broker when MQTT is off (demo): prints each message and counts it delivered."""

    def __init__(self, outbox: Any, stream: Any = None) -> None:
        self.outbox = outbox
        self.stream = stream
        self.connected = threading.Event()
        self.connected.set()
        self.last_error: str | None = None
        self.failed_publishes = 0

    def start(self) -> None:
        self.kick()

    def kick(self) -> None:
        import sys

        out = self.stream or sys.stdout
        for row in self.outbox.pending(1000):
            out.write(f"{row.topic} {row.payload.decode('utf-8')}\n")
            out.flush()
            self.outbox.delivered(row.event_id)

    def publish_status(self, payload: dict[str, Any]) -> None:
        pass

    def stop(self, offline_payload: dict[str, Any] | None = None) -> None:
        self.kick()

    def wait_drained(self, timeout: float) -> bool:
        self.kick()
        return True
