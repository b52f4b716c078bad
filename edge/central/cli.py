"""``edge alerts`` command line: ingest (headless or with a live console), export, review, retention."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.central.report import HeadlessReport
from edge.central.store import DECISIONS, STATE_OF, Store
from edge.errors import EdgeError

DEFAULT_GROUP = "edge-ingest"


def _positive(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not f > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of seconds")
    return f


def _month(value: str) -> datetime:
    """``YYYY-MM``: the first month kept by retention."""
    if not re.fullmatch(r"\d{4}-\d{2}", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a month: give YYYY-MM (whole months are dropped)")
    try:
        return datetime(int(value[:4]), int(value[5:]), 1, tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a month: give YYYY-MM with a month 01-12") from None


def _readable(path: Path | None, what: str) -> None:
    if path is not None and not path.is_file():
        raise EdgeError(f"{what} {path}: no such file")


def _write_stdout(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (``| head``): not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _review(store: Store, args: argparse.Namespace) -> int:
    chosen = [d for d in DECISIONS if getattr(args, d.replace("-", "_"))]
    if len(chosen) != 1:
        raise EdgeError("--review needs exactly one of --confirm, --reject, --not-this-person or --escalate")
    r = store.review(args.review, chosen[0], args.by or "", reason=args.reason or "", note=args.note or "")
    change = f" (was {STATE_OF[r.previous_decision]})" if r.previous_decision else ""
    print(f"hit {r.event_id} marked {STATE_OF[r.decision]} by {r.reviewer}{change}")
    return 0


def _export(store: Store, args: argparse.Namespace) -> int:
    text = store.export(args.export)
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise EdgeError(f"--out {args.out}: {exc.strerror or exc}") from exc
    else:
        _write_stdout(text)
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in this environment (a container without a passwd entry)
        return "unknown"


def _retention(store: Store, args: argparse.Namespace) -> int:
    first_kept: datetime = args.drop_before
    this_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if first_kept > this_month:
        raise EdgeError(f"--drop-before {first_kept:%Y-%m} would drop the current month {this_month:%Y-%m}, which is still "
                        f"receiving hits: give {this_month:%Y-%m} or earlier")  # fmt: skip
    where = "partition" if store.backend == "postgresql" else "table"
    actor = args.by or _login()
    removed = store.hits_before(first_kept) if args.dry_run else store.drop_hits_before(first_kept, actor=actor)
    verb = "would remove" if args.dry_run else "removed"
    for name, n in removed:
        how = "deleted" if name == "hits_other" or store.backend == "sqlite" else "detached and dropped"
        print(f"(dry run) {where} {name}: {n} hits would be {how}" if args.dry_run else f"{where} {name}: {n} hits {how}")
    total = sum(n for _name, n in removed)
    print(f"{verb} {total} hits first seen before {first_kept:%Y-%m-%d} (with their reviews)"
          + ("; nothing changed (--dry-run)" if args.dry_run else ""))  # fmt: skip
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    modes = [f for f, on in (("--review", args.review), ("--export", args.export), ("--drop-before", args.drop_before)) if on]
    if len(modes) > 1:
        raise EdgeError(f"{' and '.join(modes)} are separate runs: give one of them")
    if args.dry_run and not args.drop_before:
        raise EdgeError("--dry-run goes with --drop-before")
    if args.drop_before:
        store = Store(args.db, must_exist=True)
        try:
            return _retention(store, args)
        finally:
            store.close()
    if not (args.review or args.export or args.broker):
        raise EdgeError("--broker HOST:PORT is needed to receive alerts (or use --export / --review)")
    for path, what in ((args.ca, "--ca"), (args.cert, "--cert"), (args.key, "--key"), (args.password_file, "--password-file")):
        _readable(path, what)
    # A headless worker retries a batch that fails on a dropped connection (unacknowledged, so nothing
    # is lost): it skips the connection test that costs a round trip per batch.
    store = Store(args.db, must_exist=bool(args.review or args.export), ping=not (args.headless and args.broker))
    try:
        if args.review:
            return _review(store, args)
        if args.export:
            return _export(store, args)
        return _ingest(store, args)
    finally:
        store.close()


def _ingest(store: Store, args: argparse.Namespace) -> int:
    from edge.central.worker import IngestWorker
    from edge.publish import broker_options

    opts = broker_options(args, key=args.key, client_id=args.client_id)
    report = HeadlessReport(every_s=args.report_every, each=args.each) if args.headless else None
    worker = IngestWorker(
        store, opts, group=args.group or None, batch_size=args.batch, on_result=report.record if report else None
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.connect()
    deadline = time.monotonic() + args.duration if args.duration else None
    if report is not None:
        worker.run(stop, deadline, tick=report.tick)
        report.flush()
    else:
        from rich.live import Live

        from edge.central.console import render, watch_keys

        watch_keys(stop)
        last = 0.0
        with Live(render(store), refresh_per_second=2, screen=False) as live:

            def tick() -> None:
                nonlocal last
                if time.monotonic() - last > 0.5:
                    last = time.monotonic()
                    live.update(render(store))

            worker.run(stop, deadline, tick=tick)
    c = store.counts()
    print(
        f"stored {c['hits']} hits ({c['duplicates']} duplicates dropped), {c['rejected']} malformed kept aside, {c['acks']} acks"
    )
    return 0


def add_parser(sub: Any) -> None:
    from edge.publish import add_broker_arguments

    p = sub.add_parser("alerts", help="central subscriber: store, de-duplicate and review hits; fleet health console")
    p.add_argument("--db", required=True, help="SQLite file (created by ingest if absent) or postgresql://user@host:port/db")
    p.add_argument("--broker", help="HOST:PORT of the central broker")
    add_broker_arguments(p)
    p.add_argument(
        "--client-id", default="edge-alerts", help="MQTT client id of this worker's persistent session (one per worker)"
    )
    share = f"shared-subscription group: workers in one group share the messages (default {DEFAULT_GROUP}; '' for none)"
    p.add_argument("--group", default=DEFAULT_GROUP, help=share)
    p.add_argument("--batch", type=int, default=500, help="messages committed per transaction at most (default 500)")
    p.add_argument("--headless", action="store_true", help="ingest without the live console (services, checks)")
    p.add_argument("--duration", type=_positive, help="stop after this many seconds")
    p.add_argument("--report-every", type=_positive, default=60.0, help="headless: seconds between summary lines (default 60)")
    p.add_argument("--each", action="store_true", help="headless: also one line per stored message (small sites, debugging)")
    p.add_argument("--export", choices=["csv", "json"], help="write the stored hits with their review history and exit")
    p.add_argument("--out", type=Path, help="file for --export (default stdout)")
    p.add_argument(
        "--review", metavar="EVENT_ID", help="append a reviewer's decision on one hit (a unique event-id prefix will do)"
    )
    p.add_argument("--confirm", action="store_true", help="with --review: the hit is the listed person")
    p.add_argument("--reject", action="store_true", help="with --review: the hit is a false match")
    p.add_argument("--not-this-person", action="store_true", help="with --review: a real face, but not the listed person")
    p.add_argument("--escalate", action="store_true", help="with --review: pass the hit to a senior reviewer")
    p.add_argument(
        "--drop-before", type=_month, metavar="YYYY-MM",
        help="retention: remove every hit first seen before this month, with its reviews (PostgreSQL: whole monthly "
             "partitions detached and dropped; SQLite: rows deleted); audited, then exit",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="with --drop-before: list what would go, change nothing")
    p.add_argument("--by", help="with --review: the reviewer's name; with --drop-before: who ran it (default: login name)")
    p.add_argument("--reason", help="with --review: the reason (for a change of decision especially)")
    p.add_argument("--note", help="with --review: a note")
    p.set_defaults(func=cmd_alerts)
