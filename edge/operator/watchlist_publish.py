"""``edge watchlist publish``: check a bundle as a device would, then retain it on the broker without a gap.

Order matters, so that devices always find one complete, verified version:
1. the bundle is verified (signature against a trusted key, chunk hashes and sizes, expiry);
2. the version retained on the broker is read, and a version not newer is refused unless forced;
3. the new chunks are retained and every PUBACK checked (a refused one stops here: no manifest);
4. the new manifest is retained (PUBACK checked);
5. only then are the previous version's retained chunks cleared.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.publish import (
    BrokerError,
    BrokerOptions,
    add_broker_arguments,
    broker_options,
    chunk_topic,
    connect_blocking,
    make_client,
    manifest_topic,
)
from edge.watchlist.bundle import b64, check_contents, read_bundle, verify_bundle, verify_signature
from edge.watchlist.errors import BundleError
from edge.watchlist.keys import trusted_keys
from edge.watchlist.manifest import Manifest, parse_manifest

log = logging.getLogger(__name__)

BUNDLE_SCHEMA = "edge.watchlist-bundle/1"


class PublishRefusedError(EdgeError):
    """The bundle is not published: it does not verify, or it is not newer than the broker's version."""


@dataclass(frozen=True)
class Published:
    manifest: Manifest
    previous: Manifest | None
    cleared: int


