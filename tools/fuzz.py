#!/usr/bin/env python3
"""Fuzz every parser of outside input with generated inputs; every input must parse or raise the project's own error.

python tools/fuzz.py --inputs 1000000 --json fuzz.json [--seed N] [--target NAME ...]
python tools/fuzz.py --quick                      # 20,000 inputs, for release checks at reduced scale

Targets: the watchlist manifest parser, the chunk parser, verification of a bundle folder on disk,
``edge alerts`` ingest of MQTT payloads (topic + bytes), the TOML configuration loader (file and
``EDGE_*`` variables), the model manifest parser, and the device's watchlist-sync MQTT handler
(manifest, chunk and revoke topics, on a real SQLite file: refusals are audited and acked). Inputs start from real seeds (a signed
bundle, hit/status/ack payloads that the store accepts, a full config, models/manifest.json) and
are mutated structurally (JSON values, types, lengths, re-signed and re-hashed so they get past
the signature and hash checks) and byte-wise, with some purely random bytes.

A crash is any exception that is not an ``EdgeError`` (for ``edge alerts`` ingest: any
exception, since it must keep malformed messages aside instead of raising); it is recorded with
the input (hex) and the traceback. An input that takes more than ``--hang-s`` (default 1 s) of CPU
time is a hang; one still running after ``--abort-s`` of wall time is interrupted and is a hang too.
Exit status 1 on any crash or hang.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import models as edge_models
from edge.central.ingest import ingest
from edge.central.store import Store
from edge.config import load_settings
from edge.errors import EdgeError
from edge.watchlist import bundle as wb

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("fuzz")

# Share of the total inputs per target: the cheap parsers get more, the ones that touch files or pydantic fewer.
WEIGHTS = {
    "watchlist-manifest": 0.22,
    "watchlist-chunk": 0.22,
    "bundle-folder": 0.10,
    "alerts-ingest": 0.20,
    "config-toml": 0.08,
    "model-manifest": 0.18,
    "watchlist-sync": 0.10,
}
MAX_CRASH_RECORDS = 20  # per distinct (target, exception, place); all are counted
HEX_LIMIT = 16384  # bytes of an input kept in the report (the crash folder keeps the whole input)


class Hang(BaseException):
    """Raised by the alarm inside a stuck input (a BaseException, so parsers cannot swallow it)."""


# --- mutation -----------------------------------------------------------------------------------

INTERESTING_INTS = [0, 1, -1, 2, 7, 8, 63, 64, 65, 255, 256, 4096, 4097, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**53 + 1,
                    2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]  # fmt: skip
INTERESTING_FLOATS = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 1.0000001, 1e-320, 1e308, -1e308, math.inf, -math.inf, math.nan]
INTERESTING_STRS = [
    "", " ", "a", "A" * 65, "x" * 5000, "\x00", "\n", "é", "日本", "\U0001f600", "\ud800", "\udfff", "../../etc/passwd",
    "/", "0", "-1", "1e999", "true", "null", "NaN", "2026-11-22T10:00:00.000Z", "2026-11-22T10:00:00", "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999Z", "0001-01-01T00:00:00+00:00", "2026-02-30T00:00:00Z", "2026-11-22T10:00:00+25:00", "Z",
    "edge/v1/#", "+", "chunks/00000.bin", "chunks/00001.bin", "float16", "float32", "float64", "a" * 64, "0" * 64,
]  # fmt: skip
RAW_TOKENS = [b"1" * 5000, b"[" * 3000, b"{" * 2000, b'{"a":' * 1500, b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-0",
              b'"\\ud800"', b'"\\udc00\\ud800"', b"\xff\xfe", b"\xef\xbb\xbf", b"\x00", b"\\", b'"', b"null", b"true",
              b"[]", b"{}", b",", b":", b"]", b"}", b"\x80", b"\xc3\x28", b"\xf4\x90\x80\x80", b"\xed\xa0\x80"]  # fmt: skip


class Mutator:
    """Byte-level and JSON-structure mutations, driven by one seeded ``random.Random``."""

    def __init__(self, rng: random.Random, vocabulary: list[str]) -> None:
        self.rng = rng
        self.vocabulary = vocabulary  # keys seen in the seeds, so added keys are often real ones

    # bytes

    def random_bytes(self, max_len: int = 512) -> bytes:
        n = self.rng.choice([0, 1, 2, 8, 64, self.rng.randrange(max_len + 1)])
        return self.rng.randbytes(n)

    def mutate_bytes(self, data: bytes, others: list[bytes] | None = None) -> bytes:
        buf = bytearray(data)
        for _ in range(self.rng.choice([1, 1, 1, 2, 3, 5, 8])):
            op = self.rng.randrange(10)
            pos = self.rng.randrange(len(buf) + 1)
            if op == 0 and buf:  # flip a bit
                i = min(pos, len(buf) - 1)
                buf[i] ^= 1 << self.rng.randrange(8)
            elif op == 1 and buf:  # set a byte
                buf[min(pos, len(buf) - 1)] = self.rng.randrange(256)
            elif op == 2:  # insert random bytes
                buf[pos:pos] = self.rng.randbytes(self.rng.choice([1, 2, 4, 16]))
            elif op == 3 and buf:  # delete a range
                end = min(len(buf), pos + self.rng.choice([1, 2, 8, 64, 1024]))
                del buf[pos:end]
            elif op == 4 and buf:  # duplicate a range
                end = min(len(buf), pos + self.rng.choice([1, 8, 64, 512]))
                buf[pos:pos] = buf[pos:end]
            elif op == 5:  # truncate
                del buf[pos:]
            elif op == 6:  # insert a token known to upset parsers
                buf[pos:pos] = self.rng.choice(RAW_TOKENS)
            elif op == 7 and others:  # splice with another input
                other = self.rng.choice(others)
                cut = self.rng.randrange(len(other) + 1)
                buf = buf[:pos] + bytearray(other[cut:])
            elif op == 8 and buf:  # overwrite with an interesting number in ASCII
                text = str(self.rng.choice(INTERESTING_INTS + INTERESTING_FLOATS)).encode()
                buf[pos : pos + len(text)] = text
            elif op == 9 and len(buf) > 1:  # swap two bytes
                j = self.rng.randrange(len(buf))
                i = min(pos, len(buf) - 1)
                buf[i], buf[j] = buf[j], buf[i]
        return bytes(buf)

    # JSON values

    def value(self, depth: int = 0) -> Any:
        r = self.rng.randrange(12)
        if r == 0:
            return None
        if r == 1:
            return self.rng.random() < 0.5
        if r in (2, 3):
            return self.rng.choice(INTERESTING_INTS) if self.rng.random() < 0.7 else self.rng.randrange(-1000, 1000)
        if r in (4, 5):
            return self.rng.choice(INTERESTING_FLOATS) if self.rng.random() < 0.7 else self.rng.uniform(-2, 2)
        if r in (6, 7, 8):
            if self.rng.random() < 0.7:
                return self.rng.choice(INTERESTING_STRS)
            return "".join(chr(self.rng.randrange(0x20, 0x2FF)) for _ in range(self.rng.randrange(12)))
        if r == 9 and depth < 3:
            return [self.value(depth + 1) for _ in range(self.rng.choice([0, 1, 2, 5]))]
        if r == 10 and depth < 3:
            return {self.key(): self.value(depth + 1) for _ in range(self.rng.choice([0, 1, 3]))}
        return self.rng.choice([[], {}, [[[[[]]]]], {"a": {"b": {"c": {}}}}])

    def key(self) -> str:
        if self.vocabulary and self.rng.random() < 0.7:
            return self.rng.choice(self.vocabulary)
        return self.rng.choice(INTERESTING_STRS)

    def _slots(self, doc: Any) -> list[tuple[Any, Any]]:
        """Every (container, key or index) in ``doc``, found without recursion."""
        out: list[tuple[Any, Any]] = []
        stack = [doc]
        while stack:
            node = stack.pop()
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for k, v in items:
                out.append((node, k))
                if isinstance(v, dict | list):
                    stack.append(v)
        return out

    def mutate_json(self, doc: Any) -> Any:
        doc = copy.deepcopy(doc)
        for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
            slots = self._slots(doc)
            if not slots:
                return self.value()
            node, k = self.rng.choice(slots)
            old = node[k]
            op = self.rng.randrange(9)
            if op in (0, 1, 2):  # a value of any type
                node[k] = self.value()
            elif op == 3:  # remove it
                del node[k]
            elif op == 4 and isinstance(node, dict):  # add a key, often a real one elsewhere in the document
                node[self.key()] = self.value()
            elif op == 5 and isinstance(old, int | float) and not isinstance(old, bool):  # nudge a number
                node[k] = self.rng.choice([old + 1, old - 1, -old, old * 2, old * 1000, old + 0.5, str(old)])
            elif op == 6 and isinstance(old, str):  # reshape a string
                node[k] = self.rng.choice(
                    [old[:-1], old + old, old.upper(), old[: self.rng.randrange(len(old) + 1)], old + "\x00"]
                )
            elif op == 7 and isinstance(old, list):  # change a list's length
                node[k] = old + old[:1] if self.rng.random() < 0.5 else old[1:]
            elif op == 8:  # wrap it
                node[k] = self.rng.choice([[old], {"value": old}, str(old)])
        return doc

    def dump_json(self, doc: Any) -> bytes:
        try:
            text = json.dumps(doc, sort_keys=self.rng.random() < 0.5, separators=(",", ":"), ensure_ascii=self.rng.random() < 0.3)
        except ValueError:  # an integer too long to print: hand over raw digits instead
            text = "1" * 5000
        return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8, on purpose


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
            expires = wb.format_time(datetime.now(UTC) + timedelta(days=30)) if i % 2 else None
            entries.append(
                wb.Entry(
                    f"case-{i:04d}", emb, label="L" if i == 0 else None, expires_at=expires, threshold=0.6 if i == 1 else None
                )
            )
        self.key = Ed25519PrivateKey.generate()
        self.other_key = Ed25519PrivateKey.generate()
        self.keys = {wb.key_id(self.key.public_key()): self.key.public_key()}
        self.space = "space-" + "a" * 58
        manifest, self.chunks = wb.build_unsigned(
            entries, name="city", version=5, embedding_space=self.space,
            expires_at=datetime.now(UTC) + timedelta(days=60), max_chunk_bytes=400,
        )  # fmt: skip
        self.manifest_bytes, self.signature = wb.sign_manifest(manifest, self.key)
        self.manifest_doc = json.loads(self.manifest_bytes)
        self.chunks32 = [wb.encode_chunk(wb.decode_chunk(c, "float16", 32), "float32") for c in self.chunks]


class ManifestTarget(Target):
    name = "watchlist-manifest"

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        self.m = Mutator(rng, _keys_of(kit.manifest_doc))

    def generate(self) -> bytes:
        r = self.rng.random()
        if r < 0.55:
            return self.m.dump_json(self.m.mutate_json(self.kit.manifest_doc))
        if r < 0.9:
            return self.m.mutate_bytes(self.kit.manifest_bytes, [self.kit.manifest_bytes])
        return self.m.random_bytes()

    def run(self, case: bytes) -> bool:
        m = wb.parse_manifest(case)
        _ = m.sha256  # what the store records: must not fail on anything the parser accepted
        wb.check_manifest(m, embedding_space=self.kit.space, current_version=4, expected_name="city")
        return True


class ChunkTarget(Target):
    name = "watchlist-chunk"

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        self.seeds = [(c, "float16") for c in kit.chunks] + [(c, "float32") for c in kit.chunks32]
        metas = [json.loads(self._split(c)[0]) for c, _ in self.seeds]
        self.m = Mutator(rng, _keys_of(*metas))

    @staticmethod
    def _split(chunk: bytes) -> tuple[bytes, bytes]:
        head = len(wb.MAGIC) + 4
        n = int.from_bytes(chunk[len(wb.MAGIC) : head], "big")
        return chunk[head : head + n], chunk[head + n :]

    def generate(self) -> tuple[bytes, str, int]:
        data, dtype = self.rng.choice(self.seeds)
        dimension = 32 if self.rng.random() < 0.9 else self.rng.choice([8, 16, 31, 33, 64, 4096])
        if self.rng.random() < 0.05:
            dtype = "float32" if dtype == "float16" else "float16"
        r = self.rng.random()
        if r < 0.45:  # a mutated entry table under a correct (sometimes wrong) length, with the real embeddings
            meta, body = self._split(data)
            table = self.m.dump_json(self.m.mutate_json(json.loads(meta)))
            length = len(table) if self.rng.random() < 0.9 else self.rng.choice([0, len(table) + 1, 2**32 - 1])
            data = wb.MAGIC + length.to_bytes(4, "big") + table + body
        elif r < 0.6:  # embeddings altered: NaN, infinity, zeros, cut or padded
            meta, body = self._split(data)
            arr = bytearray(body)
            op = self.rng.randrange(4)
            if op == 0 and arr:
                pos = self.rng.randrange(len(arr) // 2) * 2
                arr[pos : pos + 2] = self.rng.choice([b"\x00\x7e", b"\x00\x7c", b"\xff\xff", b"\x00\x00"])
            elif op == 1:
                arr = bytearray(len(arr))
            elif op == 2:
                arr = arr[: self.rng.randrange(len(arr) + 1)]
            else:
                arr += self.rng.randbytes(self.rng.choice([1, 2, 64]))
            data = wb.MAGIC + len(meta).to_bytes(4, "big") + meta + bytes(arr)
        elif r < 0.95:
            data = self.m.mutate_bytes(data, [s for s, _ in self.seeds])
        else:
            data = (wb.MAGIC if self.rng.random() < 0.5 else b"") + self.m.random_bytes()
        return data, dtype, dimension

    def run(self, case: tuple[bytes, str, int]) -> bool:
        data, dtype, dimension = case
        wb.decode_chunk(data, dtype, dimension, name="chunks/00000.bin")
        return True

    def describe(self, case: tuple[bytes, str, int]) -> bytes:
        data, dtype, dimension = case
        return f"{dtype} {dimension} ".encode() + data


class FolderTarget(Target):
    """A bundle folder on disk through read_bundle and verify_bundle; mutated manifests are often re-signed
    with the trusted key and mutated chunks re-hashed, so the inputs reach the checks behind the signature."""

    name = "bundle-folder"

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        self.m = Mutator(rng, _keys_of(kit.manifest_doc))
        self.folder = work / "bundle"

    def generate(self) -> tuple[dict[str, bytes | None], int | None]:
        kit, rng = self.kit, self.rng
        doc = copy.deepcopy(kit.manifest_doc)
        chunks: list[bytes | None] = list(kit.chunks)
        signature: bytes | None = kit.signature
        files: dict[str, bytes | None] = {}
        r = rng.random()
        if r < 0.35:  # alter a chunk, then (mostly) make the manifest agree with it
            i = rng.randrange(len(chunks))
            chunk = chunks[i] or b""
            chunks[i] = self.m.mutate_bytes(chunk, kit.chunks) if rng.random() < 0.6 else ChunkTarget._split(chunk)[0]
            if rng.random() < 0.8:
                new = chunks[i] or b""
                doc["chunks"][i].update(sha256=hashlib.sha256(new).hexdigest(), size=len(new))
        elif r < 0.65:
            doc = self.m.mutate_json(doc)
        elif r < 0.75:
            chunks[rng.randrange(len(chunks))] = None  # a missing chunk file
        elif r < 0.85:
            signature = self.m.mutate_bytes(kit.signature) if rng.random() < 0.7 else None
        if isinstance(doc, dict) and rng.random() < 0.3:  # shift time, version or name
            shifted = self.m.mutate_json({"version": doc.get("version"), "expires_at": doc.get("expires_at")})
            doc.update(shifted if isinstance(shifted, dict) else {})
        manifest = self.m.dump_json(doc) if doc != kit.manifest_doc else kit.manifest_bytes
        if signature is not None and manifest != kit.manifest_bytes:
            s = rng.random()
            if s < 0.7:
                signature = kit.key.sign(manifest)  # trusted: the checks behind the signature run
            elif s < 0.85:
                signature = kit.other_key.sign(manifest)
        if rng.random() < 0.05:
            manifest = self.m.mutate_bytes(manifest)
        files["manifest.json"] = manifest
        files["manifest.sig"] = signature
        for i, c in enumerate(chunks):
            files[wb.chunk_name(i)] = c
        if rng.random() < 0.05:
            files[wb.chunk_name(len(chunks))] = kit.chunks[0]  # an extra, unlisted chunk
        return files, rng.choice([None, 4, 5])  # and the version the device holds

    def run(self, case: tuple[dict[str, bytes | None], int | None]) -> bool:
        files, current = case
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "chunks").mkdir(parents=True)
        for rel, data in files.items():
            if data is not None:
                (self.folder / rel).write_bytes(data)
        bundle = wb.read_bundle(self.folder)
        wb.verify_bundle(bundle, self.kit.keys, embedding_space=self.kit.space, current_version=current, expected_name="city")
        return True

    def describe(self, case: tuple[dict[str, bytes | None], int | None]) -> bytes:
        files, current = case
        return json.dumps({"current_version": current, **{k: None if v is None else v.hex() for k, v in files.items()}}).encode()


def _hit(device: str) -> dict[str, Any]:
    return {
        "schema": "edge.hit/1", "event_id": str(uuid.uuid4()), "device_id": device, "camera": "gate", "track_id": "gate-3-1",
        "first_seen": "2026-11-22T10:00:00.000Z", "last_seen": "2026-11-22T10:00:01.500Z", "entry_id": "case-0001",
        "score": 0.71, "threshold": 0.574, "margin": 0.3, "frames_matched": 4,
        "face": {"bbox": [10.0, 20.0, 80.0, 80.0], "size_px": 80.0, "sharpness": 120.0, "yaw": 3.0, "detector_score": 0.9},
        "watchlist": {"name": "city", "version": 3, "sha256": "a" * 64},
        "models": {"detector": "b" * 64, "embedder": "c" * 64}, "review": "candidate",
    }  # fmt: skip


def _status(device: str) -> dict[str, Any]:
    return {
        "schema": "edge.status/1", "device_id": device, "state": "online", "uptime_s": 12.5, "fps": 9.8,
        "outbox": {"depth": 2, "oldest_age_s": 5.0, "dropped": 0, "failed": 0},
        "watchlist": {"name": "city", "version": 3, "sha256": "a" * 64, "entries": 10, "last_sync": None},
        "models": {"detector": "b" * 64, "embedder": "c" * 64}, "last_error": None,
    }  # fmt: skip


def _ack(device: str) -> dict[str, Any]:
    return {
        "schema": "edge.watchlist-ack/1", "device_id": device, "watchlist": "city", "version": 3, "previous_version": 2,
        "outcome": "applied", "reason": "applied", "message": "applied", "ts": "2026-11-22T10:00:00.000Z",
    }  # fmt: skip


def _reason_kind(detail: str) -> str:
    """A rejection reason without the values in it, so the counts show which checks the inputs reached."""
    if "does not belong on this topic" in detail:
        return "schema does not belong on the topic"
    if "published on" in detail:
        return "device_id differs from the topic"
    head = detail.split(" (", 1)[0].split(": ", 1)[0]
    return "/".join("N" if part.isdigit() else part for part in head.split("/"))[:80]


class AlertsTarget(Target):
    """``edge alerts`` ingest: it must never raise, whatever arrives; 'accepted' = stored as a hit, status or ack."""

    name = "alerts-ingest"
    expected = ()

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        self.store = Store(":memory:")
        self.seeds = {"hits": _hit("pole-1"), "status": _status("pole-1"), "watchlist/ack": _ack("pole-1")}
        for suffix, doc in self.seeds.items():  # the seeds are payloads the store accepts, or the fuzzing starts wrong
            kind = ingest(self.store, f"edge/v1/pole-1/{suffix}", json.dumps(doc).encode()).kind
            if kind == "rejected":
                raise SystemExit(f"alerts seed for {suffix} is rejected: fix the seed")
        self.m = Mutator(rng, _keys_of(*self.seeds.values()))

    def generate(self) -> tuple[str, bytes]:
        rng = self.rng
        suffix = rng.choice(list(self.seeds))
        doc = copy.deepcopy(self.seeds[suffix])
        if suffix == "hits":
            doc["event_id"] = str(uuid.UUID(int=rng.getrandbits(128)))
        device = "pole-1" if rng.random() < 0.8 else rng.choice(["pole-2", "", "+", "#", "a/b", "日本", "x" * 300])
        r = rng.random()
        if r < 0.6:
            doc = self.m.mutate_json(doc)
            if isinstance(doc, dict) and rng.random() < 0.7:
                doc["device_id"] = device  # keep the topic check passing so the schema and the store are reached
            payload = self.m.dump_json(doc)
        elif r < 0.9:
            payload = self.m.mutate_bytes(json.dumps(doc).encode(), [json.dumps(d).encode() for d in self.seeds.values()])
        else:
            payload = self.m.random_bytes()
        t = rng.random()
        if t < 0.85:
            topic = f"edge/v1/{device}/{suffix}"
        elif t < 0.95:
            topic = f"edge/v1/{device}/{rng.choice(list(self.seeds))}"
        else:
            topic = rng.choice(["", "/", "edge", "edge/v1", "edge/v1//hits", "x/y/z/hits", "edge/v1/a/b/c/d/hits", "é/v1/a/hits"])
        return topic, payload

    def run(self, case: tuple[str, bytes]) -> bool:
        result = ingest(self.store, *case)
        if result.kind == "rejected":  # ingest returns its rejections: count them by kind, as the others count exceptions
            why = _reason_kind(result.detail)
            self.reasons[why] = self.reasons.get(why, 0) + 1
        return result.kind != "rejected"

    def describe(self, case: tuple[str, bytes]) -> bytes:
        return case[0].encode() + b" " + case[1]

    def close(self) -> None:
        self.store.close()


CONFIG_SEED = """\
device_id = "pole-7"
data_dir = "/var/lib/edge"

