"""The device's watchlist store: bundles applied atomically into SQLite, every outcome audited.

A bundle is verified in full (signature, version, expiry, embedding space, every chunk)
before anything is written. Its entries are then written under a key of their own in short
transactions (so a 1M-entry apply never holds the write lock long enough to block the
outbox), each batch read back and checked to hash as sent; then one small transaction
re-checks the held version and the version floor (edge.watchlist.state), points the
watchlist row at the new key and appends the audit record. Readers see either the old
watchlist or the new one, and a crash leaves the old one serving.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge import audit
from edge.db import immediate
from edge.watchlist.bundle import Bundle, check_version, verify_bundle
from edge.watchlist.chunks import Entry
from edge.watchlist.errors import BundleError
from edge.watchlist.manifest import DTYPES, Manifest, format_time, now_utc
from edge.watchlist.state import Revocation, WatchlistState, state_path_for

log = logging.getLogger(__name__)

STAGE_BATCH = 500  # entries per write transaction: the write lock is held for milliseconds, not for the whole bundle
STAGE_PREFIX = "~stage/"  # entries of a bundle being written live under "~stage/{name}/{unix time}/{random}"
STAGE_END = "~stage0"  # the first string after every STAGE_PREFIX key ("0" follows "/")
STALE_STAGE_S = 6 * 3600
MESSAGE_MAX = 400


def clip(text: str, limit: int = MESSAGE_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class WatchlistInfo:
    name: str
    version: int
    sha256: str
    issued_at: str
    expires_at: str
    embedding_space: str
    dimension: int
    dtype: str
    entry_count: int
    embedding_count: int
    key_id: str
    applied_at: str
    entries_key: str | None = None  # where its entries are stored (None: under the name, schema 2)

    @property
    def key(self) -> str:
        return self.entries_key or self.name


@dataclass(frozen=True)
class ApplyResult:
    ok: bool
    name: str
    version: int | None
    previous_version: int | None
    reason: str
    message: str
    entry_count: int = 0
    sha256: str | None = None
    kind: str = "bundle"  # or "revoke"
    revoke_sequence: int | None = None
    removed: int = 0


class NotStoredAsSentError(BundleError):
    reason = "not_stored_as_sent"


def entry_hash(e: Entry, blob: bytes) -> str:
    """The content hash of an entry, over values as SQLite gives them back.

    Canonical before hashing: SQLite stores ``-0.0`` as ``0.0`` (a chunk's ``-0``), so a threshold
    of negative zero must hash as zero or the stored entry would never verify again.
    """
    meta = e.meta()
    if "threshold" in meta:
        meta["threshold"] = float(meta["threshold"]) + 0.0  # -0.0 + 0.0 is +0.0; an int becomes the float stored
    text = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(text + b"\0" + blob).hexdigest()


@dataclass(frozen=True)
class Prepared:
    """A bundle that passed every check and waits to be written."""

    manifest: Manifest
    entries: list[Entry]
    previous: int | None


ENTRY_COLUMNS = "entry_id, label, case_ref, expires_at, threshold, n, embeddings, sha256"


class WatchlistStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.state = WatchlistState(state_path_for(conn))

    def current(self, name: str) -> WatchlistInfo | None:
        row = self.conn.execute(
            "SELECT name, version, sha256, issued_at, expires_at, embedding_space, dimension, dtype, entry_count, "
            "embedding_count, key_id, applied_at, entries_key FROM watchlists WHERE name = ?",
            (name,),
        ).fetchone()
        return WatchlistInfo(*row) if row else None

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM watchlists ORDER BY name")]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: several reads see the same committed watchlist."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def refuse(self, name: str, version: int | None, previous: int | None, err: BundleError) -> ApplyResult:
        """Record a refused bundle in the audit log (its own transaction) and say why."""
        message = clip(str(err))  # the text can quote attacker-chosen values: bounded before it is stored or sent
        audit.append(
            self.conn,
            "watchlist.refused",
            err.reason,
            watchlist=name,
            version=previous,
            detail={"offered_version": version, "from_version": previous, "message": message},
        )
        log.warning("watchlist %s: bundle version %s refused: %s", name, version, message)
        return ApplyResult(False, name, version, previous, err.reason, message)

    def apply(
        self,
        bundle: Bundle,
        keys: dict[str, Ed25519PublicKey],
        *,
        embedding_space: str | None,
        expected_name: str | None = None,
        now: datetime | None = None,
    ) -> ApplyResult:
        """Verify and apply ``bundle``; never raises for a bad bundle, returns (and audits) the refusal."""
        prepared = self.prepare(bundle, keys, embedding_space=embedding_space, expected_name=expected_name, now=now)
        return prepared if isinstance(prepared, ApplyResult) else self.commit(prepared)

    def prepare(
        self,
        bundle: Bundle,
        keys: dict[str, Ed25519PublicKey],
        *,
        embedding_space: str | None,
        expected_name: str | None = None,
        now: datetime | None = None,
    ) -> Prepared | ApplyResult:
        """Every check that needs no write: the bundle ready to commit, or the (audited) refusal."""
        try:
            offered = bundle.manifest()
            name, version = expected_name or offered.name, offered.version
        except BundleError as exc:
            name = expected_name or "?"
            held = self.current(name)
            return self.refuse(name, None, held.version if held else None, exc)
        held = self.current(name)
        previous = held.version if held else None
        try:
            manifest, entries = verify_bundle(
                bundle,
                keys,
                embedding_space=embedding_space,
                current_version=previous,
                expected_name=expected_name,
                now=now,
            )
            self.state.check_floor(name, manifest.version, manifest.sha256)
        except BundleError as exc:
            return self.refuse(name, version, previous, exc)
        return Prepared(manifest, entries, previous)

    def commit(self, prepared: Prepared) -> ApplyResult:
        """Write a prepared bundle under a key of its own in short transactions, then switch to it in one.

        The switch re-checks the held version and the floor under the write lock, so a concurrent
        applier of a newer version cannot be rolled back. Entries a revocation still withholds stay out.
        """
        m = prepared.manifest
        try:
            withheld = self.state.withheld(m.name, m.version, m.issued_at)
        except BundleError as exc:
            return self.refuse(m.name, m.version, prepared.previous, exc)
        kept = [e for e in prepared.entries if e.entry_id not in withheld]
        self._drop_stale_stages()
        stage = f"{STAGE_PREFIX}{m.name}/{int(time.time())}/{uuid.uuid4().hex}"
        try:
            self._stage(stage, m, kept)
            previous, old_key = self._switch(stage, m, kept, len(prepared.entries) - len(kept))
        except BundleError as exc:
            self._drop_key(stage)
            return self.refuse(m.name, m.version, prepared.previous, exc)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._drop_key(stage)
            raise
        self._drop_key(old_key)
        log.info("watchlist %s: applied version %d (%d entries, %d withheld by revocations), was %s",
                 m.name, m.version, len(kept), len(prepared.entries) - len(kept), previous)  # fmt: skip
        return ApplyResult(True, m.name, m.version, previous, "applied", "applied", len(kept), m.sha256)

    def _stage(self, stage: str, manifest: Manifest, entries: list[Entry]) -> None:
        """Insert the entries batch by batch; after each insert read them back and check they hash as sent."""
        dt = DTYPES[manifest.dtype]
        c = self.conn
        for start in range(0, len(entries), STAGE_BATCH):
            sent: dict[str, str] = {}
            rows = []
            for e in entries[start : start + STAGE_BATCH]:
                blob = e.embeddings.astype(dt).tobytes()
                digest = entry_hash(e, blob)
                sent[e.entry_id] = digest
                rows.append((stage, e.entry_id, e.label, e.case_ref, e.expires_at, e.threshold, len(e.embeddings), blob, digest))
            with immediate(c):
                before = c.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()[0]
                c.executemany(f"INSERT INTO entries (watchlist, {ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                stored = {}
                for wl, eid, label, case_ref, expires, thr, n, blob, digest in c.execute(
                    f"SELECT watchlist, {ENTRY_COLUMNS} FROM entries WHERE id > ? ORDER BY id", (before,)
                ):
                    again = entry_hash(Entry(eid, np.zeros((n, 0)), label, case_ref, expires, thr), blob)
                    stored[eid] = digest if wl == stage and again == digest else None
                if stored != sent:
                    bad = sorted(k for k in sent if stored.get(k) != sent[k])[:5]
                    raise NotStoredAsSentError(
                        f"entries were not stored as sent (first: {', '.join(bad) or 'extra rows'}); nothing applied"
                    )

    def _switch(self, stage: str, m: Manifest, kept: list[Entry], withheld: int) -> tuple[int | None, str]:
        c = self.conn
        with immediate(c):
            held = self.current(m.name)
            previous = held.version if held else None
            check_version(m.version, previous)
            self.state.check_floor(m.name, m.version, m.sha256)
            c.execute(
                "INSERT OR REPLACE INTO watchlists (name, version, sha256, issued_at, expires_at, embedding_space, "
                "dimension, dtype, entry_count, embedding_count, key_id, applied_at, entries_key) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    m.name,
                    m.version,
                    m.sha256,
                    m.issued_at,
                    m.expires_at,
                    m.embedding_space,
                    m.dimension,
                    m.dtype,
                    len(kept),
                    sum(len(e.embeddings) for e in kept),
                    m.key_id,
                    format_time(now_utc()),
                    stage,
                ),
            )
            audit.append(
                c,
                "watchlist.applied",
                "applied",
                watchlist=m.name,
                version=m.version,
                detail={"from_version": previous, "entries": len(kept), "withheld": withheld, "sha256": m.sha256},
            )
            # Last before COMMIT, under the write lock: if the commit then fails, the same bundle may still come back.
            self.state.raise_floor(m.name, m.version, m.sha256, m.issued_at)
        return previous, held.key if held else m.name

    def _drop_key(self, key: str) -> None:
        """Delete the rows under ``key`` (an old version, a failed stage) in short transactions."""
        c = self.conn
        while True:
            with immediate(c):
                if c.execute("SELECT 1 FROM watchlists WHERE COALESCE(entries_key, name) = ?", (key,)).fetchone():
                    return  # in use (never the case for an old or failed key; a guard against a wrong call)
                n = c.execute(
                    "DELETE FROM entries WHERE id IN (SELECT id FROM entries WHERE watchlist = ? LIMIT ?)",
                    (key, STAGE_BATCH * 4),
                ).rowcount
            if not n:
                return

    def _drop_stale_stages(self) -> None:
        """Stages left by an applier that died mid-way (a crash, a power cut) and are hours old."""
        cutoff = time.time() - STALE_STAGE_S
        for (key,) in self.conn.execute(
            "SELECT DISTINCT watchlist FROM entries WHERE watchlist >= ? AND watchlist < ?", (STAGE_PREFIX, STAGE_END)
        ).fetchall():
            try:
                started = int(key[len(STAGE_PREFIX) :].rsplit("/", 2)[1])
            except (ValueError, IndexError):
                started = 0
            if started < cutoff:
                self._drop_key(key)

    def revoke(
        self,
        name: str,
        entry_ids: list[str] | tuple[str, ...],
        *,
        reason: str = "revoked",
        revocation: Revocation | None = None,
        revoke_sha256: str = "",
    ) -> int:
        """Remove single entries at once; a signed ``revocation`` is checked against the held sequence and kept."""
        c = self.conn
        with immediate(c):
            if revocation is not None:  # under the write lock: two revokes cannot both pass the check
                self.state.check_revoke_sequence(name, revocation.sequence)
            held = self.current(name)
            key = held.key if held else name
            removed = 0
            for eid in entry_ids:
                removed += c.execute("DELETE FROM entries WHERE watchlist = ? AND entry_id = ?", (key, eid)).rowcount
            detail: dict[str, Any] = {"entry_ids": list(entry_ids), "removed": removed}
            if revocation is not None:
                detail.update(sequence=revocation.sequence, for_version=revocation.version, issued_at=revocation.issued_at)
            audit.append(c, "watchlist.revoked", reason, watchlist=name, version=held.version if held else None, detail=detail)
            c.execute("UPDATE watchlists SET entry_count = entry_count - ? WHERE name = ?", (removed, name))
            if revocation is not None:
                self.state.add_revocation(name, revocation, revoke_sha256)
        return removed

    def damaged_entries(self, limit: int = 20) -> tuple[int, list[str]]:
        """Entries (of every watchlist) whose stored content no longer matches its hash: (count, first few ids).

        SQLite's own integrity check does not see a flipped byte inside a stored value; this does.
        """
        bad: list[str] = []
        count = 0
        for eid, label, case_ref, expires, thr, n, blob, digest in self.conn.execute(
            "SELECT entry_id, label, case_ref, expires_at, threshold, n, embeddings, sha256 FROM entries"
        ):
            e = Entry(eid, np.zeros((n, 0)), label, case_ref, expires, thr)
            if entry_hash(e, blob) != digest:
                count += 1
                if len(bad) < limit:
                    bad.append(str(eid))
        return count, bad

    def embedding_total(self, name: str) -> int:
        info = self.current(name)
        if info is None:
            return 0
        row = self.conn.execute("SELECT COALESCE(SUM(n), 0) FROM entries WHERE watchlist = ?", (info.key,)).fetchone()
        return int(row[0])

    def iter_entries(
        self, name: str, batch: int = 4096
    ) -> Iterator[list[tuple[str, str | None, str | None, float | None, np.ndarray]]]:
        """Batches of (entry_id, label, expires_at, threshold, embeddings float32 (n, d)), checked against their hashes."""
        info = self.current(name)
        if info is None:
            return
        dt = DTYPES[info.dtype]
        cur = self.conn.execute(
            "SELECT entry_id, label, case_ref, expires_at, threshold, n, embeddings, sha256 FROM entries "
            "WHERE watchlist = ? ORDER BY id",
            (info.key,),
        )
        while rows := cur.fetchmany(batch):
            out = []
            for eid, label, case_ref, expires, thr, n, blob, digest in rows:
                e = Entry(eid, np.zeros((n, 0)), label, case_ref, expires, thr)
                if entry_hash(e, blob) != digest:
                    log.error("watchlist %s: entry %s fails its content hash; skipped", name, eid)
                    continue
                vec = np.frombuffer(blob, dtype=dt).reshape(n, info.dimension).astype(np.float32)
                out.append((eid, label, expires, thr, vec))
            yield out
