"""Shared by the console tests: hit payloads, storing them, accounts and logging in."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.central.store import Message, Store
from edge.central.web import auth

PASSWORD = "correct horse battery staple"
ACCOUNTS = {"rita": "reviewer", "wanda": "watchlist-admin", "otto": "auditor", "ada": "admin"}


def hit_doc(entry: str = "case-A", device: str = "pole-1", camera: str = "gate", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": "edge.hit/1",
        "event_id": str(uuid.uuid4()),
        "device_id": device,
        "camera": camera,
        "track_id": f"{camera}-1-1",
        "first_seen": "2026-11-22T10:00:00.000Z",
        "last_seen": "2026-11-22T10:00:01.500Z",
        "entry_id": entry,
        "score": 0.71,
        "threshold": 0.574,
        "margin": 0.3,
        "frames_matched": 4,
        "face": {"bbox": [10.0, 20.0, 80.0, 80.0], "size_px": 80.0, "sharpness": 120.0, "yaw": 3.0, "detector_score": 0.9},
        "watchlist": {"name": "city", "version": 3, "sha256": "a" * 64},
        "models": {"detector": "b" * 64, "embedder": "c" * 64},
        "review": "candidate",
    }
    doc.update(extra)
    return doc


def store_hit(store: Store, doc: dict[str, Any]) -> None:
    """Store a hit as an ingest worker does after its checks (so tests can also store text the schema would refuse)."""
    store.write([Message("hit", doc["device_id"], doc, datetime.now(UTC))])


def add_accounts(store: Store, names: tuple[str, ...] = tuple(ACCOUNTS)) -> None:
    for name in names:  # argon2 is slow on purpose: tests make only the accounts they use
        auth.add_user(store.engine, name, ACCOUNTS[name], PASSWORD)


def login_token(html: str) -> str:
    m = re.search(r'name="login_token" value="([^"]+)"', html)
    assert m, "no login token on the page"
    return m.group(1)


def csrf_token(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def photos_dir(root: Path, faces: Path, entries: dict[str, list[str]]) -> Path:
    """Enrolment photos as the watchlist build reads them: one subfolder per entry_id."""
    import shutil

    out = root / "photos"
    for entry, files in entries.items():
        (out / entry).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(faces / f, out / entry / Path(f).name)
    return out
