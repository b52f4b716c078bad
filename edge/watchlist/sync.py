"""Watchlist sync over MQTT: assemble a signed bundle from retained messages, apply it, ack the outcome.

The manifest and the chunks arrive as separate retained messages in any order. A manifest
is checked at once (signature, name, version, expiry, embedding space) so a forged or
replayed one is refused without waiting for chunks; a good one waits (with a timeout) until
every chunk it lists has arrived, then the whole bundle is applied in one transaction through
the store, the matcher is rebuilt beside the old one and swapped in, and an ack is queued in
the outbox either way. Work runs on its own thread so the MQTT network thread never blocks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.db import connect
from edge.match import Matcher
from edge.publish import PREFIX, manifest_topic
from edge.watchlist.bundle import (
    Bundle,
    BundleError,
    ChunkMissingError,
    Manifest,
    ManifestFormatError,
    check_manifest,
    format_time,
    now_utc,
    verify_signature,
)
from edge.watchlist.store import ApplyResult, WatchlistStore

log = logging.getLogger(__name__)

MAX_BUFFERED_BYTES = 512 * 1024 * 1024


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
        self._pending: tuple[Manifest, bytes, bytes, float] | None = None
        self._chunks: dict[int, dict[int, bytes]] = {}  # version -> chunk number -> bytes
        self._buffered = 0
        self._seen_refused: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="watchlist-sync", daemon=True)

    def topics(self) -> list[str]:
        return [manifest_topic(self.name), f"{PREFIX}/watchlists/{self.name}/+/chunks/+"]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """Called on the MQTT thread: hand the message to the sync thread."""
        if topic.startswith(f"{PREFIX}/watchlists/{self.name}/"):
            self._queue.put((topic, payload))

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._check_timeout()
                continue
            if item is None:
                return
            try:
                self._process(*item)
            except Exception as exc:  # never let one message stop the sync
                self.last_error = f"watchlist sync: {exc}"
                log.exception("watchlist sync failed on %s", item[0])
            self._check_timeout()

    def _process(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if topic == manifest_topic(self.name):
            if payload:
                self._on_manifest(payload)
            return
        # edge/v1/watchlists/{name}/v{version}/chunks/{n}
        if len(parts) == 7 and parts[4].startswith("v") and parts[5] == "chunks" and payload:
            try:
                version, number = int(parts[4][1:]), int(parts[6])
            except ValueError:
                log.warning("ignored a chunk on a malformed topic %s", topic)
                return
            held = self.store.current(self.name)
            if held is not None and version <= held.version:
                return  # an old retained chunk
            if self._buffered + len(payload) > MAX_BUFFERED_BYTES:
                log.error("watchlist sync: chunk buffer full (%d bytes); dropped %s", self._buffered, topic)
                return
            slot = self._chunks.setdefault(version, {})
            if number not in slot:
                self._buffered += len(payload)
            slot[number] = payload
            self._try_apply()

    def _on_manifest(self, payload: bytes) -> None:
        held = self.store.current(self.name)
        try:
            doc = json.loads(payload)
            manifest_bytes = doc["manifest"].encode("utf-8")
            signature = base64.b64decode(doc["signature"], validate=True)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
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
        except BundleError as exc:
            self._refuse(manifest.version, held.version if held else None, exc, payload)
            return
        log.info("watchlist %s: version %d announced, waiting for %d chunks", self.name, manifest.version, len(manifest.chunks))
        self._pending = (manifest, manifest_bytes, signature, time.monotonic())
        self._try_apply()

    def _try_apply(self) -> None:
        if self._pending is None:
            return
        manifest, manifest_bytes, signature, _ = self._pending
        chunks = self._chunks.get(manifest.version, {})
        if any(i not in chunks for i in range(len(manifest.chunks))):
            return
        self._pending = None
        bundle = Bundle(manifest_bytes, signature, {i: chunks[i] for i in range(len(manifest.chunks))})
        self._finish(self.store.apply(bundle, self.keys, embedding_space=self.embedding_space, expected_name=self.name))

    def _check_timeout(self) -> None:
        if self._pending is None:
            return
        manifest, _manifest_bytes, _, started = self._pending
        if time.monotonic() - started < self.timeout_s:
            return
        self._pending = None
        have = len(self._chunks.get(manifest.version, {}))
        err = ChunkMissingError(f"only {have} of {len(manifest.chunks)} chunks arrived within {self.timeout_s:.0f}s")
        held = self.store.current(self.name)
        self._finish(self.store.refuse(self.name, manifest.version, held.version if held else None, err))

    def _refuse(self, version: int | None, previous: int | None, err: BundleError, payload: bytes) -> None:
        key = hashlib.sha256(payload).hexdigest()
        if key in self._seen_refused:
            return  # the same retained message again after a reconnect: refused once is enough
        self._seen_refused.add(key)
        self._finish(self.store.refuse(self.name, version, previous, err))

    def _finish(self, result: ApplyResult) -> None:
        # Free chunk buffers of this and older versions.
        if result.version is not None:
            for v in [v for v in self._chunks if v <= result.version]:
                self._buffered -= sum(len(c) for c in self._chunks.pop(v).values())
        if result.ok:
            self.last_sync = format_time(now_utc())
            matcher = Matcher.from_store(self.store, self.name)
            if matcher is not None:
                self.on_applied(matcher)
        else:
            self.last_error = f"watchlist {result.name} v{result.version} refused: {result.reason}"
        self.send_ack(
            {
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
        )
