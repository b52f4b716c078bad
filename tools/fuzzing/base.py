"""What every fuzz target shares: its counters, its interface and the signed bundle the seeds come from."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.errors import EdgeError
from edge.watchlist.bundle import build_unsigned, sign_manifest
from edge.watchlist.chunks import Entry, decode_chunk, encode_chunk
from edge.watchlist.keys import key_id
from edge.watchlist.manifest import format_time

# --- targets ------------------------------------------------------------------------------------


@dataclass
class Stats:
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: int = 0
    hangs: int = 0
    slowest_ms: float = 0.0  # CPU time of the slowest input
    slowest_wall_ms: float = 0.0
    slowest_input_hex: str = ""
    rejections: dict[str, int] = field(default_factory=dict)  # exception class -> count, to show the inputs go deep


class Target:
    """One parser: ``generate`` makes an input, ``run`` feeds it and returns True if accepted."""

    name = ""
    expected: tuple[type[BaseException], ...] = (EdgeError,)

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        self.rng = rng
        self.work = work
        self.kit = kit
        self.reasons: dict[str, int] = {}  # rejections a target counts itself (ingest returns them, does not raise)

    def generate(self) -> Any:
        raise NotImplementedError

    def run(self, case: Any) -> bool:
        raise NotImplementedError

    def describe(self, case: Any) -> bytes:
        """The input as bytes for the report."""
        return case if isinstance(case, bytes) else repr(case).encode("utf-8", "surrogatepass")

    def close(self) -> None:
        pass


def _keys_of(*docs: Any) -> list[str]:
    keys: set[str] = set()
    stack = list(docs)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            keys.update(str(k) for k in node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(keys)


class BundleKit:
    """A real signed bundle (two chunks, float16) plus the keys that made it."""

    def __init__(self, rng: random.Random) -> None:
        np_rng = np.random.default_rng(rng.randrange(2**32))
        entries = []
        for i in range(6):
            emb = np_rng.standard_normal((1 + i % 3, 32)).astype(np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            expires = format_time(datetime.now(UTC) + timedelta(days=30)) if i % 2 else None
            entries.append(
                Entry(f"case-{i:04d}", emb, label="L" if i == 0 else None, expires_at=expires, threshold=0.6 if i == 1 else None)
            )
        self.key = Ed25519PrivateKey.generate()
        self.other_key = Ed25519PrivateKey.generate()
        self.keys = {key_id(self.key.public_key()): self.key.public_key()}
        self.space = "space-" + "a" * 58
        manifest, self.chunks = build_unsigned(
            entries, name="city", version=5, embedding_space=self.space,
            expires_at=datetime.now(UTC) + timedelta(days=60), max_chunk_bytes=400,
        )  # fmt: skip
        self.manifest_bytes, self.signature = sign_manifest(manifest, self.key)
        self.manifest_doc = json.loads(self.manifest_bytes)
        self.chunks32 = [encode_chunk(decode_chunk(c, "float16", 32), "float32") for c in self.chunks]