[[sources]]
camera = "gate"
url = "rtsp://10.0.0.5/stream1"
fps_cap = 10.0
width = 1920
height = 1080
face_distance_m = 6.0
hfov_deg = 62.2

[[sources]]
camera = "yard"
url = "0"
stop_at_end = false

[mqtt]
host = "broker.example.net"
port = 8883
tls = { ca = "/etc/edge/ca.pem", cert = "/etc/edge/device.pem", key = "/etc/edge/device.key" }
username = "pole-7"
keepalive_s = 30
status_interval_s = 30.0
max_inflight = 50

[recognition]
embedder = "mobilefacenet"
accelerator = "auto"
threads = 2
flip = true

[recognition.detector]
model = "blazeface-full-range"
close_face_retry = true

[recognition.quality]
min_size_px = 24.0
min_sharpness = 10.0
max_abs_yaw = 60.0

[watchlist]
name = "city"
public_keys = ["/etc/edge/watchlist.pub", "/etc/edge/watchlist-next.pub"]
assemble_timeout_s = 300.0

[tracking]
iou_match = 0.3
min_frames = 2
realert_s = 60.0

[outbox]
max_rows = 200000
max_age_days = 14.0

[privacy]
thumbnails = false
retention_days = 30.0

[daemon]
queue_frames = 4
drain_timeout_s = 600.0
"""
ENV_KEYS = ["EDGE_DEVICE_ID", "EDGE_DATA_DIR", "EDGE_SOURCES", "EDGE_MQTT", "EDGE_MQTT__PORT", "EDGE_MQTT__TLS",
            "EDGE_MQTT__TLS__CA", "EDGE_WATCHLIST__PUBLIC_KEYS", "EDGE_RECOGNITION__THRESHOLD", "EDGE_TRACKING",
            "EDGE_RECOGNITION__DETECTOR__SCORE_THRESHOLD", "EDGE_PRIVACY__THUMBNAILS", "EDGE_UNKNOWN"]  # fmt: skip
ENV_VALUES = ["", "1", "-1", "abc", "[]", "{}", "[1", "{\"a\":", '[{"camera":"x","url":"y"}]', '{"port": "x"}', "false",
              "true", "1e999", "nan", "é", "99999999999999999999999", '{"ca": 1}', '["/a", 2]', "1" * 5000]  # fmt: skip


def _toml_key(k: str) -> str:
    if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k):
        return k
    return json.dumps(k, ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, datetime):
        return v.isoformat()
    return '""'  # None: TOML has no null


def to_toml(doc: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer (tables, arrays of tables, inline values) for the mutated configuration."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not _is_table(v) and not _is_table_array(v)]
    for k, v in doc.items():
        name = f"{prefix}{_toml_key(k)}"
        if _is_table(v):
            lines.append(f"\n[{name}]\n" + to_toml(v, name + "."))
        elif _is_table_array(v):
            lines.extend(f"\n[[{name}]]\n" + to_toml(item, name + ".") for item in v)
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict) and not any(_is_table_array(x) for x in v.values()) and len(v) != 1


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


class ConfigTarget(Target):
    """``load_settings``: a TOML file (mutated as a document or as text) and sometimes ``EDGE_*`` variables."""

    name = "config-toml"

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        import tomllib

        self.doc = tomllib.loads(CONFIG_SEED)
        self.m = Mutator(rng, _keys_of(self.doc))
        self.path = work / "edge.toml"
        self.lines = CONFIG_SEED.splitlines()

    def generate(self) -> tuple[bytes, dict[str, str]]:
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            doc = self.m.mutate_json(self.doc)
            text = to_toml(doc).encode("utf-8", "surrogatepass") if isinstance(doc, dict) else self.m.dump_json(doc)
        elif r < 0.75:  # line edits: drop, repeat, swap, or add a line
            lines = list(self.lines)
            for _ in range(rng.choice([1, 2, 3])):
                i = rng.randrange(len(lines))
                op = rng.randrange(4)
                if op == 0:
                    del lines[i]
                elif op == 1:
                    lines.insert(i, lines[i])
                elif op == 2:
                    j = rng.randrange(len(lines))
                    lines[i], lines[j] = lines[j], lines[i]
                else:
                    lines.insert(i, f"{self.m.key()} = {_toml_value(self.m.value())}")
            text = "\n".join(lines).encode("utf-8", "surrogatepass")
        elif r < 0.95:
            text = self.m.mutate_bytes(CONFIG_SEED.encode())
        else:
            text = self.m.random_bytes()
        env: dict[str, str] = {}
        if rng.random() < 0.15:
            for _ in range(rng.choice([1, 2])):
                env[rng.choice(ENV_KEYS)] = rng.choice(ENV_VALUES)
        return text, env

    def run(self, case: tuple[bytes, dict[str, str]]) -> bool:
        text, env = case
        self.path.write_bytes(text)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            load_settings(self.path)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return True

    def describe(self, case: tuple[bytes, dict[str, str]]) -> bytes:
        return json.dumps(case[1]).encode() + b"\n" + case[0]


class ModelManifestTarget(Target):
    """The model manifest, then the look-ups the device makes with it (embedder, detector, Edge TPU variant)."""

    name = "model-manifest"

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        self.seed = (edge_models.default_models_dir() / edge_models.MANIFEST_NAME).read_bytes()
        self.doc = json.loads(self.seed)
        self.m = Mutator(rng, _keys_of(self.doc))
        self.names = list(self.doc.get("models", {}))

    def generate(self) -> bytes:
        r = self.rng.random()
        if r < 0.6:
            return self.m.dump_json(self.m.mutate_json(self.doc))
        if r < 0.95:
            return self.m.mutate_bytes(self.seed)
        return self.m.random_bytes()

    def run(self, case: bytes) -> bool:
        manifest = edge_models.parse_manifest(case, self.work)
        for name in self.names:
            with contextlib.suppress(EdgeError):
                spec = manifest.get(name, self.rng.choice([None, "embedder", "detector"]))
                manifest.variant(spec.name, "edgetpu")
                manifest.path(spec)
        return True


class SyncTarget(Target):
    """The device's watchlist-sync handler: every message on the manifest, chunk and revoke topics, processed as the
    sync thread would, against a real SQLite file. It must never raise (a raise would leave a message unacked):
    'accepted' = a bundle or revocation applied. Manifests and revocations are often re-signed with the trusted key."""

    name = "watchlist-sync"
    expected = ()
    RESET_EVERY = 20_000  # a fresh database now and then, so the audit log of millions of refusals stays small

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        from edge.watchlist.revoke import sign_revoke

        self.envelope = {"schema": "edge.watchlist-bundle/1", "manifest": kit.manifest_bytes.decode(),
                         "signature": wb.b64(kit.signature)}  # fmt: skip
        data, _ = sign_revoke(kit.key, name="city", sequence=3, version=5, entry_ids=["case-0001", "case-0002"])
        self.revoke_doc = json.loads(data)
        self.m = Mutator(rng, _keys_of(kit.manifest_doc, self.envelope, self.revoke_doc))
        self.acks: list[dict[str, Any]] = []
        self.runs = 0
        self.sync: Any = None
        self._reset()

    def _reset(self) -> None:
        from edge.watchlist.sync import WatchlistSync

        if self.sync is not None:
            self.sync.store.conn.close()
        for p in self.work.glob("edge.db*"):
            p.unlink()
        self.sync = WatchlistSync(self.work / "edge.db", name="city", keys=self.kit.keys, embedding_space=self.kit.space,
                                  timeout_s=300, on_applied=lambda m: None, send_ack=self.acks.append)  # fmt: skip
        self.sync.store.conn.execute("PRAGMA synchronous = OFF")  # the harness's speed; the handler is what is fuzzed

    def _signed(self, doc: Any, key_field: str) -> tuple[bytes, bytes]:
        data = self.m.dump_json(doc)
        r = self.rng.random()
        key = self.kit.key if r < 0.75 else self.kit.other_key
        if isinstance(doc, dict) and r < 0.9 and self.rng.random() < 0.8:
            doc = dict(doc, **{key_field: wb.key_id(key.public_key())})
            data = self.m.dump_json(doc)
        return data, key.sign(data)

    def generate(self) -> tuple[str, bytes]:
        rng, kit = self.rng, self.kit
        r = rng.random()
        if r < 0.4:
            topic = "edge/v1/watchlists/city/manifest"
            s = rng.random()
            if s < 0.5:
                doc = self.m.mutate_json(kit.manifest_doc) if rng.random() < 0.8 else kit.manifest_doc
                if isinstance(doc, dict) and rng.random() < 0.5:
                    doc["version"] = rng.choice([1, 4, 5, 6, 7, 2**63 - 1, 2**63, -1, 0])
                data, sig = self._signed(doc, "key_id")
                env = dict(self.envelope, manifest=data.decode("utf-8", "surrogatepass"), signature=wb.b64(sig))
                payload = self.m.dump_json(env)
            elif s < 0.75:
                payload = self.m.dump_json(self.m.mutate_json(self.envelope))
            elif s < 0.97:
                payload = self.m.mutate_bytes(json.dumps(self.envelope).encode())
            else:
                payload = rng.choice([b'{"manifest":' + b"[" * 50_000, self.m.random_bytes()])
        elif r < 0.7:
            from edge.watchlist.revoke import MESSAGE_SCHEMA

            topic = "edge/v1/watchlists/city/revoke"
            doc = self.m.mutate_json(self.revoke_doc) if rng.random() < 0.85 else dict(self.revoke_doc)
            if isinstance(doc, dict) and rng.random() < 0.6:
                doc["sequence"] = rng.choice([self.runs + 1, self.runs + 1, 1, 3, 2**63, 0, -5])
            data, sig = self._signed(doc, "key_id")
            env = {"schema": MESSAGE_SCHEMA, "revoke": data.decode("utf-8", "surrogatepass"), "signature": wb.b64(sig)}
            t = rng.random()
            payload = self.m.dump_json(env) if t < 0.7 else self.m.dump_json(self.m.mutate_json(env)) if t < 0.85 else (
                self.m.mutate_bytes(self.m.dump_json(env)))  # fmt: skip
        elif r < 0.97:
            i = rng.randrange(len(kit.chunks))
            version = rng.choice([5, 5, 5, 6, 4, 0, 2**63])
            number = i if rng.random() < 0.9 else rng.choice([i + 1, 99, 10**20])
            topic = f"edge/v1/watchlists/city/v{version}/chunks/{number}"
            payload = kit.chunks[i] if rng.random() < 0.6 else self.m.mutate_bytes(kit.chunks[i], kit.chunks)
        else:
            topic = "edge/v1/watchlists/city/" + rng.choice(["v/chunks/1", "v1x/chunks/0", "v١/chunks/0", "v1/chunks/-1",
                                                             "v1/chunks", "", "x", "v+1/chunks/0", "v 1/chunks/0"])  # fmt: skip
            payload = self.m.random_bytes()
        return topic, payload

    def run(self, case: tuple[str, bytes]) -> bool:
        self.runs += 1
        if self.runs % self.RESET_EVERY == 0:
            self._reset()
        before = len(self.acks)
        self.sync._process(*case)  # not process_safely: anything it raises is a crash here
        new = self.acks[before:]
        self.acks.clear()
        for ack in new:
            if ack["outcome"] == "refused":
                self.reasons[ack["reason"]] = self.reasons.get(ack["reason"], 0) + 1
        return any(a["outcome"] == "applied" for a in new)

    def describe(self, case: tuple[str, bytes]) -> bytes:
        return case[0].encode() + b" " + case[1]

    def close(self) -> None:
        self.sync.store.conn.close()


TARGETS: dict[str, type[Target]] = {
    t.name: t for t in (ManifestTarget, ChunkTarget, FolderTarget, AlertsTarget, ConfigTarget, ModelManifestTarget, SyncTarget)
}


# --- the run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Interrupt a stuck input after ``seconds`` (main thread only; C code is interrupted when it returns)."""

    def fire(_sig: int, _frame: FrameType | None) -> None:
        raise Hang(f"input still running after {seconds:.0f}s")

    old = signal.signal(signal.SIGALRM, fire)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def fuzz_target(target: Target, count: int, *, hang_s: float, abort_s: float, crash_dir: Path | None,
                crashes_out: list[dict[str, Any]], progress: Callable[[int], None]) -> Stats:  # fmt: skip
    stats = Stats()
    seen: dict[str, int] = {}
    for i in range(count):
        case = target.generate()
        error: str | None = None
        t0, cpu0 = time.perf_counter(), time.thread_time()
        signal.setitimer(signal.ITIMER_REAL, abort_s)
        try:
            accepted = target.run(case)
        except Hang as exc:
            accepted, error = False, f"Hang: {exc}"
        except target.expected as exc:
            accepted = False
            stats.rejections[type(exc).__name__] = stats.rejections.get(type(exc).__name__, 0) + 1
        except Exception:
            accepted, error = False, traceback.format_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        # CPU time, not wall time, decides a hang: on a shared machine a process can wait seconds for a core.
        # An input blocked without using the CPU is caught by the wall-clock alarm (abort_s) instead.
        ms = (time.thread_time() - cpu0) * 1000
        stats.slowest_wall_ms = max(stats.slowest_wall_ms, (time.perf_counter() - t0) * 1000)
        stats.inputs += 1
        if ms > stats.slowest_ms:
            stats.slowest_ms = ms
            stats.slowest_input_hex = target.describe(case)[:256].hex()
        hang = ms > hang_s * 1000
        if error is None and not hang:
            stats.accepted += accepted
            stats.rejected += not accepted
        else:
            kind = "crash" if error is not None and not error.startswith("Hang") else "hang"
            stats.hangs += kind == "hang"
            stats.crashes += kind == "crash"
            text = error or f"took {ms:.0f} ms"
            where = text.strip().splitlines()
            signature = f"{kind}:{where[-1][:120] if where else ''}:{where[-3][:200] if len(where) > 2 else ''}"
            seen[signature] = seen.get(signature, 0) + 1
            if seen[signature] <= MAX_CRASH_RECORDS:
                raw = target.describe(case)
                record = {"target": target.name, "kind": kind, "index": i, "ms": round(ms, 1), "error": text,
                          "input_hex": raw[:HEX_LIMIT].hex(), "input_bytes": len(raw)}  # fmt: skip
                if crash_dir is not None:
                    crash_dir.mkdir(parents=True, exist_ok=True)
                    path = crash_dir / f"{target.name}-{i}.bin"
                    path.write_bytes(raw)
                    record["file"] = str(path)
                crashes_out.append(record)
                log.error("%s %s on input %d (%d bytes): %s", target.name, kind, i, len(raw), where[-1] if where else text)
        if i % 1000 == 999:
            progress(1000)
    progress(count % 1000)
    return stats


