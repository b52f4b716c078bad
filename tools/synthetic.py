"""Synthetic, correctly signed watchlist bundles and hit payloads, for transport and fault tests.

The embeddings are random unit vectors: these bundles exercise signing, chunking, sync and
storage, never recognition accuracy.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.watchlist.bundle import Bundle, build_unsigned, sign_manifest
from edge.watchlist.chunks import Entry

SPACE = "synthetic-space"
DIMENSION = 192


def random_entries(n: int, *, dimension: int = DIMENSION, seed: int = 0) -> list[Entry]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [Entry(f"e{i:07d}", vectors[i : i + 1]) for i in range(n)]


def signed_bundle(
    entries: list[Entry], key: Ed25519PrivateKey, *, name: str = "fleet", version: int = 1, space: str = SPACE
) -> Bundle:
    manifest, chunks = build_unsigned(
        entries, name=name, version=version, embedding_space=space, expires_at=datetime.now(UTC) + timedelta(days=30)
    )
    manifest_bytes, signature = sign_manifest(manifest, key)
    return Bundle(manifest_bytes, signature, dict(enumerate(chunks)))


def hit_payload(device_id: str, *, event_id: str | None = None, first_seen: str, entry_id: str = "e0000001") -> dict[str, object]:
    """A hit as the daemon sends it (schema edge.hit/1), for load generators."""
    return {
        "schema": "edge.hit/1",
        "event_id": event_id or str(uuid.uuid4()),
        "device_id": device_id,
        "camera": "gate",
        "track_id": "gate-1-1",
        "first_seen": first_seen,
        "last_seen": first_seen,
        "entry_id": entry_id,
        "score": 0.71,
        "threshold": 0.5,
        "margin": 0.2,
        "frames_matched": 3,
        "face": {"bbox": [10.0, 10.0, 80.0, 80.0], "size_px": 80.0, "sharpness": 120.0, "yaw": 3.0, "detector_score": 0.93},
        "watchlist": {"name": "fleet", "version": 1, "sha256": "0" * 64},
        "models": {"detector": "1" * 64, "embedder": "2" * 64},
        "review": "candidate",
    }
