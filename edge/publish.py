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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.errors import EdgeError
from edge.redact import redact_values

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


def add_broker_arguments(p: Any, *, key_flag: str = "--key") -> None:
    """The broker connection options the operator commands share (``key_flag``: where ``--key`` means another key)."""
    p.add_argument("--ca", type=Path, help="CA certificate of the broker (enables TLS)")
    p.add_argument("--cert", type=Path, help="client certificate")
    p.add_argument(key_flag, type=Path, help="client certificate key")
    p.add_argument("--username", help="MQTT username")
    p.add_argument("--password-file", type=Path, help="file holding the MQTT password")


def broker_options(args: Any, *, key: Path | None, client_id: str = "") -> BrokerOptions:
    """``BrokerOptions`` from ``--broker`` and the options ``add_broker_arguments`` adds."""
    host, port = parse_host_port(args.broker)
    password = args.password_file.read_text().strip() if args.password_file else None
    return BrokerOptions(host, port, args.ca, args.cert, key, args.username, password, client_id=client_id)


NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT v5 PUBACK reason code


class _Client(mqtt.Client):
    """paho's client, remembering the last socket or TLS error.

    paho retries connections in its own thread and swallows the exception (a refused client
    certificate only shows as a TLS alert on the first read, which paho merely logs), so
    without this the daemon could only say that the connection failed, not why.
    """

    def __init__(self, client_id: str) -> None:
        super().__init__(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.socket_error: str | None = None
        self.on_log = self._on_paho_log

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:  # ssl.SSLError and ConnectionRefusedError included
            self.socket_error = str(exc) or type(exc).__name__
            raise

    def _on_paho_log(self, _c: mqtt.Client, _u: Any, level: int, message: str) -> None:
        if level == mqtt.MQTT_LOG_ERR and message.startswith("failed to"):
            self.socket_error = message.partition(": ")[2] or message


HANDSHAKE_CLOSED = "the broker closed the connection in the handshake (refused certificate?)"
# What OpenSSL's words mean for whoever reads the device's log: (text in the error, explanation).
_TLS_REASONS = [
    ("alert certificate expired", "client certificate expired: the broker refused {cert}; install a renewed certificate"),
    ("alert certificate revoked", "client certificate revoked: {cert} is on the broker's revocation list (CRL)"),
    ("alert unknown ca", "client certificate not trusted: the broker does not know the CA that signed {cert}"),
    ("alert certificate required", "no client certificate: the broker requires one: set [mqtt] tls.cert and tls.key"),
    ("alert bad certificate", "client certificate refused by the broker ({cert})"),
    ("alert handshake failure", "no TLS version or cipher in common with the broker"),
    ("alert protocol version", "no TLS version in common with the broker"),
    ("certificate verify failed", "the broker's certificate does not verify against tls.ca {ca}"),
    ("wrong version number", "the port does not speak TLS (a plain-text listener? check [mqtt] port and tls)"),
    # The broker refused us but its TLS alert was lost: it closed the socket with our handshake still unread, so
    # the kernel answered with a reset, or the client saw the end of the stream first (more likely under load).
    ("eof occurred in violation of protocol", HANDSHAKE_CLOSED),
    ("unexpected eof", HANDSHAKE_CLOSED),
    ("reset by peer", HANDSHAKE_CLOSED),
    ("broken pipe", HANDSHAKE_CLOSED),
]


def client_certificate_problem(opts: BrokerOptions, now: datetime | None = None) -> str | None:
    """What is wrong with the device's own certificate as far as it can tell alone: validity dates, issuer."""
    if opts.cert is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(opts.cert.read_bytes())
    except (OSError, ValueError) as exc:
        return f"client certificate {opts.cert} cannot be read ({exc})"
    now = now or datetime.now(UTC)
    if cert.not_valid_after_utc <= now:
        return f"client certificate expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: install a renewed {opts.cert}"
    if cert.not_valid_before_utc > now:
        return f"client certificate {opts.cert} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (clock wrong?)"
    if opts.ca is not None:
        try:
            ca = x509.load_pem_x509_certificate(opts.ca.read_bytes())
            cert.verify_directly_issued_by(ca)
        except (OSError, ValueError, TypeError, InvalidSignature):
            # Usually one fleet CA signs the broker's and the devices' certificates; say so if this one differs.
            return f"client certificate {opts.cert} is not signed by the CA in tls.ca {opts.ca}"
    return None


def describe_connect_failure(opts: BrokerOptions, error: str | None) -> str:
    """One line naming the broker and, where the error says so, what is wrong and what to do."""
    where = f"MQTT broker {opts.host}:{opts.port}"
    if not error:
        return f"{where}: connection failed"
    low = error.lower()
    if opts.ca is not None:
        if "certificate verify failed" not in low and "refused" not in low:
            # A refused client certificate often shows only as a closed connection (the TLS alert is lost
            # when the socket closes under the first write): the device's own view of its certificate helps.
            problem = client_certificate_problem(opts)
            if problem is not None:
                return f"{where}: TLS handshake failed: {problem} ({error})"
        if opts.cert is None and ("eof" in low or "reset by peer" in low):
            need = "the broker closed the connection; it may require a client certificate: set [mqtt] tls.cert and tls.key"
            return f"{where}: TLS handshake failed: {need} ({error})"
        for needle, text in _TLS_REASONS:
            if needle in low:
                return f"{where}: TLS handshake failed: {text.format(cert=opts.cert, ca=opts.ca)} ({error})"
    elif "reset by peer" in low or "eof" in low or "connection closed" in low or "lost" in low:
        return f"{where}: the broker closed the connection before answering (a TLS-only port? configure [mqtt] tls) ({error})"
    if "refused" in low:
        return f"{where}: cannot reach broker: nothing accepts connections there ({error})"
    return f"{where}: cannot reach broker ({error})"


def make_client(opts: BrokerOptions) -> mqtt.Client:
    client = _Client(opts.client_id)
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
    client.on_disconnect = lambda *_: done.set()  # closed before CONNACK: a refused certificate, a plain-text client
    try:
        client.connect(opts.host, opts.port, keepalive=opts.keepalive)
    except OSError as exc:
        raise BrokerError(describe_connect_failure(opts, str(exc) or type(exc).__name__)) from exc
    client.loop_start()
    if not done.wait(timeout) or "reason" not in result:
        client.loop_stop()
        error = getattr(client, "socket_error", None)
        if error is None:
            raise BrokerError(f"MQTT broker {opts.host}:{opts.port} did not answer within {timeout:.0f}s")
        raise BrokerError(describe_connect_failure(opts, error))
    reason = result["reason"]
    if reason.is_failure:
        client.loop_stop()
        raise BrokerError(f"broker {opts.host}:{opts.port} refused the connection: {reason}")


def _status_json(payload: dict[str, Any]) -> str:
    """The status as sent: retained, and stored centrally, so no camera password in any of its texts."""
    return json.dumps(redact_values(payload))


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
    # MQTT v5 PUBACK 0x10 "No matching subscribers": the broker took the hit but no central
    # consumer was subscribed (Mosquitto forgets shared subscriptions over a restart until the
    # ingest workers resubscribe), so it would be gone. Keep it and publish it again shortly.
    RETRY_NO_SUBSCRIBERS_S = 5.0

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
        self.no_subscribers = 0  # publishes the broker had no subscriber for (kept and retried)
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
        self._reported: set[str] = set()  # connection errors already logged since the last success
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def start(self) -> None:
        problem = client_certificate_problem(self.opts)
        if problem is not None:  # said at start, before the broker's refusal arrives (or is lost with the socket)
            log.error("MQTT broker %s:%d: %s", self.opts.host, self.opts.port, problem)
        self.client.connect_async(self.opts.host, self.opts.port, keepalive=self.opts.keepalive)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._flush_loop, name="outbox-flush", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        self._kick.set()

    def publish_status(self, payload: dict[str, Any]) -> None:
        if self.connected.is_set():
            self.client.publish(status_topic(self.device_id), _status_json(payload), qos=1, retain=True)

    def publish_now(self, topic: str, payload: bytes) -> bool:
        """QoS 1, not retained, not through the outbox (periodic messages such as the audit head); False if offline."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=1)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self, offline_payload: dict[str, Any] | None = None) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if offline_payload is not None and self.connected.is_set():
            info = self.client.publish(status_topic(self.device_id), _status_json(offline_payload), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=3)
        self.client.disconnect()
        self.client.loop_stop()

    # --- paho callbacks (network thread) ---

    def _report_connect_failure(self, message: str) -> None:
        """Log a connection failure once (paho retries every few seconds); it is also the status's last_error."""
        self.last_error = message
        if message in self._reported:
            log.debug("%s", message)
            return
        self._reported.add(message)
        log.error("%s; hits stay in the outbox and the connection is retried", message)

    def _on_connect_fail(self, client: mqtt.Client, _u: Any) -> None:
        self._report_connect_failure(describe_connect_failure(self.opts, getattr(client, "socket_error", None)))

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._report_connect_failure(f"MQTT broker {self.opts.host}:{self.opts.port} refused the connection: {reason}")
            return
        self._reported.clear()
        log.info("MQTT connected to %s:%d as %s", self.opts.host, self.opts.port, self.opts.username or "(anonymous)")
        self.connected.set()
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        self._kick.set()

    def _on_disconnect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self._stop.is_set():
            pass
        elif self.connected.is_set():
            log.warning("MQTT disconnected from %s:%d (%s); hits stay in the outbox", self.opts.host, self.opts.port, reason)
        else:  # the connection ended before the broker's CONNACK: TLS refused our certificate, or a plain-text port
            self._report_connect_failure(
                describe_connect_failure(self.opts, getattr(client, "socket_error", None) or str(reason))
            )
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
        if getattr(reason, "value", None) == NO_MATCHING_SUBSCRIBERS:
            self.no_subscribers += 1
            log.debug("no subscriber took %s; kept in the outbox, retried in %.0fs", event_id, self.RETRY_NO_SUBSCRIBERS_S)
            self._retry_at[event_id] = time.monotonic() + self.RETRY_NO_SUBSCRIBERS_S
            return
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
    """Stands in for the broker when MQTT is off (demo): counts each message delivered and prints those that are not hits."""

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
            if not row.topic.endswith("/hits"):  # hits are already reported by the daemon (a line each, or --json)
                out.write(f"{row.topic} {row.payload.decode('utf-8')}\n")
                out.flush()
            self.outbox.delivered(row.event_id)

    def publish_status(self, payload: dict[str, Any]) -> None:
        pass

    def publish_now(self, topic: str, payload: bytes) -> bool:
        return False

    def stop(self, offline_payload: dict[str, Any] | None = None) -> None:
        self.kick()

    def wait_drained(self, timeout: float) -> bool:
        self.kick()
        return True
