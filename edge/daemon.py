"""``edge run``: capture → detect → quality → align → embed → match → track → outbox → MQTT.

The pipeline runs on the main thread; capture, MQTT and watchlist sync have their own.
Hits are committed to the outbox before anything is sent. Only hits leave the process:
faces that match no entry are dropped after matching, without a log line, a file or a byte
on the network.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections import deque
from typing import Any

import cv2

from edge import __version__, audit
from edge.analyze import FaceAnalyser
from edge.audit_anchor import AuditAnchor
from edge.capture import CapturedFrame, SourceRunner
from edge.config import Settings
from edge.db import connect
from edge.dbcheck import check_and_recover
from edge.errors import ConfigError, FrameError, ImageDecodeError
from edge.health import cpu_temperature_c, sd_notify, watchdog_interval_s
from edge.match import Matcher, MatcherHolder
from edge.outbox import Outbox, StorageError, StorageFullError
from edge.pipeline import FramePipeline, FrameResult
from edge.progress import Progress
from edge.publish import BrokerOptions, ConsoleSink, Publisher, ack_topic, hits_topic
from edge.track import Decision, Tracker
from edge.watchlist.keys import trusted_keys
from edge.watchlist.manifest import format_time
from edge.watchlist.store import WatchlistStore
from edge.watchlist.sync import WatchlistSync

log = logging.getLogger(__name__)

EVENT_NAMESPACE = uuid.UUID("5f0c6d1e-6b1e-4e59-9a57-3f4f1b2f7a10")
# Messages held in memory while the disk is full (lost only if the process dies before it frees up).
UNSTORED_MAX = 10_000
STORAGE_RETRY_S = 1.0


def iso(ts: float) -> str:
    from datetime import UTC, datetime

    return format_time(datetime.fromtimestamp(ts, UTC))


class Daemon:
    def __init__(self, settings: Settings, *, json_hits: bool = False) -> None:
        if not settings.sources:
            raise ConfigError("no [[sources]] configured: nothing to watch")
        self.s = settings
        self.started = time.monotonic()  # uptime is an interval: immune to wall-clock jumps
        self.stop_event = threading.Event()
        self.analyser = FaceAnalyser.from_settings(settings.recognition)
        self.embedder_spec = self.analyser.embedder
        # Hashes of the models actually loaded, for every hit and heartbeat.
        manifest = self.analyser.manifest
        self.model_hashes = {
            "detector": manifest.get(settings.recognition.detector.model, "detector").sha256,
            "embedder": manifest.get(settings.recognition.embedder, "embedder").sha256,
        }
        # Before anything opens the database: a damaged file is moved aside and rebuilt (see edge.dbcheck).
        self.db_report = check_and_recover(settings.database)
        self.outbox = Outbox(settings.database, max_rows=settings.outbox.max_rows, max_age_s=settings.outbox.max_age_days * 86400)
        self.store = WatchlistStore(connect(settings.database))  # the main thread's own connection
        self.anchor = AuditAnchor(self.store.conn, settings.device_id)  # verifies the audit chain; publishes its head
        self.holder = MatcherHolder(Matcher.from_store(self.store, settings.watchlist.name))
        self.tracker = Tracker(settings.tracking)
        self._voted_with = self.holder.matcher  # the matcher the tracker's votes came from
        self.wake = threading.Condition()
        self.runners = [SourceRunner(src, settings.daemon.queue_frames, self.wake) for src in settings.sources]
        self.fingerprints = {r.camera: r.fingerprint() for r in self.runners if not r.live}
        self.report = Progress(self.runners, json_hits=json_hits)
        regions = {src.camera: src.regions for src in settings.sources if src.regions}
        self.pipeline = FramePipeline(
            self.analyser, self.tracker, self.holder, settings.pipeline, regions=regions, keep_crops=settings.privacy.thumbnails
        )
        self.frame_times: deque[float] = deque(maxlen=100)
        self.last_progress = time.monotonic()
        self.last_error: str | None = None if self.db_report.ok else self.db_report.summary()
        self.hits = 0
        self.unstored: deque[tuple[str, str, bytes, dict[str, Any]]] = deque()
        self.unstored_lost = 0
        self.storage_full_since: float | None = None  # since when messages are held (disk full or another storage error)
        self.storage_state = "ok"
        self._storage_lock = threading.Lock()
        self._next_storage_retry = 0.0
        keys = trusted_keys(settings.watchlist.public_keys) if settings.watchlist.public_keys else {}
        if not keys:
            log.warning("watchlist.public_keys is empty: no watchlist bundle can be applied")
        self.sync = WatchlistSync(
            settings.database,
            name=settings.watchlist.name,
            keys=keys,
            embedding_space=self.embedder_spec.embedding_space,
            timeout_s=settings.watchlist.assemble_timeout_s,
            on_applied=self.holder.swap,
            send_ack=self._queue_ack,
        )
        m = settings.mqtt
        if m.enabled:
            tls = m.tls if m.tls is not False else None
            opts = BrokerOptions(
                host=m.host,
                port=m.port,
                ca=tls.ca if tls else None,
                cert=tls.cert if tls else None,
                key=tls.key if tls else None,
                username=m.username or settings.device_id,
                password=m.password(),
                client_id=settings.device_id,
                keepalive=m.keepalive_s,
            )
            self.publisher: Publisher | ConsoleSink = Publisher(
                opts,
                device_id=settings.device_id,
                outbox=self.outbox,
                subscriptions=self.sync.topics(),
                on_message=self.sync.handle,
                max_inflight=m.max_inflight,
            )
        else:
            self.publisher = ConsoleSink(self.outbox)

    # --- messages ---

    def _queue_ack(self, ack: dict[str, Any]) -> None:
        ack["device_id"] = self.s.device_id
        self._store(str(uuid.uuid4()), ack_topic(self.s.device_id), json.dumps(ack).encode(), {"kind": "ack"})
        self.publisher.kick()

    # --- storage (disk full) ---

    def _store(self, event_id: str, topic: str, payload: bytes, kw: dict[str, Any]) -> bool:
        """Commit to the outbox; while the disk is full, hold the message in memory (bounded) and retry."""
        with self._storage_lock:
            if not self.unstored:
                try:
                    return self.outbox.add(event_id, topic, payload, **kw)
                except StorageError as exc:  # disk full, a locked database, an I/O error: held, not lost
                    self._storage_full(exc)
            if len(self.unstored) >= UNSTORED_MAX:
                self.unstored.popleft()
                self.unstored_lost += 1
            self.unstored.append((event_id, topic, payload, kw))
            return True

    def _storage_full(self, exc: StorageError) -> None:
        self.storage_state = "full" if isinstance(exc, StorageFullError) else "error"
        if not isinstance(exc, StorageFullError):
            self.last_error = f"storage error: the outbox cannot be written ({exc.__cause__ or exc}); messages held in memory"
            if self.storage_full_since is None:
                self.storage_full_since = time.monotonic()
                log.error("STORAGE ERROR: %s; new messages are held in memory (up to %d) and retried", exc, UNSTORED_MAX)
            return
        if self.storage_full_since is None:
            self.storage_full_since = time.monotonic()
            log.error("DISK FULL: %s; new messages are held in memory (up to %d) until space frees up", exc, UNSTORED_MAX)
        self.last_error = f"disk full: the outbox cannot grow ({exc.__cause__ or exc})"

    def retry_unstored(self) -> None:
        """Move messages held during a disk-full episode into the outbox, oldest first, as soon as it has room."""
        now = time.monotonic()
        if not self.unstored or now < self._next_storage_retry:
            return
        self._next_storage_retry = now + STORAGE_RETRY_S
        with self._storage_lock:
            while self.unstored:
                event_id, topic, payload, kw = self.unstored[0]
                try:
                    self.outbox.add(event_id, topic, payload, **kw)
                except StorageError:
                    return
                self.unstored.popleft()
            assert self.storage_full_since is not None
            held_s = time.monotonic() - self.storage_full_since
            log.warning("disk space back after %.0fs: held messages stored (%d lost to the memory bound)", held_s,
                        self.unstored_lost)  # fmt: skip
            self.outbox.note(
                "storage.full", "recovered", {"seconds": round(held_s, 1), "lost_over_memory_bound": self.unstored_lost}
            )
            self.storage_full_since = None
            if self.last_error and self.last_error.startswith(("disk full", "storage error")):
                self.last_error = None
        self.publisher.kick()

    def _event_id(self, d: Decision) -> str:
        fp = self.fingerprints.get(d.track.camera)
        if fp is None:
            return str(uuid.uuid4())
        # A recording replayed after a crash yields the same ids, so its hits are not sent twice.
        return str(uuid.uuid5(EVENT_NAMESPACE, f"{self.s.device_id}/{d.track.camera}/{fp}/{d.track.track_id}/{d.entry_id}"))

    def _hit_payload(self, d: Decision, matcher: Matcher, event_id: str) -> dict[str, Any]:
        b = d.best
        assert b.match is not None
        ref = b.match.watchlist or matcher.ref  # the version that scored it, not the one serving now
        q = b.quality
        payload: dict[str, Any] = {
            "schema": "edge.hit/1",
            "event_id": event_id,
            "device_id": self.s.device_id,
            "camera": d.track.camera,
            "track_id": d.track.track_id,
            "first_seen": iso(d.track.first.wall),
            "last_seen": iso(d.track.last.wall),
            "entry_id": d.entry_id,
            "score": round(b.match.score, 4),
            "threshold": round(b.threshold, 4),
            "margin": None if b.match.margin is None else round(b.match.margin, 4),
            "frames_matched": d.frames_matched,
            "face": {
                "bbox": [round(float(v), 1) for v in b.box],
                "size_px": round(q.size_px, 1),
                "sharpness": round(q.sharpness, 1),
                "yaw": round(q.yaw, 1),
                "detector_score": round(q.detector_score, 3),
            },
            "watchlist": {"name": ref.name, "version": ref.version, "sha256": ref.sha256},
            "models": dict(self.model_hashes),
            "review": "candidate",
        }
        if b.match.label:
            payload["label"] = b.match.label
        if self.s.privacy.thumbnails and b.crop is not None:
            px = self.s.privacy.thumbnail_px
            crop = cv2.resize(b.crop, (px, px), interpolation=cv2.INTER_AREA)
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                payload["thumbnail_jpeg_b64"] = base64.b64encode(jpeg.tobytes()).decode("ascii")
        return payload

    def _emit(self, decisions: list[Decision]) -> None:
        matcher = self.holder.matcher
        if matcher is None:
            return
        if matcher is not self._voted_with:  # a new version: votes of a replaced one for entries it dropped go
            self._voted_with = matcher
            self.tracker.drop_votes(lambda m: m.watchlist is not None and m.watchlist.version != matcher.version
                                    and not matcher.contains(m.entry_id))  # fmt: skip
            decisions = [d for d in decisions if d.best.match is None or matcher.contains(d.entry_id)]
        for d in decisions:
            if d.cooldown:
                self.report.cooldown(d.track.track_id, d.entry_id, self.s.tracking.realert_s)
                continue
            event_id = self._event_id(d)
            payload = self._hit_payload(d, matcher, event_id)
            stored = self._store(
                event_id,
                hits_topic(self.s.device_id),
                json.dumps(payload, separators=(",", ":")).encode(),
                {
                    "kind": "hit",
                    "audit_detail": {"entry_id": d.entry_id, "camera": d.track.camera, "score": payload["score"]},
                    "watchlist": payload["watchlist"]["name"],
                    "version": payload["watchlist"]["version"],
                },
            )
            if stored:
                self.hits += 1
                self.report.hit(payload)
            d.best.crop = None
        if decisions:
            self.publisher.kick()

    # --- pipeline ---

    def _frame_done(self, r: FrameResult) -> None:
        if isinstance(r.error, (FrameError, ImageDecodeError)):  # a JPEG frame found corrupt when first decoded
            next(x for x in self.runners if x.camera == r.item.camera).bad_frame(r.item.index, r.error)
            return
        if r.error is not None:  # one bad frame must not stop the device
            self.last_error = f"frame {r.item.index} of {r.item.camera}: {r.error}"
            log.error("pipeline error on %s frame %d", r.item.camera, r.item.index, exc_info=r.error)
            return
        self._emit(r.decisions)
        self.frame_times.append(time.monotonic())
        self.report.frame(r.item.camera, faces=r.faces, gated=r.gated, tracks=self.tracker.started[r.item.camera])

    def _next_frame(self, timeout: float) -> CapturedFrame | None:
        deadline = time.monotonic() + timeout
        with self.wake:
            while True:
                for r in self.runners:
                    if r.frames:
                        item = r.frames.popleft()
                        self.wake.notify_all()
                        return item
                left = deadline - time.monotonic()
                if left <= 0 or self.stop_event.is_set():
                    return None
                self.wake.wait(timeout=left)

    def _all_ended(self) -> bool:
        return all(r.ended.is_set() and not r.frames for r in self.runners) and all(r.settings.stop_at_end for r in self.runners)

    # --- status ---

    def status(self, state: str = "online") -> dict[str, Any]:
        now = time.monotonic()
        recent = [t for t in self.frame_times if now - t < 10]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        ob = self.outbox.stats()
        m = self.holder.matcher
        info = self.store.current(self.s.watchlist.name)
        errors = [e for e in (self.last_error, self.publisher.last_error, self.sync.last_error) if e]
        full = self.storage_full_since is not None
        policy = self.analyser.threshold.for_entries(m.entry_count) if m else None
        return {
            "schema": "edge.status/1",
            "device_id": self.s.device_id,
            "state": "degraded" if state == "online" and full else state,
            "ts": iso(time.time()),
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "fps": round(fps, 2),
            "latency_ms": self.pipeline.latency_ms(),
            "outbox": {"depth": ob.depth, "oldest_age_s": ob.oldest_age_s, "dropped": ob.dropped, "failed": ob.failed_publishes},
            "hits": self.hits,
            "watchlist": {
                "name": self.s.watchlist.name,
                "version": m.version if m else None,
                "sha256": m.sha256 if m else None,
                "entries": m.entry_count if m else 0,
                "expires_at": info.expires_at if info else None,
                "last_sync": self.sync.last_sync or (info.applied_at if info else None),
                # The base threshold faces are matched at for this list's size, and whether it keeps recognition.max_fpir.
                "threshold": round(policy.base, 4) if policy else None,
                "holds_max_fpir": policy.holds(m.entry_count) if m and policy and policy.pair_far is not None else None,
            },
            "models": dict(self.model_hashes),
            "accelerator": self.analyser.detector.model.accelerator,  # type: ignore[attr-defined]
            "cpu_temp_c": cpu_temperature_c(),
            "cameras": [r.status() for r in self.runners],
            "storage": {
                "state": self.storage_state if full else "ok",
                "held_in_memory": len(self.unstored),
                "lost_over_memory_bound": self.unstored_lost,
            },
            "database": self.db_report.as_status(),
            "clock": {"jumps": self.outbox.clock_jumps, "last_jump_s": self.outbox.last_clock_jump_s},
            "audit": self.anchor.status(),
            "last_error": errors[0] if errors else None,
        }

    # --- run ---

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.sync.start()
        self.publisher.start()
        for r in self.runners:
            r.start()
        self.report.start()
        wd = watchdog_interval_s()
        threading.Thread(target=self._watchdog, args=(wd,), name="watchdog", daemon=True).start()
        sd_notify("READY=1")
        log.info("edge %s running: device %s, %d sources, watchlist %s", __version__, self.s.device_id, len(self.runners),
                 f"v{self.holder.matcher.version}" if self.holder.matcher else "none yet")  # fmt: skip
        self._wait_for_watchlist()
        next_status = 0.0
        next_purge = time.monotonic() + 60
        code = 0
        while not self.stop_event.is_set():
            item = self._next_frame(timeout=0.5 if self.pipeline.idle() else 0.02)
            self.last_progress = time.monotonic()
            if item is not None:
                self.pipeline.submit(item)
            for result in self.pipeline.finished(wait_s=0.0 if item is not None else 0.05):
                self._frame_done(result)
            if item is None and self.pipeline.idle():
                for r in self.runners:
                    if r.live:
                        self._emit(self.tracker.update(r.camera, time.monotonic(), []))
                if self._all_ended():
                    code = self._finish_recordings()
                    break
            self.retry_unstored()
            self.report.tick()
            now = time.monotonic()
            if now >= next_status:
                self.publisher.publish_status(self.status())
                next_status = now + self.s.mqtt.status_interval_s
                self.anchor.tick(self.publisher.connected.is_set(), self.publisher.publish_now)
            if now >= next_purge:
                next_purge = now + (3600 if self._purge() else 60)
        self._shutdown()
        return code

    def _wait_for_watchlist(self) -> None:
        """A recording processed before the first watchlist arrives would be wasted: give the retained bundle time."""
        if self.holder.matcher is not None or not self.s.mqtt.enabled or all(r.live for r in self.runners):
            return
        log.info("no watchlist applied yet: waiting up to %.0fs for one over MQTT", self.s.daemon.watchlist_wait_s)
        deadline = time.monotonic() + self.s.daemon.watchlist_wait_s
        while self.holder.matcher is None and time.monotonic() < deadline and not self.stop_event.is_set():
            self.last_progress = time.monotonic()
            self.stop_event.wait(0.2)
        if self.holder.matcher is None:
            log.warning("no watchlist after %.0fs: processing without one (nothing can match)", self.s.daemon.watchlist_wait_s)

    def _finish_recordings(self) -> int:
        self._emit(self.tracker.finish())
        deadline = time.monotonic() + self.s.daemon.drain_timeout_s
        while self.unstored and time.monotonic() < deadline and not self.stop_event.is_set():
            self.retry_unstored()  # a full disk: delivered rows free space for the held ones
            self.stop_event.wait(0.2)
        log.info("all recordings ended; waiting up to %.0fs for the broker to take the last hits", self.s.daemon.drain_timeout_s)
        if self.unstored:
            log.error("disk still full: %d messages held in memory are lost when the daemon stops", len(self.unstored))
            return 1
        return self._drain(deadline)

    def _drain(self, deadline: float) -> int:
        """Wait for the broker to take what is in the outbox; a signal ends the wait (the outbox keeps the rest)."""
        patience = min(deadline, time.monotonic() + 10.0)  # a broker that is up answers well within this
        while not self.stop_event.is_set():
            if self.publisher.wait_drained(0.5) and self.publisher.connected.is_set():
                log.info("every hit delivered (%d this run)", self.hits)
                return 0
            if self.outbox.stats().depth == 0 and not self.publisher.connected.is_set() and time.monotonic() >= patience:
                # Nothing to send, but no status went out and no watchlist could arrive: say so, do not wait.
                log.error("the MQTT broker %s:%d was not reachable (%s); %d hits this run", self.s.mqtt.host,
                          self.s.mqtt.port, self.publisher.last_error or "no connection", self.hits)  # fmt: skip
                return 1
            if time.monotonic() >= deadline:
                log.error("%d messages still undelivered; they stay in the outbox for the next start", self.outbox.stats().depth)
                return 1
        return 0

    def _purge(self) -> bool:
        """Retention: False when the database was busy or failing (the loop tries again in a minute).

        A purge is housekeeping: a long writer elsewhere (``edge watchlist apply``) or an I/O error
        must not stop recognition, so a storage error is logged and the purge retried later.
        """
        keep_s = self.s.privacy.retention_days * 86400
        try:
            self.outbox.check_clock()  # a clock jump is recorded before the purge reads the chain's times
            n = audit.purge(self.store.conn, now=time.time(), keep_s=keep_s)
            self.outbox.purge_events(keep_s)
        except sqlite3.Error as exc:
            log.warning("retention: purge postponed, the database is busy or failing: %s", exc)
            return False
        if n:
            log.info("retention: purged the oldest %d audit records (older than %.0f days)", n, self.s.privacy.retention_days)
        return True

    def _shutdown(self) -> None:
        sd_notify("STOPPING=1")
        for r in self.runners:
            r.stop()
        for result in self.pipeline.drain():
            self._frame_done(result)
        self.pipeline.stop()
        if self.stop_event.is_set():
            self._emit(self.tracker.finish())
            if self.publisher.connected.is_set():  # a moment for hits just made; never long (systemd and Ctrl-C wait)
                self.publisher.wait_drained(1.0)
        self.sync.stop()
        self.publisher.stop(offline_payload=self.status("offline"))
        depth = self.outbox.stats().depth
        self.report.close(outbox_depth=depth)
        log.info("stopped; %d messages wait in the outbox%s", depth, " (sent at the next start)" if depth else "")

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stop_event.is_set():  # asked twice: stop at once; everything undelivered is already in the outbox
            log.warning("%s again: stopping now; undelivered messages stay in the outbox", name)
            logging.shutdown()
            os._exit(128 + signum)
        log.info("%s: stopping (undelivered messages stay in the outbox for the next start)", name)
        self.stop_event.set()

    def _watchdog(self, interval: float | None) -> None:
        if interval is None:
            return
        while not self.stop_event.wait(interval):
            if time.monotonic() - self.last_progress < self.s.daemon.watchdog_stall_s:
                sd_notify("WATCHDOG=1")
            else:
                log.error("pipeline stalled for %.0fs; withholding the watchdog ping", time.monotonic() - self.last_progress)
