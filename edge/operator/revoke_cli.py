"""``edge watchlist revoke`` and ``apply-revoke``: sign a revocation of single entries, publish it, or apply it locally.

The retained revoke topic holds one message, so a revocation published here carries every entry
already revoked against the same bundle version (read from the retained one): a device that was
offline for an earlier revocation still removes those entries. The sequence defaults to the
time in milliseconds and is always above the retained one.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.watchlist.errors import BundleError
from edge.watchlist.keys import load_private_key, trusted_keys
from edge.watchlist.manifest import parse_manifest
from edge.watchlist.revoke import Revoke, from_message, parse_revoke, sign_revoke, to_message

log = logging.getLogger(__name__)


def _retained(args: argparse.Namespace, name: str) -> tuple[Any, Any, int | None, Revoke | None]:
    """Connect and read the retained manifest and revocation of ``name``: (client, opts, version, revoke)."""
    import json

    from edge.publish import broker_options, connect_blocking, make_client, manifest_topic, revoke_topic

    opts = broker_options(args, key=args.cert_key)
    client = make_client(opts)
    found: dict[str, Any] = {}
    both = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if not (msg.retain and msg.payload):
            return
        try:
            if msg.topic == manifest_topic(name):
                found["version"] = parse_manifest(json.loads(msg.payload)["manifest"].encode()).version
            elif msg.topic == revoke_topic(name):
                found["revoke"] = parse_revoke(from_message(bytes(msg.payload))[0])
        except (ValueError, KeyError, TypeError, AttributeError, BundleError) as exc:
            log.warning("the retained message on %s is unreadable (%s); ignored", msg.topic, exc)
        if "version" in found and "revoke" in found:
            both.set()

    client.on_message = on_message
    connect_blocking(client, opts)
    client.subscribe([(manifest_topic(name), 1), (revoke_topic(name), 1)])
    both.wait(args.previous_wait)
    return client, opts, found.get("version"), found.get("revoke")


def cmd_revoke(args: argparse.Namespace) -> int:
    from edge.publish import BrokerError, revoke_topic

    if not args.broker and not args.out:
        raise EdgeError("give --broker HOST:PORT to publish the revocation, --out FILE to write it, or both")
    key = load_private_key(args.key)
    client = None
    retained_version: int | None = None
    previous: Revoke | None = None
    if args.broker:
        client, _opts, retained_version, previous = _retained(args, args.name)
    try:
        version = args.version or retained_version
        if version is None:
            raise EdgeError("give --version (no retained manifest on the broker to take the bundle version from)")
        sequence = args.sequence or int(time.time() * 1000)
        if previous is not None and sequence <= previous.sequence:
            if args.sequence:
                raise EdgeError(f"--sequence {sequence} is not above the retained revocation's {previous.sequence}")
            sequence = previous.sequence + 1
        ids = list(dict.fromkeys(args.entry))
        carried: list[str] = []
        if previous is not None and previous.version == version:  # cumulative: the retained topic holds one message
            carried = [e for e in previous.entry_ids if e not in ids]
        data, sig = sign_revoke(key, name=args.name, sequence=sequence, version=version, entry_ids=carried + ids)
        message = to_message(data, sig)
        if args.out:
            args.out.write_bytes(message)
        if client is not None:
            info = client.publish(revoke_topic(args.name), message, qos=1, retain=True)
            info.wait_for_publish(timeout=60)
            if not info.is_published():
                raise BrokerError("broker did not acknowledge the revocation within 60 s")
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
    where = " and ".join(x for x in (f"published (retained) to {args.broker}" if args.broker else "", f"written to {args.out}"
                                     if args.out else "") if x)  # fmt: skip
    print(
        f"revocation {sequence} of watchlist {args.name} v{version}: {len(ids)} entries"
        + (f" (+{len(carried)} carried from revocation {previous.sequence})" if previous is not None and carried else "")
        + f", {where}"
    )
    return 0


def cmd_apply_revoke(args: argparse.Namespace) -> int:
    from edge.config import load_settings
    from edge.db import connect
    from edge.watchlist.revoke import apply_revoke, refuse_revoke
    from edge.watchlist.store import WatchlistStore

    settings = load_settings(args.config)
    if not settings.watchlist.public_keys:
        raise EdgeError(f"{args.config}: watchlist.public_keys is empty; the device trusts no key")
    store = WatchlistStore(connect(settings.database))
    name = settings.watchlist.name
    try:
        data, sig = from_message(args.file.read_bytes())
    except OSError as exc:
        raise EdgeError(f"{args.file}: cannot read ({exc.strerror or exc})") from exc
    except BundleError as exc:
        result = refuse_revoke(store, name, exc)
    else:
        result = apply_revoke(store, data, sig, trusted_keys(settings.watchlist.public_keys), expected_name=name)
    if result.ok:
        print(f"revocation {result.revoke_sequence} applied to watchlist {name}: {result.message}")
        return 0
    print(f"REFUSED ({result.reason}): {result.message}")
    return 1


def add_parsers(wsub: Any) -> None:
    from edge.publish import add_broker_arguments

    p = wsub.add_parser("revoke", help="sign a revocation of single entries and publish it (retained) or write it")
    p.add_argument("--name", required=True, help="watchlist name")
    p.add_argument("--entry", action="append", required=True, help="entry_id to revoke (repeatable)")
    p.add_argument("--key", type=Path, required=True, help="watchlist signing key (PKCS#8 PEM)")
    p.add_argument("--version", type=int, help="bundle version it applies to (default: the retained manifest's)")
    p.add_argument("--sequence", type=int, help="revoke sequence (default: time in ms, above the retained one)")
    p.add_argument("--broker", help="HOST:PORT to publish to, retained, QoS 1")
    p.add_argument("--out", type=Path, help="also (or only) write the signed revocation to this file")
    add_broker_arguments(p, key_flag="--cert-key")  # --key is the watchlist signing key here
    p.add_argument("--previous-wait", type=float, default=1.0, help="seconds to wait for the retained messages")
    p.set_defaults(func=cmd_revoke)

    p = wsub.add_parser("apply-revoke", help="apply a signed revocation file to this device's store directly (no broker)")
    p.add_argument("file", type=Path)
    p.add_argument("--config", type=Path, required=True, help="device config (TOML)")
    p.set_defaults(func=cmd_apply_revoke)
