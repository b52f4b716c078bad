"""The central broker as docs/broker/ configures it: mutual TLS only, identity from the certificate, per-device ACL.

The broker runs docs/broker/mosquitto.conf and docs/broker/acl themselves, with only paths and the
port substituted, so the documented configuration is the tested one.
"""

from __future__ import annotations

import getpass
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.publish import (
    HANDSHAKE_CLOSED,
    BrokerError,
    BrokerOptions,
    client_certificate_problem,
    connect_blocking,
    make_client,
)
from tests.broker import Broker, free_port
from tests.pki import TestCA
from tests.test_daemon import finish, kit, outbox_depth, start_daemon, write_config  # noqa: F401  (kit is a fixture)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "broker"
NOT_AUTHORIZED = 0x87
FAILURE = 0x80  # PUBACK reason codes below this are successes (0x10: accepted, no subscriber yet)


@dataclass
class Fleet:
    broker: Broker
    ca: TestCA
    rogue_ca: TestCA
    log: Path

    @property
    def port(self) -> int:
        return self.broker.port

    def creds(self, stem: str) -> dict[str, Path]:
        return {"ca": self.ca.path, "cert": self.ca.folder / f"{stem}.pem", "key": self.ca.folder / f"{stem}.key"}


def documented_config(ca: TestCA, work: Path, port: int) -> str:
    """docs/broker/mosquitto.conf with this test's files and port in place of the production ones."""
    acl = work / "edge.acl"
    acl.write_text((DOCS / "acl").read_text())
    (work / "data").mkdir()
    server_cert, server_key = ca.issue("localhost", server=True, stem="broker")
    ca.issue("pole-8", stem="pole-8-stolen")
    substitutions = {
        "/etc/mosquitto/edge.acl": acl,
        "/etc/mosquitto/certs/edge-ca.pem": ca.path,
        "/etc/mosquitto/certs/broker.pem": server_cert,
        "/etc/mosquitto/certs/broker.key": server_key,
        "/etc/mosquitto/certs/edge-ca.crl": ca.crl(["pole-8-stolen"]),
        "/var/lib/mosquitto/": f"{work / 'data'}/",
        "/var/log/mosquitto/mosquitto.log": work / "mosquitto.log",
        "listener 8883": f"listener {port} 127.0.0.1",
    }
    text = (DOCS / "mosquitto.conf").read_text()
    for production, here in substitutions.items():
        assert production in text, f"docs/broker/mosquitto.conf no longer has {production}: update this test with it"
        text = text.replace(production, str(here))
    settings = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "/etc/" not in settings and "/var/" not in settings, "a path in the documented configuration is not substituted"
    # As root, mosquitto would switch to a user who cannot read the test's files.
    return f"user {getpass.getuser()}\n{text}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("lockdown")
    ca = TestCA(work / "pki")
    for cn in ("pole-7", "pole-8", "alerts-console", "watchlist-publisher", "central-ingest-1", "central-ingest-2"):
        ca.issue(cn)
    ca.issue("pole-7", expired=True, stem="pole-7-expired")
    rogue = TestCA(work / "rogue", "rogue CA")
    rogue.issue("pole-7", stem="pole-7-rogue")
    port = free_port()
    broker = Broker(work, port=port, config=documented_config(ca, work, port))
    broker.start()
    try:
        yield Fleet(broker, ca, rogue, work / "mosquitto.log")
    finally:
        broker.stop()


