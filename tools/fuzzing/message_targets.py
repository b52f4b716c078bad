"""Fuzz targets for MQTT payloads: central ingest (topic + bytes) and the device's watchlist-sync handler."""

from __future__ import annotations

import copy
import json
import random
import uuid
from pathlib import Path
from typing import Any

from edge.central.ingest import ingest
from edge.central.store import Store
from edge.watchlist.bundle import b64
from edge.watchlist.keys import key_id
from tools.fuzzing.base import BundleKit, Target, _keys_of
from tools.fuzzing.mutator import Mutator


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
                         "signature": b64(kit.signature)}  # fmt: skip
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
            doc = dict(doc, **{key_field: key_id(key.public_key())})
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
                env = dict(self.envelope, manifest=data.decode("utf-8", "surrogatepass"), signature=b64(sig))
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
            env = {"schema": MESSAGE_SCHEMA, "revoke": data.decode("utf-8", "surrogatepass"), "signature": b64(sig)}
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
