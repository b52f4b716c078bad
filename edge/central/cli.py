"""``edge alerts`` command line: ingest (headless or with a live console), export, review."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path
from typing import Any

from edge.central.ingest import TOPICS, parse
from edge.central.store import Store
from edge.errors import EdgeError


def _console(store: Store) -> Any:
    from rich.console import Group
    from rich.table import Table

    hits = Table(title="recent hits (candidates for review)", expand=True)
    for col in ("first seen", "device", "camera", "entry", "score", "thr", "review"):
        hits.add_column(col)
    for h in store.hits(limit=15):
        hits.add_row(h.first_seen.isoformat(), h.device_id, h.camera, h.entry_id, f"{h.score:.3f}", f"{h.threshold:.3f}", h.state)
    fleet = Table(title="devices", expand=True)
    for col in ("device", "state", "watchlist", "outbox", "last heard"):
        fleet.add_column(col)
    for d in store.devices():
        state = d.state if d.online else f"[bold red]{d.state}[/]"
        version = (
            f"[yellow]v{d.watchlist_version} (published v{d.published_version})[/]"
            if d.watchlist_behind
            else f"v{d.watchlist_version}"
        )
        outbox = f"[yellow]{d.outbox_depth}[/]" if d.outbox_depth else "0"
        heard = f"{time.time() - d.heard_at.timestamp():.0f}s ago" if d.heard_at else "never (retained)"
        fleet.add_row(d.device_id, state, version, outbox, heard)
    c = store.counts()
    footer = (
        f"{c['hits']} hits, {c['duplicates']} duplicates dropped, {c['rejected']} malformed messages kept aside, {c['acks']} acks"
    )
    return Group(hits, fleet, footer)


def cmd_alerts(args: argparse.Namespace) -> int:
    store = Store(args.db, must_exist=bool(args.review or args.export))
    if args.review:
        if args.confirm == args.reject:
            raise EdgeError("--review needs exactly one of --confirm or --reject")
        r = store.review(args.review, "confirm" if args.confirm else "reject", args.by or "", note=args.note or "")
        print(f"hit {r.event_id} marked {'confirmed' if args.confirm else 'rejected'} by {r.reviewer}")
        return 0
    if args.export:
        text = store.export(args.export)
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
        else:
            print(text, end="" if text.endswith("\n") else "\n")
        return 0
    if not args.broker:
        raise EdgeError("--broker HOST:PORT is needed to receive alerts (or use --export / --review)")
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from edge.publish import BrokerOptions, make_client, parse_host_port

    host, port = parse_host_port(args.broker)
    password = Path(args.password_file).read_text().strip() if args.password_file else None
    opts = BrokerOptions(host, port, args.ca, args.cert, args.key, args.username, password, client_id=args.client_id)
    client = make_client(opts)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        result = store.write([parse(msg.topic, bytes(msg.payload), retained=bool(msg.retain))])[0]
        if args.headless and result.kind in ("hit", "ack", "rejected"):
            print(f"{result.kind:<9} {msg.topic} {result.detail}", flush=True)

    connected = threading.Event()

    def on_connect(cl: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            for t in TOPICS:
                cl.subscribe(t, qos=1)
            connected.set()

    client.on_message = on_message
    client.on_connect = on_connect
    # A persistent session: hits published while this subscriber is down wait for it at the broker.
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 7 * 24 * 3600
    try:
        client.connect(host, port, keepalive=30, clean_start=False, properties=props)
    except OSError as exc:
        raise EdgeError(f"cannot reach broker {host}:{port}: {exc}") from exc
    client.loop_start()
    if not connected.wait(10):
        client.loop_stop()
        raise EdgeError(f"could not connect to {host}:{port} within 10 s")
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        if args.headless:
            while not stop.wait(0.2):
                if deadline and time.monotonic() > deadline:
                    break
        else:
            from rich.live import Live

            with Live(_console(store), refresh_per_second=2) as live:
                while not stop.wait(0.5):
                    live.update(_console(store))
                    if deadline and time.monotonic() > deadline:
                        break
    finally:
        client.disconnect()
        client.loop_stop()
    c = store.counts()
    print(
        f"stored {c['hits']} hits ({c['duplicates']} duplicates dropped), {c['rejected']} malformed kept aside, {c['acks']} acks"
    )
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("alerts", help="central subscriber: store, de-duplicate and review hits; fleet health console")
    p.add_argument(
        "--db",
        type=Path,
        required=True,
        help="SQLite file (created if absent) or postgresql://user@host:port/db URL of the central store",
    )
    p.add_argument("--broker", help="HOST:PORT of the central broker")
    p.add_argument("--ca", type=Path, help="CA certificate (enables TLS)")
    p.add_argument("--cert", type=Path, help="client certificate")
    p.add_argument("--key", type=Path, help="client certificate key")
    p.add_argument("--username", help="MQTT username")
    p.add_argument("--password-file", type=Path, help="file holding the MQTT password")
    p.add_argument("--client-id", default="edge-alerts", help="MQTT client id of this subscriber's persistent session")
    p.add_argument("--headless", action="store_true", help="ingest without the live console (services, checks)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--export", choices=["csv", "json"], help="write the stored hits and exit")
    p.add_argument("--out", type=Path, help="file for --export (default stdout)")
    p.add_argument("--review", metavar="EVENT_ID", help="record a reviewer's decision on one hit")
    p.add_argument("--confirm", action="store_true", help="with --review: the hit is the listed person")
    p.add_argument("--reject", action="store_true", help="with --review: the hit is a false match")
    p.add_argument("--by", help="with --review: the reviewer's name")
    p.add_argument("--note", help="with --review: a note")
    p.set_defaults(func=cmd_alerts)
