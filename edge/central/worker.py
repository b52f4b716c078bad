"""An ingest worker: MQTT v5 (shared) subscriptions in, batched commits to the store, acks after commit.

paho runs with ``manual_ack``: a message is acknowledged to the broker only after the
transaction holding its row has committed. A worker killed mid-batch therefore loses nothing:
the broker redelivers what it had not acknowledged (to this worker's persistent session when it
comes back, or, with a shared subscription, possibly to another worker), and the store's
``ON CONFLICT DO NOTHING`` makes the redelivery harmless.

Retained statuses are not delivered on shared subscriptions (MQTT v5), so at each connect a
worker also subscribes to the status topic plainly for a few seconds to read the retained
snapshot (the last will of every device that went offline), then unsubscribes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.central.ingest import TOPICS, parse, subscriptions
from edge.central.store import IngestResult, Store, StoreError
from edge.errors import EdgeError
from edge.publish import BrokerOptions, make_client

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # hits published while a worker is down wait at the broker this long
RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may have in flight to us (Mosquitto's default is 20)
SNAPSHOT_S = 3.0  # how long the plain status subscription stays for the retained snapshot
STATUS_TOPIC = "edge/v1/+/status"


@dataclass(frozen=True)
class _Received:
    generation: int  # connection it arrived on: a mid is only meaningful on that connection
    mid: int
    qos: int
    topic: str
    payload: bytes
    retained: bool
    received_at: datetime


class BrokerConnectError(EdgeError):
    """The ingest worker could not connect to (or was refused by) the broker."""


class IngestWorker:
    """Subscribe, store in batches, acknowledge after commit. ``run`` blocks until ``stop`` is set."""

    def __init__(self, store: Store, opts: BrokerOptions, *, group: str | None, batch_size: int = 500, batch_wait_s: float = 0.05,
                 on_result: Callable[[str, IngestResult], None] | None = None) -> None:  # fmt: skip
        self.store = store
        self.opts = opts
        self.group = group
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.on_result = on_result
        self.inbox: queue.Queue[_Received] = queue.Queue()
        self.generation = 0
        self.connected = threading.Event()
        self.stored = 0
        self._snapshot_until = 0.0
        self.client = make_client(opts)
        self.client.manual_ack_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    # --------------------------------------------------------------- paho thread

    def _on_connect(self, client: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker %s:%s refused the connection: %s", self.opts.host, self.opts.port, reason)
            return
        self.generation += 1
        opts = SubscribeOptions(qos=1)
        client.subscribe([(t, opts) for t in subscriptions(self.group)])
        if self.group:
            client.subscribe(STATUS_TOPIC, qos=1)  # the retained snapshot (see the module docstring)
            self._snapshot_until = time.monotonic() + SNAPSHOT_S
        log.info("connected to %s:%s as %s, subscribed to %s", self.opts.host, self.opts.port, self.opts.client_id,
                 subscriptions(self.group))  # fmt: skip
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        log.warning("disconnected from %s:%s (%s); paho reconnects", self.opts.host, self.opts.port, reason)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self.inbox.put(
            _Received(self.generation, msg.mid, msg.qos, msg.topic, bytes(msg.payload), bool(msg.retain), datetime.now(UTC))
        )

    # --------------------------------------------------------------- writer (caller's thread)

    def connect(self, timeout: float = 10.0) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        try:
            self.client.connect(self.opts.host, self.opts.port, keepalive=30, clean_start=False, properties=props)
        except OSError as exc:
            raise BrokerConnectError(f"cannot reach broker {self.opts.host}:{self.opts.port}: {exc}") from exc
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.client.loop_stop()
            raise BrokerConnectError(f"could not connect to {self.opts.host}:{self.opts.port} within {timeout:.0f} s")

    def run(self, stop: threading.Event, deadline: float | None = None, tick: Callable[[], None] | None = None) -> None:
        """Store and acknowledge until ``stop`` is set (or the monotonic ``deadline``); ``tick`` runs between batches."""
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                batch = self._take()
                if batch:
                    self._commit(batch, stop)
                if self._snapshot_until and time.monotonic() > self._snapshot_until:
                    self._snapshot_until = 0.0
                    self.client.unsubscribe(STATUS_TOPIC)
                if tick is not None:
                    tick()
            # What is already here is committed and acknowledged before leaving; the rest is redelivered.
            while batch := self._take(wait=False):
                self._commit(batch, stop=None)
        finally:
            self.client.disconnect()
            self.client.loop_stop()

    def _take(self, wait: bool = True) -> list[_Received]:
        try:
            first = self.inbox.get(timeout=0.2) if wait else self.inbox.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        until = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size:
            left = until - time.monotonic()
            try:
                batch.append(self.inbox.get(timeout=left) if left > 0 else self.inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[_Received], stop: threading.Event | None) -> None:
        items = [parse(r.topic, r.payload, r.received_at, retained=r.retained) for r in batch]
        while True:
            try:
                results = self.store.write(items)
                break
            except StoreError as exc:  # the database is down or refusing: keep the batch, do not ack, retry
                log.error("store failed, retrying in 2 s (nothing acknowledged): %s", exc)
                if stop is not None and stop.wait(2):
                    return  # unacknowledged: the broker redelivers
                if stop is None:
                    return
        self.stored += len(batch)
        for r, result in zip(batch, results, strict=True):
            if r.qos > 0 and r.generation == self.generation:
                # An older connection's mid may name another message now: the broker redelivers those anyway.
                self.client.ack(r.mid, r.qos)
            if self.on_result is not None:
                self.on_result(r.topic, result)


__all__ = ["TOPICS", "BrokerConnectError", "IngestWorker"]