class Client:
    """An MQTT v5 client with a certificate; records deliveries and the PUBACK reason code of each publish."""

    def __init__(
        self,
        fleet: Fleet,
        stem: str,
        topics: tuple[str, ...] = (),
        *,
        client_id: str | None = None,
        persistent: bool = False,
    ) -> None:
        """Connect with ``stem``'s certificate; ``persistent``: clean_start false and a session that outlives the connection."""
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.disconnects: list[str] = []
        self.session_present: bool | None = None
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        creds = fleet.creds(stem)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{stem}", protocol=mqtt.MQTTv5
        )
        ctx = ssl.create_default_context(cafile=str(creds["ca"]))
        ctx.load_cert_chain(str(creds["cert"]), str(creds["key"]))
        self.client.tls_set_context(ctx)
        self.client.reconnect_delay_set(min_delay=30, max_delay=30)  # a kicked client stays kicked while a test looks
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = lambda _c, _u, _f, reason, _p: self.disconnects.append(str(reason))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        connected = threading.Event()

        def on_connect(_c: Any, _u: Any, flags: Any, _r: Any, _p: Any) -> None:
            self.session_present = bool(flags.session_present)
            connected.set()

        self.client.on_connect = on_connect
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", fleet.port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert connected.wait(5), f"{stem} could not connect"
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(5)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._acked:
            self.pubacks[mid] = int(reason.value)
            self._acked.notify_all()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """Publish at QoS 1 and return the broker's PUBACK reason code (below 0x80 accepted, 0x87 not authorised)."""
        mid = self.client.publish(topic, payload, qos=1, retain=retain).mid
        with self._acked:
            assert self._acked.wait_for(lambda: mid in self.pubacks, timeout=5), f"no PUBACK for {topic}"
            return self.pubacks[mid]

    def topics_received(self, until: str, timeout: float = 5.0) -> list[str]:
        """Topics delivered so far, once ``until`` (published last) has arrived: the broker keeps order."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                topics = [t for t, _ in self.messages]
            if until in topics:
                return topics
            time.sleep(0.02)
        raise AssertionError(f"{until} never arrived; got {topics}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_documented_broker_has_one_tls_listener_and_no_anonymous_access() -> None:
    conf = [line.split() for line in (DOCS / "mosquitto.conf").read_text().splitlines() if line and not line.startswith("#")]
    settings = {words[0]: words[1:] for words in conf}
    assert [w for w in conf if w[0] == "listener"] == [["listener", "8883"]], "a single listener, the TLS one"
    assert settings["allow_anonymous"] == ["false"] and settings["require_certificate"] == ["true"]
    assert settings["use_identity_as_username"] == ["true"] and "crlfile" in settings and "acl_file" in settings
    assert settings["use_username_as_clientid"] == ["true"], "the client id is the certificate's CN too"
    assert "password_file" not in settings, "certificates are the only credentials"


def test_a_device_publishes_only_under_its_own_id(fleet: Fleet) -> None:
    console = Client(fleet, "alerts-console", ("edge/v1/+/hits", "edge/v1/+/status", "edge/v1/+/audit"))
    pole7 = Client(fleet, "pole-7")
    try:
        assert pole7.publish("edge/v1/pole-8/hits", b'{"forged": true}') == NOT_AUTHORIZED
        assert pole7.publish("edge/v1/pole-8/status", b'{"state": "online"}', retain=True) == NOT_AUTHORIZED
        assert pole7.publish("edge/v1/pole-8/audit", b'{"seq": 0}') == NOT_AUTHORIZED, "nor another device's audit head"
        assert pole7.publish("edge/v1/pole-7/audit", b'{"seq": 1}') < FAILURE
        assert pole7.publish("edge/v1/pole-7/hits", b'{"real": true}') < FAILURE
        topics = console.topics_received(until="edge/v1/pole-7/hits")
    finally:
        pole7.close()
        console.close()
    assert topics == ["edge/v1/pole-7/audit", "edge/v1/pole-7/hits"], "nothing published under pole-8's id reached the console"


def test_a_device_cannot_publish_a_watchlist(fleet: Fleet) -> None:
    pole8 = Client(fleet, "pole-8", ("edge/v1/watchlists/airport/#",))
    pole7 = Client(fleet, "pole-7")
    publisher = Client(fleet, "watchlist-publisher")
    try:
        assert pole7.publish("edge/v1/watchlists/airport/manifest", b"forged", retain=True) == NOT_AUTHORIZED
        assert pole7.publish("edge/v1/watchlists/airport/v9/chunks/0", b"forged", retain=True) == NOT_AUTHORIZED
        assert pole7.publish("edge/v1/watchlists/city/manifest", b"forged", retain=True) == NOT_AUTHORIZED
        assert publisher.publish("edge/v1/watchlists/airport/v1/chunks/0", b"genuine") < FAILURE
        received = pole8.topics_received(until="edge/v1/watchlists/airport/v1/chunks/0")
    finally:
        for c in (pole7, pole8, publisher):
            c.close()
    assert received == ["edge/v1/watchlists/airport/v1/chunks/0"]
    assert all(p == b"genuine" for _, p in pole8.messages), "the forged manifest and chunk never reached another device"


def test_a_device_reads_only_its_own_watchlist_and_no_other_device(fleet: Fleet) -> None:
    publisher = Client(fleet, "watchlist-publisher")
    try:
        assert publisher.publish("edge/v1/watchlists/city/manifest", b"city v1", retain=True) < FAILURE
        assert publisher.publish("edge/v1/watchlists/airport/manifest", b"airport v1", retain=True) < FAILURE
        # pole-8 follows airport, and asks for everything it can think of.
        pole8 = Client(fleet, "pole-8", ("edge/v1/watchlists/#", "edge/v1/+/hits", "edge/v1/+/status", "#"))
        pole7 = Client(fleet, "pole-7")
        try:
            assert pole7.publish("edge/v1/pole-7/hits", b"pole-7 hit") < FAILURE
            assert publisher.publish("edge/v1/watchlists/airport/v1/chunks/0", b"airport chunk") < FAILURE
            received = pole8.topics_received(until="edge/v1/watchlists/airport/v1/chunks/0")
        finally:
            pole8.close()
            pole7.close()
        # Clear the retained manifests for the other tests.
        publisher.publish("edge/v1/watchlists/city/manifest", b"", retain=True)
        publisher.publish("edge/v1/watchlists/airport/manifest", b"", retain=True)
    finally:
        publisher.close()
    # (Overlapping subscriptions deliver a message once per subscription, so compare the set of topics.)
    assert sorted(set(received)) == ["edge/v1/watchlists/airport/manifest", "edge/v1/watchlists/airport/v1/chunks/0"]


def test_a_device_certificate_cannot_resume_the_consoles_session(fleet: Fleet) -> None:
    # The console's persistent session, with the client id `edge alerts` uses by default; then it goes away.
    console = Client(fleet, "alerts-console", ("edge/v1/+/hits",), client_id="edge-alerts", persistent=True)
    console.close()
    pole8 = Client(fleet, "pole-8")
    pole7 = None
    try:
        assert pole8.publish("edge/v1/pole-8/hits", b"queued for the console") < FAILURE
        # pole-7, with its own certificate, asks for the console's session.
        pole7 = Client(fleet, "pole-7", client_id="edge-alerts", persistent=True)
        pole7.close()
        pole7 = None
        console = Client(fleet, "alerts-console", client_id="edge-alerts", persistent=True)  # no new subscription
        assert pole8.publish("edge/v1/pole-8/hits", b"after the console is back") < FAILURE
        console.topics_received(until="edge/v1/pole-8/hits")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(console.messages) < 2:
            time.sleep(0.02)
    finally:
        for c in (pole8, pole7, console):
            if c is not None:
                c.close()
    assert [p for _, p in console.messages] == [b"queued for the console", b"after the console is back"], (
        "the hit queued while the console was away is the console's, in order"
    )


def test_a_device_certificate_cannot_disconnect_another_device(fleet: Fleet) -> None:
    pole8 = Client(fleet, "pole-8", client_id="pole-8")
    pole7 = Client(fleet, "pole-7", client_id="pole-8")  # the broker answered pole-7's CONNECT: any takeover is done
    try:
        # A round trip on pole-8's connection, after pole-7's: a disconnected pole-8 would not get its PUBACK in time.
        assert pole8.publish("edge/v1/pole-8/status", b"still here") < FAILURE
        assert pole7.publish("edge/v1/pole-7/status", b"pole-7 under its own id") < FAILURE
        assert pole8.disconnects == [], "pole-8 was never disconnected by pole-7"
    finally:
        pole7.close()
        pole8.close()


def test_central_ingest_workers_share_the_device_topics_and_devices_cannot(fleet: Fleet) -> None:
    kinds = ("hits", "status", "watchlist/ack", "audit")
    shared = tuple(f"$share/ingest/edge/v1/+/{k}" for k in kinds)
    workers = [Client(fleet, f"central-ingest-{n}", shared, client_id=f"ingest-{n}") for n in (1, 2)]
    # pole-8 tries the same, and a group of its own; it may read only its watchlist (the sentinel below).
    snoop = Client(fleet, "pole-8", (*shared, "$share/snoop/edge/v1/+/hits", "edge/v1/+/hits", "edge/v1/watchlists/airport/#"))
    pole7 = Client(fleet, "pole-7")
    publisher = Client(fleet, "watchlist-publisher")
    try:
        for k in kinds:
            assert pole7.publish(f"edge/v1/pole-7/{k}", k.encode()) < FAILURE
        assert publisher.publish("edge/v1/watchlists/airport/sentinel", b"") < FAILURE
        snooped = snoop.topics_received(until="edge/v1/watchlists/airport/sentinel")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(len(w.messages) for w in workers) < len(kinds):
            time.sleep(0.02)
    finally:
        for c in (*workers, snoop, pole7, publisher):
            c.close()
    got = sorted(t for w in workers for t, _ in w.messages)
    assert got == sorted(f"edge/v1/pole-7/{k}" for k in kinds), "each device message once, to one of the workers"
    assert snooped == ["edge/v1/watchlists/airport/sentinel"], "a device reads no device topic, shared or not"


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("pole-7-expired", "certificate expired"),  # the device's own reading of its certificate: deterministic
        ("pole-7-rogue", "not signed by the CA in tls.ca"),  # a certificate from another CA, same CN (likewise)
        ("pole-8-stolen", "revoked"),  # only the broker's TLS alert says so, and the alert can be lost
        (None, "set [mqtt] tls.cert and tls.key"),  # TLS, but no certificate at all
    ],
    ids=["expired", "other CA", "revoked (CRL)", "no certificate"],
)
def test_the_broker_refuses_a_bad_client_certificate_and_says_why(fleet: Fleet, stem: str | None, expected: str) -> None:
    creds: dict[str, Path] = {"ca": fleet.ca.path}
    if stem == "pole-7-rogue":
        creds |= {"cert": fleet.rogue_ca.folder / f"{stem}.pem", "key": fleet.rogue_ca.folder / f"{stem}.key"}
    elif stem is not None:
        creds = fleet.creds(stem)
    opts = BrokerOptions(host="127.0.0.1", port=fleet.port, client_id=f"t-refused-{stem}", **creds)  # type: ignore[arg-type]
    refusals_logged = broker_refusals(fleet)
    with pytest.raises(BrokerError) as err:
        connect_blocking(make_client(opts), opts, timeout=5)
    message = str(err.value)
    assert message.startswith(f"MQTT broker 127.0.0.1:{fleet.port}: TLS handshake failed: "), message
    if stem == "pole-8-stolen":
        # The broker's TLS alert naming the revocation is lost when it closes the socket under our handshake (a
        # reset, or end of stream, first: more likely on a loaded machine). Then the device says what it can.
        assert client_certificate_problem(opts) is None, "valid dates, the right CA: only the CRL refuses it"
        assert "client certificate revoked" in message or HANDSHAKE_CLOSED in message, message
    else:
        assert expected in message
    # What is deterministic: the broker itself logged the refusal.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and broker_refusals(fleet) <= refusals_logged:
        time.sleep(0.05)
    assert broker_refusals(fleet) > refusals_logged, "the broker's log shows the refused handshake"


def broker_refusals(fleet: Fleet) -> int:
    """Refused TLS handshakes in the broker's log (Mosquitto 2.0.11 gives OpenSSL's reason, not the CRL's)."""
    text = fleet.log.read_text() if fleet.log.exists() else ""
    return sum(("certificate verify failed" in line or "did not return a certificate" in line) for line in text.splitlines())


