"""Watchlist sync over MQTT: assemble a signed bundle from retained messages, apply it, ack the outcome.

The manifest and the chunks arrive as separate retained messages in any order. A manifest
is checked at once (signature, name, version, expiry, embedding space) so a forged or
replayed one is refused without waiting for chunks; a good one waits (with a timeout) until
every chunk it lists has arrived, then the whole bundle is applied through the store, the
matcher is rebuilt beside the old one and swapped in, and an ack is queued in the outbox
either way. A signed revocation on the ``revoke`` topic removes entries at once (see
edge.watchlist.revoke). Work runs on its own thread so the MQTT network thread never blocks.

Everything a sender controls is bounded: the bytes queued and buffered (an overwritten chunk
counts once), chunks of a version whose manifest never comes (dropped after the assembly
timeout), the memory of refused messages, and the text of refusals. A database error (locked
by a long write elsewhere, an I/O error) does not lose the message: it is retried.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import queue
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.db import connect
from edge.errors import InputFormatError
from edge.match import Matcher
from edge.publish import PREFIX, manifest_topic, revoke_topic
from edge.untrusted import load_json
from edge.watchlist.bundle import Bundle, check_manifest, verify_signature
from edge.watchlist.errors import BundleError, ChunkMissingError, ManifestFormatError
from edge.watchlist.manifest import Manifest, format_time, now_utc
from edge.watchlist.revoke import apply_revoke, from_message, parse_revoke, refuse_revoke
from edge.watchlist.store import ApplyResult, WatchlistStore

log = logging.getLogger(__name__)

MAX_BUFFERED_BYTES = 512 * 1024 * 1024  # chunks buffered, and separately bytes queued for the sync thread
CHUNK_OVERHEAD = 256  # bytes charged per buffered chunk on top of its payload, so many tiny chunks are bounded too
MAX_SEEN_REFUSED = 256
MAX_RETRY = 64  # messages held for another try after a database error
RETRY_S = 1.0


class WatchlistSync:
    def __init__(
        self,
        db_path: Any,
        *,
        name: str,
        keys: dict[str, Ed25519PublicKey],
        embedding_space: str,
        timeout_s: float,
        on_applied: Callable[[Matcher], None],
        send_ack: Callable[[dict[str, Any]], None],
    ) -> None:
        self.name = name
        self.keys = keys
        self.embedding_space = embedding_space
        self.timeout_s = timeout_s
        self.on_applied = on_applied
        self.send_ack = send_ack
        self.store = WatchlistStore(connect(db_path))
        self.last_sync: str | None = None
        self.last_error: str | None = None
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._queued = 0  # payload bytes waiting in the queue
        self._queued_lock = threading.Lock()
        self._pending: tuple[Manifest, bytes, bytes, float] | None = None
        self._chunks: dict[int, dict[int, bytes]] = {}  # version -> chunk number -> bytes
        self._chunk_seen: dict[int, float] = {}  # version -> monotonic time of its latest chunk
        self._buffered = 0
        self._seen_refused: OrderedDict[str, None] = OrderedDict()
        self._retry: deque[tuple[str, bytes]] = deque()
        self._next_retry = 0.0
        self._thread = threading.Thread(target=self._run, name="watchlist-sync", daemon=True)

    def topics(self) -> list[str]:
        return [manifest_topic(self.name), f"{PREFIX}/watchlists/{self.name}/+/chunks/+", revoke_topic(self.name)]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """Called on the MQTT thread: hand the message to the sync thread (dropped when too much is waiting)."""
        if not topic.startswith(f"{PREFIX}/watchlists/{self.name}/"):
            return
        with self._queued_lock:
            if self._queued + len(payload) > MAX_BUFFERED_BYTES:
                log.error("watchlist sync: %d bytes already wait to be processed; dropped %s", self._queued, topic[:200])
                return
            self._queued += len(payload)
        self._queue.put((topic, payload))

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._tick()
                continue
            if item is None:
                return
            with self._queued_lock:
                self._queued -= len(item[1])
            self.process_safely(*item)
            self._tick()

    def process_safely(self, topic: str, payload: bytes) -> None:
        """Process one message; a database error keeps it for another try, nothing else escapes."""
        try:
            self._process(topic, payload)
        except sqlite3.Error as exc:
            self.last_error = f"watchlist sync: database error, will retry: {exc}"
            log.error("watchlist sync: database error on %s (%s); retrying in %.0fs", topic[:200], exc, RETRY_S)
            if len(self._retry) >= MAX_RETRY:
                dropped = self._retry.popleft()
                log.error("watchlist sync: too many messages to retry; dropped %s (retained, it comes back)", dropped[0][:200])
            self._retry.append((topic, payload))
            self._next_retry = time.monotonic() + RETRY_S
        except Exception as exc:  # never let one message stop the sync
            self.last_error = f"watchlist sync: {exc}"
            log.exception("watchlist sync failed on %s", topic[:200])

    def _tick(self) -> None:
        """Timeouts, expired chunk buffers, and retries after a database error."""
        now = time.monotonic()
        if self._retry and now >= self._next_retry:
            items, self._retry = list(self._retry), deque()
            for item in items:
                self.process_safely(*item)
        for v in [v for v, seen in self._chunk_seen.items() if now - seen > self.timeout_s]:
            if self._pending is None or self._pending[0].version != v:
                log.warning("watchlist sync: chunks of version %d came without a manifest; dropped after %.0fs", v,
                            self.timeout_s)  # fmt: skip
                self._drop_chunks(v)
        try:
            self._check_timeout()
        except sqlite3.Error as exc:
            self.last_error = f"watchlist sync: database error, will retry: {exc}"
            log.error("watchlist sync: database error (%s); retrying", exc)

    def _drop_chunks(self, version: int) -> None:
        self._buffered -= sum(len(c) + CHUNK_OVERHEAD for c in self._chunks.pop(version, {}).values())
        self._chunk_seen.pop(version, None)

    def _process(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if topic == manifest_topic(self.name):
            if payload:
                self._on_manifest(payload)
            return
        if topic == revoke_topic(self.name):
            if payload:
                self._on_revoke(payload)
            return
        # edge/v1/watchlists/{name}/v{version}/chunks/{n}
        if len(parts) == 7 and parts[4].startswith("v") and parts[5] == "chunks" and payload:
            digits_v, digits_n = parts[4][1:], parts[6]
            if (
                not (digits_v.isascii() and digits_v.isdigit() and digits_n.isascii() and digits_n.isdigit())
                or max(len(digits_v), len(digits_n)) > 18
            ):
                log.warning("ignored a chunk on a malformed topic %s", topic[:200])
                return
            version, number = int(digits_v), int(digits_n)
            held = self.store.current(self.name)
            if held is not None and version <= held.version:
                return  # an old retained chunk
            slot = self._chunks.setdefault(version, {})
            old = slot.get(number)
            grow = len(payload) + CHUNK_OVERHEAD - (len(old) + CHUNK_OVERHEAD if old is not None else 0)
            if self._buffered + grow > MAX_BUFFERED_BYTES:
                log.error("watchlist sync: chunk buffer full (%d bytes); dropped %s", self._buffered, topic[:200])
                if not slot:
                    del self._chunks[version]
                return
            slot[number] = payload
            self._buffered += grow  # a chunk sent again replaces the old bytes: counted once
            self._chunk_seen[version] = time.monotonic()
            self._try_apply()

    def _on_manifest(self, payload: bytes) -> None:
        held = self.store.current(self.name)
        try:
            doc = load_json(payload)  # not json.loads: deep nesting raises RecursionError there
            manifest_bytes = doc["manifest"].encode("utf-8")
            signature = base64.b64decode(doc["signature"], validate=True)
        except (InputFormatError, ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            self._refuse(
                None, held.version if held else None, ManifestFormatError(f"unreadable manifest message ({exc})"), payload
            )
            return
        try:
            manifest = verify_signature(manifest_bytes, signature, self.keys)
        except BundleError as exc:
            self._refuse(None, held.version if held else None, exc, payload)
            return
        if held is not None and manifest.sha256 == held.sha256:
            return  # the retained manifest of what we already hold
        try:
            check_manifest(
                manifest,
                embedding_space=self.embedding_space,
                current_version=held.version if held else None,
                expected_name=self.name,
            )
            self.store.state.check_floor(self.name, manifest.version, manifest.sha256)  # survives a rebuilt database
        except BundleError as exc:
            self._refuse(manifest.version, held.version if held else None, exc, payload)
            return
        log.info("watchlist %s: version %d announced, waiting for %d chunks", self.name, manifest.version, len(manifest.chunks))
        self._pending = (manifest, manifest_bytes, signature, time.monotonic())
        self._try_apply()

    def _on_revoke(self, payload: bytes) -> None:
        if self._seen(payload):
            return  # refused once is enough
        try:
            data, signature = from_message(payload)
            if self.store.state.revoke_sha256(self.name) == parse_revoke(data).sha256:
                return  # the retained revocation already applied, seen again after a reconnect
        except BundleError as exc:
            result = refuse_revoke(self.store, self.name, exc)
        else:
            result = apply_revoke(self.store, data, signature, self.keys, expected_name=self.name)
        if not result.ok:
            self._remember(payload)
        self._finish(result)

    def _try_apply(self) -> None:
        if self._pending is None:
            return
        manifest, manifest_bytes, signature, _ = self._pending
        chunks = self._chunks.get(manifest.version, {})
        if any(i not in chunks for i in range(len(manifest.chunks))):
            return
        bundle = Bundle(manifest_bytes, signature, {i: chunks[i] for i in range(len(manifest.chunks))})
        # A database error propagates with the bundle still pending: the next try (or the timeout) takes it.
        result = self.store.apply(bundle, self.keys, embedding_space=self.embedding_space, expected_name=self.name)
        self._pending = None
        self._finish(result)

    def _check_timeout(self) -> None:
        if self._pending is None:
            return
        manifest, _manifest_bytes, _, started = self._pending
        if time.monotonic() - started < self.timeout_s:
            return
        have = len(self._chunks.get(manifest.version, {}))
        err = ChunkMissingError(f"only {have} of {len(manifest.chunks)} chunks arrived within {self.timeout_s:.0f}s")
        held = self.store.current(self.name)
        result = self.store.refuse(self.name, manifest.version, held.version if held else None, err)
        self._pending = None  # only once the refusal is recorded: a database error tries again on the next tick
        self._finish(result)

    def _seen(self, payload: bytes) -> bool:
        """Was this exact message refused already (the same retained message after a reconnect)? Bounded."""
        key = hashlib.sha256(payload).hexdigest()
        if key in self._seen_refused:
            self._seen_refused.move_to_end(key)
            return True
        return False

    def _remember(self, payload: bytes) -> None:
        self._seen_refused[hashlib.sha256(payload).hexdigest()] = None
        while len(self._seen_refused) > MAX_SEEN_REFUSED:
            self._seen_refused.popitem(last=False)

    def _refuse(self, version: int | None, previous: int | None, err: BundleError, payload: bytes) -> None:
        if self._seen(payload):
            return  # refused once is enough
        result = self.store.refuse(self.name, version, previous, err)
        self._remember(payload)  # only once the refusal is recorded: a database error retries it
        self._finish(result)

    def _finish(self, result: ApplyResult) -> None:
        # Free chunk buffers of this and older versions.
        if result.version is not None and result.kind == "bundle":
            for v in [v for v in self._chunks if v <= result.version]:
                self._drop_chunks(v)
        if result.ok:
            self.last_sync = format_time(now_utc())
            matcher = Matcher.from_store(self.store, self.name)
            if matcher is not None:
                self.on_applied(matcher)
        else:
            self.last_error = f"watchlist {result.name} {result.kind} v{result.version} refused: {result.reason}"
        ack: dict[str, Any] = {
            "schema": "edge.watchlist-ack/1",
            "watchlist": result.name,
            "version": result.version,
            "previous_version": result.previous_version,
            "outcome": "applied" if result.ok else "refused",
            "reason": result.reason,
            "message": result.message,
            "entry_count": result.entry_count,
            "sha256": result.sha256,
            "ts": format_time(now_utc()),
        }
        if result.kind == "revoke":
            ack.update(kind="revoke", revoke_sequence=result.revoke_sequence, removed=result.removed)
        self.send_ack(ack)
