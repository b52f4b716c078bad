"""The device's watchlist store: bundles applied atomically into SQLite, every outcome audited.

A bundle is verified in full (signature, version, expiry, embedding space, every chunk)
before anything is written; then the old entries are replaced by the new ones, the
watchlist row updated and the audit record appended in one transaction, so readers see
either the old watchlist or the new one and a crash leaves the old one serving.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge import audit
from edge.db import immediate
from edge.watchlist.bundle import (
    DTYPES,
    Bundle,
    BundleError,
    Entry,
    Manifest,
    format_time,
    now_utc,
    verify_bundle,
)

log = logging.getLogger(__name__)


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


def entry_hash(e: Entry, blob: bytes) -> str:
    meta = json.dumps(e.meta(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(meta + b"\0" + blob).hexdigest()


class WatchlistStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def current(self, name: str) -> WatchlistInfo | None:
        row = self.conn.execute(
            "SELECT name, version, sha256, issued_at, expires_at, embedding_space, dimension, dtype, entry_count, "
            "embedding_count, key_id, applied_at FROM watchlists WHERE name = ?",
            (name,),
        ).fetchone()
        return WatchlistInfo(*row) if row else None

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM watchlists ORDER BY name")]

    def refuse(self, name: str, version: int | None, previous: int | None, err: BundleError) -> ApplyResult:
        """Record a refused bundle in the audit log (its own transaction) and say why."""
        audit.append(
            self.conn,
            "watchlist.refused",
            err.reason,
            watchlist=name,
            version=previous,
            detail={"offered_version": version, "from_version": previous, "message": str(err)},
        )
        log.warning("watchlist %s: bundle version %s refused: %s", name, version, err)
        return ApplyResult(False, name, version, previous, err.reason, str(err))

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
        except BundleError as exc:
            return self.refuse(name, version, previous, exc)
        self._replace(manifest, entries, previous)
        log.info("watchlist %s: applied version %d (%d entries), was %s", name, version, len(entries), previous)
        return ApplyResult(True, name, version, previous, "applied", "applied", len(entries), manifest.sha256)

    def _replace(self, manifest: Manifest, entries: list[Entry], previous: int | None) -> None:
        dt = DTYPES[manifest.dtype]
        rows = []
        for e in entries:
            blob = e.embeddings.astype(dt).tobytes()
            rows.append(
                (
                    manifest.name,
                    e.entry_id,
                    e.label,
                    e.case_ref,
                    e.expires_at,
                    e.threshold,
                    len(e.embeddings),
                    blob,
                    entry_hash(e, blob),
                )
            )
        c = self.conn
        with immediate(c):
            c.execute("DELETE FROM entries WHERE watchlist = ?", (manifest.name,))
            c.executemany(
                "INSERT INTO entries (watchlist, entry_id, label, case_ref, expires_at, threshold, n, embeddings, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            c.execute(
                "INSERT OR REPLACE INTO watchlists (name, version, sha256, issued_at, expires_at, embedding_space, "
                "dimension, dtype, entry_count, embedding_count, key_id, applied_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    manifest.name,
                    manifest.version,
                    manifest.sha256,
                    manifest.issued_at,
                    manifest.expires_at,
                    manifest.embedding_space,
                    manifest.dimension,
                    manifest.dtype,
                    manifest.entry_count,
                    manifest.embedding_count,
                    manifest.key_id,
                    format_time(now_utc()),
                ),
            )
            audit.append(
                c,
                "watchlist.applied",
                "applied",
                watchlist=manifest.name,
                version=manifest.version,
                detail={"from_version": previous, "entries": len(entries), "sha256": manifest.sha256},
            )

    def revoke(self, name: str, entry_ids: list[str], *, reason: str = "revoked") -> int:
        """Remove single entries at once (signed revocations are checked by the caller)."""
        c = self.conn
        with immediate(c):
            removed = 0
            for eid in entry_ids:
                removed += c.execute("DELETE FROM entries WHERE watchlist = ? AND entry_id = ?", (name, eid)).rowcount
            held = self.current(name)
            audit.append(
                c,
                "watchlist.revoked",
                reason,
                watchlist=name,
                version=held.version if held else None,
                detail={"entry_ids": entry_ids, "removed": removed},
            )
            c.execute("UPDATE watchlists SET entry_count = entry_count - ? WHERE name = ?", (removed, name))
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
        row = self.conn.execute("SELECT COALESCE(SUM(n), 0) FROM entries WHERE watchlist = ?", (name,)).fetchone()
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
            (name,),
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