def test_a_plain_text_connection_to_the_tls_port_is_refused(fleet: Fleet) -> None:
    opts = BrokerOptions(host="127.0.0.1", port=fleet.port, client_id="t-plain", username="pole-7")
    with pytest.raises(BrokerError, match=r"MQTT broker 127\.0\.0\.1:\d+: the broker closed the connection .*TLS-only port"):
        connect_blocking(make_client(opts), opts, timeout=5)


def test_the_daemon_reports_an_expired_certificate_and_keeps_its_hits(fleet: Fleet, kit: Path, tmp_path: Path) -> None:  # noqa: F811
    creds = fleet.creds("pole-7-expired")
    tls = f'tls = {{ ca = "{creds["ca"]}", cert = "{creds["cert"]}", key = "{creds["key"]}" }}\n'
    cfg = write_config(kit, tmp_path, fleet.port, extra="[daemon]\ndrain_timeout_s = 3\n")
    cfg.write_text(cfg.read_text().replace("status_interval_s = 1\n", "status_interval_s = 1\n" + tls))
    code = finish(start_daemon(cfg, tmp_path / "daemon.log"))
    log = (tmp_path / "daemon.log").read_text()
    assert code == 1, log
    assert f"MQTT broker 127.0.0.1:{fleet.port}: TLS handshake failed: client certificate expired" in log, log
    assert log.count("TLS handshake failed") <= 3, "said once per distinct reason, not at every retry"
    assert outbox_depth(tmp_path) == 1, "the hit waits in the outbox for a renewed certificate"
