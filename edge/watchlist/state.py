"""Rollback protection that survives a rebuilt database: the version floor and the revocations.

The database can be moved aside and rebuilt empty (edge.dbcheck); if the held version lived only
there, an older, still unexpired signed bundle would be accepted afterwards. So the highest version
ever committed (with its sha256, so the same bundle can be applied again after a rebuild), the
latest revoke sequence and the revocations still in force live in a small JSON file beside the
database, which the rebuild does not touch. It is written atomically (temporary file, fsync,
rename, fsync of the folder) by an applier that holds the database's write lock, so two appliers
cannot interleave. The floor only goes up. An unreadable state file stops every apply (fail closed)
rather than silently forgetting the floor; the message says which file to inspect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.watchlist.errors import BundleError, RollbackError
from edge.watchlist.manifest import parse_time

log = logging.getLogger(__name__)

SCHEMA = "edge.watchlist-state/1"
MAX_REVOCATIONS = 64  # revocations kept per watchlist (each superseded once a newer bundle includes it)


class StateFileError(BundleError):
    reason = "state_unreadable"


class StateWriteError(BundleError):
    reason = "state_unwritable"


class RevokeReplayError(BundleError):
    reason = "replayed_revoke"


class RevokeOlderError(BundleError):
    reason = "older_revoke"


@dataclass(frozen=True)
class Revocation:
    sequence: int
    version: int  # the bundle version it was issued against
    issued_at: str
    entry_ids: tuple[str, ...]

    def covers(self, version: int, issued_at: str) -> bool:
        """Does this revocation apply to a bundle of ``version`` issued at ``issued_at``?

        A bundle issued before the revocation (or of a version not after the one it names) still
        lists what was revoked: those entries stay out. A bundle issued later supersedes it.
        """
        if version <= self.version:
            return True
        return parse_time(issued_at, "bundle issued_at") < parse_time(self.issued_at, "revoke issued_at")


def state_path_for(conn: sqlite3.Connection) -> Path | None:
    """The state file beside the connection's database file (None for an in-memory database)."""
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return Path(file).with_name(Path(file).name + ".watchlist-state.json") if file else None
    return None


class WatchlistState:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, Any] = {}  # in-memory databases (tests, tools)

    def _load(self) -> dict[str, Any]:
        if self.path is None:
            return self._memory
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateFileError(f"watchlist state file {self.path} is unreadable ({exc}); no bundle is applied until it is "
                                 "repaired or deliberately removed") from exc  # fmt: skip
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("watchlists"), dict):
            raise StateFileError(f"watchlist state file {self.path} has an unknown layout; no bundle is applied until it is "
                                 "repaired or deliberately removed")  # fmt: skip
        return dict(doc["watchlists"])

    def _save(self, watchlists: dict[str, Any]) -> None:
        if self.path is None:
            self._memory = watchlists
            return
        try:
            self._write(json.dumps({"schema": SCHEMA, "watchlists": watchlists}, sort_keys=True, indent=1).encode())
        except OSError as exc:  # a full disk: refused (and rolled back), never applied without its floor
            raise StateWriteError(f"cannot write the watchlist state file {self.path} ({exc.strerror or exc})") from exc

    def _write(self, data: bytes) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _entry(self, name: str) -> dict[str, Any]:
        entry = self._load().get(name)
        return entry if isinstance(entry, dict) else {}

    # --- version floor ---

    def floor(self, name: str) -> tuple[int, str] | None:
        """(highest version ever committed, its manifest sha256), or None."""
        e = self._entry(name)
        v, sha = e.get("version"), e.get("sha256")
        return (v, sha) if isinstance(v, int) and isinstance(sha, str) else None

    def check_floor(self, name: str, version: int, sha256: str) -> None:
        """Refuse a bundle below the floor, or another bundle at the floor's version (the same one may come back)."""
        floor = self.floor(name)
        if floor is None:
            return
        held, held_sha = floor
        if version < held:
            raise RollbackError(f"version {version} is older than version {held} this device has held (rollback)")
        if version == held and sha256 != held_sha:
            raise RollbackError(f"version {version} differs from the version {held} this device has held (rollback)")

    def raise_floor(self, name: str, version: int, sha256: str, issued_at: str) -> None:
        """Call while holding the database's write lock, before committing the bundle."""
        doc = self._load()
        e = dict(doc.get(name) or {})
        if isinstance(e.get("version"), int) and e["version"] >= version:
            return
        e.update(version=version, sha256=sha256)
        # Revocations a bundle issued after them supersedes are no longer needed.
        e["revocations"] = [r for r in e.get("revocations", []) if _revocation(r).covers(version, issued_at)]
        doc[name] = e
        self._save(doc)

    # --- revocations ---

    def revoke_sequence(self, name: str) -> int | None:
        seq = self._entry(name).get("revoke_sequence")
        return seq if isinstance(seq, int) else None

    def revoke_sha256(self, name: str) -> str | None:
        sha = self._entry(name).get("revoke_sha256")
        return sha if isinstance(sha, str) else None

    def check_revoke_sequence(self, name: str, sequence: int) -> None:
        held = self.revoke_sequence(name)
        if held is not None and sequence == held:
            raise RevokeReplayError(f"revoke sequence {sequence} is the one already applied (replay)")
        if held is not None and sequence < held:
            raise RevokeOlderError(f"revoke sequence {sequence} is older than the applied {held}")

    def revocations(self, name: str) -> list[Revocation]:
        return [_revocation(r) for r in self._entry(name).get("revocations", [])]

    def add_revocation(self, name: str, rev: Revocation, sha256: str) -> None:
        """Call while holding the database's write lock, before committing the removal."""
        doc = self._load()
        e = dict(doc.get(name) or {})
        e["revoke_sequence"] = rev.sequence
        e["revoke_sha256"] = sha256
        kept = [*e.get("revocations", []), {**rev.__dict__, "entry_ids": list(rev.entry_ids)}]
        e["revocations"] = kept[-MAX_REVOCATIONS:]
        doc[name] = e
        self._save(doc)

    def withheld(self, name: str, version: int, issued_at: str) -> set[str]:
        """Entry ids a bundle of ``version`` issued at ``issued_at`` must not bring back."""
        out: set[str] = set()
        for r in self.revocations(name):
            if r.covers(version, issued_at):
                out.update(r.entry_ids)
        return out


def _revocation(r: dict[str, Any]) -> Revocation:
    return Revocation(int(r["sequence"]), int(r["version"]), str(r["issued_at"]), tuple(r["entry_ids"]))
