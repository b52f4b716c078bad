"""MQTT: topic names of the v1 contract and a client factory (MQTT v5, TLS, credentials).

MQTT v5 because Mosquitto acknowledges publishes its ACL denies, and only a v5 PUBACK
reason code tells the sender it failed.
"""

from __future__ import annotations

import logging
import ssl
import threading
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