def plan(total: int, names: list[str]) -> dict[str, int]:
    weights = {n: WEIGHTS[n] for n in names}
    scale = sum(weights.values())
    counts = {n: int(total * w / scale) for n, w in weights.items()}
    counts[names[0]] += total - sum(counts.values())  # rounding remainder, so the total is exact
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--inputs", type=int, default=1_000_000, help="generated inputs in total, split over the targets (default 1,000,000)"
    )
    p.add_argument("--quick", action="store_true", help="20,000 inputs in total (release checks at reduced scale)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed generates the same inputs")
    p.add_argument("--target", action="append", choices=sorted(TARGETS), help="fuzz only this target (repeatable)")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    p.add_argument("--hang-s", type=float, default=1.0, help="an input using more CPU time than this is a hang (default 1 s)")
    p.add_argument("--abort-s", type=float, default=10.0, help="an input still running after this is interrupted (default 10 s)")
    p.add_argument("--crash-dir", type=Path, help="write each recorded crashing input to this folder in full")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    total = 20_000 if args.quick else args.inputs
    names = args.target or list(TARGETS)
    counts = plan(total, names)
    logging.getLogger("edge").setLevel(logging.CRITICAL)  # rejections log warnings; millions of them are noise
    crashes: list[dict[str, Any]] = []
    per_target: dict[str, Stats] = {}
    started = time.monotonic()
    done = 0
    last_report = started

    def progress(n: int) -> None:
        nonlocal done, last_report
        done += n
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            log.info("%d of %d inputs, %.0f s", done, total, last_report - started)

    with tempfile.TemporaryDirectory(prefix="edge-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        kit = BundleKit(random.Random(f"{args.seed}:kit"))
        with alarm(args.abort_s):
            for name in names:
                work = Path(tmp) / name
                work.mkdir()
                target = TARGETS[name](random.Random(f"{args.seed}:{name}"), work, kit)
                t0 = time.monotonic()
                per_target[name] = fuzz_target(target, counts[name], hang_s=args.hang_s, abort_s=args.abort_s,
                                               crash_dir=args.crash_dir, crashes_out=crashes, progress=progress)  # fmt: skip
                target.close()
                per_target[name].rejections.update(target.reasons)
                s = per_target[name]
                log.info("%s: %d inputs in %.1f s, %d accepted, %d rejected, %d crashes, %d hangs, slowest %.1f ms", name,
                         s.inputs, time.monotonic() - t0, s.accepted, s.rejected, s.crashes, s.hangs, s.slowest_ms)  # fmt: skip
    seconds = time.monotonic() - started
    result = {
        "inputs_total": sum(s.inputs for s in per_target.values()),
        "seed": args.seed,
        "per_target": {n: s.__dict__ for n, s in per_target.items()},
        "crashes": sum(s.crashes for s in per_target.values()),
        "hangs": sum(s.hangs for s in per_target.values()),
        "seconds": round(seconds, 1),
        "crash_records": crashes,
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['inputs_total']} inputs in {seconds:.0f} s: {result['crashes']} crashes, {result['hangs']} hangs "
        f"({', '.join(f'{n} {s.inputs}' for n, s in per_target.items())})"
    )
    return 1 if result["crashes"] or result["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