class _Session:
    """One MQTT connection that tracks SUBACK/UNSUBACK and the PUBACK reason code of each publish."""

    def __init__(self, opts: BrokerOptions, timeout: float) -> None:
        self.opts = opts
        self.timeout = timeout
        self.client = make_client(opts)
        self.retained: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self._acks: dict[int, Any] = {}
        self._done: set[int] = set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda _c, _u, mid, *_: self._finish(mid)
        self.client.on_unsubscribe = lambda _c, _u, mid, *_: self._finish(mid)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        if msg.retain:
            with self._cond:
                self.retained[msg.topic] = bytes(msg.payload)

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    def _finish(self, mid: int) -> None:
        with self._cond:
            self._done.add(mid)
            self._cond.notify_all()

    def _wait(self, mid: int | None, what: str) -> None:
        if mid is None:
            raise BrokerError(f"broker {self.opts.host}:{self.opts.port}: connection lost before {what}")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._done, timeout=self.timeout):
                raise BrokerError(f"broker {self.opts.host}:{self.opts.port} did not answer {what} within {self.timeout:.0f}s")

    def read_retained(self, topic: str) -> bytes | None:
        """The message retained on ``topic``, or None. No fixed wait: the broker sends retained messages right
        behind the SUBACK, so once the UNSUBACK of a following UNSUBSCRIBE is back, they have all arrived."""
        _, mid = self.client.subscribe(topic, qos=1)
        self._wait(mid, "a subscription")
        _, mid = self.client.unsubscribe(topic)
        self._wait(mid, "an unsubscribe")
        with self._cond:
            data = self.retained.get(topic)
        return data or None

    def publish_all(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish retained at QoS 1 and wait until every one is acknowledged with a success reason code."""
        mids = {self.client.publish(topic, payload, qos=1, retain=True).mid: topic for topic, payload in messages}
        with self._cond:
            if not self._cond.wait_for(lambda: all(m in self._acks for m in mids), timeout=self.timeout):
                missing = len([m for m in mids if m not in self._acks])
                raise BrokerError(f"broker did not acknowledge {missing} of {len(mids)} publishes within {self.timeout:.0f}s")
            refused = [(mids[m], self._acks[m]) for m in mids if self._acks[m].is_failure]
        if refused:
            topic, reason = refused[0]
            raise BrokerError(f"broker refused {len(refused)} of {len(mids)} publishes, e.g. {topic}: {reason} (check the ACL)")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_manifest(payload: bytes, keys: dict[str, Any]) -> tuple[Manifest | None, str | None]:
    """The manifest inside a retained ``edge.watchlist-bundle/1`` message and, if it does not verify, why.

    Its version is the floor for the new one; one that does not verify (forged, or signed by a key not
    given) is refused rather than silently ignored, so a rotated-out key cannot hide a newer version.
    """
    try:
        doc = json.loads(payload)
        if doc.get("schema") != BUNDLE_SCHEMA:
            raise ValueError(f"schema {doc.get('schema')!r}")
        manifest_bytes, signature = doc["manifest"].encode("utf-8"), base64.b64decode(doc["signature"], validate=True)
        manifest = parse_manifest(manifest_bytes)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, BundleError) as exc:
        return None, f"the manifest retained on the broker is unreadable ({exc})"
    if not keys:  # without trusted keys the retained version is still a floor: refusing an older one is safe
        return manifest, None
    try:
        return verify_signature(manifest_bytes, signature, keys), None
    except BundleError as exc:
        return manifest, f"the manifest retained on the broker (v{manifest.version}) does not verify: {exc}"


def check_newer(new: Manifest, old: Manifest | None, force: bool) -> None:
    if old is None or new.version > old.version:
        return
    what = "the version the broker already holds" if new.version == old.version else f"older than v{old.version} on the broker"
    if force:
        log.warning("publishing v%d, %s (--force)", new.version, what)
        return
    raise PublishRefusedError(
        f"watchlist {new.name} v{new.version} is {what}: devices holding v{old.version} refuse it and new devices "
        "would be rolled back; build a newer version, or --force to publish it anyway"
    )


def publish_bundle(
    folder: Path, opts: BrokerOptions, public_keys: list[Path], *, force: bool = False, timeout: float = 60.0
) -> Published:
    bundle = read_bundle(folder)
    keys = trusted_keys(public_keys)
    if keys:
        manifest, _ = verify_bundle(bundle, keys, embedding_space=None, current_version=None)
    else:
        # The command surface release checks drive has no key: check everything but whose signature it is
        # (devices still refuse a bundle no key of theirs signed) and say so.
        manifest = bundle.manifest()
        check_contents(bundle, manifest, embedding_space=None, current_version=None)
        log.warning("the signature was not checked against a trusted key (pass --public-key to check it)")
    session = _Session(opts, timeout)
    connect_blocking(session.client, opts)
    try:
        raw = session.read_retained(manifest_topic(manifest.name))
        old, problem = retained_manifest(raw, keys) if raw is not None else (None, None)
        if problem is not None:
            if not force:
                raise PublishRefusedError(f"{problem}; check the broker, or --force to replace it")
            log.warning("%s; replacing it (--force)", problem)
        check_newer(manifest, old, force)
        session.publish_all([(chunk_topic(manifest.name, manifest.version, i), bundle.chunks[i]) for i in sorted(bundle.chunks)])
        payload = {"schema": BUNDLE_SCHEMA, "manifest": bundle.manifest_bytes.decode("utf-8"), "signature": b64(bundle.signature)}
        session.publish_all([(manifest_topic(manifest.name), json.dumps(payload).encode("utf-8"))])
        cleared = 0
        if old is not None and old.version != manifest.version:
            session.publish_all([(chunk_topic(manifest.name, old.version, i), b"") for i in range(len(old.chunks))])
            cleared = len(old.chunks)
    finally:
        session.close()
    return Published(manifest, old, cleared)


def cmd_publish(args: argparse.Namespace) -> int:
    opts = broker_options(args, key=args.key)
    store = None
    if args.db:  # opened first: a wrong --db fails before anything is published
        from edge.central.store import Store

        store = Store(args.db, must_exist=True)
    try:
        try:
            done = publish_bundle(args.bundle, opts, args.public_key, force=args.force, timeout=args.timeout)
        except (BundleError, PublishRefusedError) as exc:
            print(f"NOT PUBLISHED: {exc}")
            return 1
        m, old = done.manifest, done.previous
        if store is not None:
            from edge.central.store.store import parse_ts

            # The fleet's current version is what the operator published, never what devices report.
            store.publish_watchlist(m.name, m.version, m.sha256, parse_ts(m.expires_at), by=args.by or getpass.getuser())
    finally:
        if store is not None:
            store.close()
    print(
        f"published watchlist {m.name} v{m.version}: manifest and {len(m.chunks)} chunks (retained, QoS 1) "
        f"to {opts.host}:{opts.port}"
        + (f", replacing v{old.version}" if old is not None else "")
        + (f"; cleared {done.cleared} retained chunks of v{old.version}" if old is not None and done.cleared else "")
    )
    return 0


def add_arguments(p: Any) -> None:
    p.add_argument("bundle", type=Path)
    p.add_argument("--broker", required=True, help="HOST:PORT")
    p.add_argument(
        "--public-key", type=Path, action="append", default=[],
        help="trusted public key (repeatable): the bundle's signature is verified as a device would before anything is "
        "sent (without it, everything else is checked and a warning says the signature was not)",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="publish even if the broker holds this version or a newer one")
    p.add_argument("--db", help="central store (SQLite file or postgresql:// URL) to record the publication in")
    p.add_argument("--by", help="with --db: who published (default: the login name)")
    add_broker_arguments(p)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the broker's acknowledgements")
    # Kept so older scripts still parse: the retained version is now read without a fixed wait.
    p.add_argument("--previous-wait", type=float, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_publish)
