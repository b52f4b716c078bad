"""The terminal console of ``edge alerts``: recent hits and the fleet, refreshed live; ``q`` quits.

Everything a device sent is shown as plain text (``rich.text.Text``), never parsed as Rich
markup: an ``entry_id`` like ``[/]`` once crashed the console.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from edge.central.store import Store

KEY_HELP = "q: quit · review: edge alerts --db … --review ID --confirm|--reject --by NAME"
SHORT_ID = 8  # characters of the event id shown; any unique prefix works for --review


def _when(ts: datetime, now: datetime) -> str:
    """Short enough for 80 columns: the time today, the date otherwise."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%H:%M:%S") if ts.date() == now.date() else ts.strftime("%Y-%m-%d")


def _ago(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "never (retained only)"
    s = max(0.0, (now - ts).total_seconds())
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"


def render(store: Store, limit: int = 15) -> Any:
    now = datetime.now(UTC)
    hits = Table(title="recent hits (newest received first)", expand=True)
    hits.add_column("id", no_wrap=True)
    hits.add_column("received", no_wrap=True)
    hits.add_column("device", overflow="fold")
    hits.add_column("camera", overflow="fold")
    hits.add_column("entry", overflow="fold")
    hits.add_column("score", no_wrap=True, justify="right")
    hits.add_column("review", no_wrap=True)
    for h in store.hits(limit=limit):
        hits.add_row(
            Text(h.event_id[:SHORT_ID]), Text(_when(h.received_at, now)), Text(h.device_id), Text(h.camera), Text(h.entry_id),
            Text(f"{h.score:.3f}/{h.threshold:.3f}"), Text(h.state, style="bold" if h.state == "candidate" else ""),
        )  # fmt: skip
    published = store.published()
    title = "devices (published: " + (", ".join(f"{p.name} v{p.version}" for p in published.values()) or "nothing yet") + ")"
    fleet = Table(title=Text(title), expand=True)
    for col in ("device", "state", "watchlist", "outbox", "last heard", "problem"):
        fleet.add_column(col, overflow="fold")
    for d in store.devices(at=now):
        state = Text(d.state if d.online else f"{d.state} (silent)" if d.state != "offline" else "offline")
        if not d.online:
            state.stylize("bold red")
        version = Text(f"v{d.watchlist_version}" if d.watchlist_version is not None else "none")
        if d.watchlist_behind:
            version.append(f" (published v{d.published_version})")
            version.stylize("yellow")
        if d.revocation is not None and d.revocation.outcome == "applied":
            version.append(f", revocation #{d.revocation.sequence}")
        outbox = Text(str(d.outbox_depth or 0), style="yellow" if d.outbox_depth else "")
        problems = []
        if d.refused_ack:
            problems.append(f"refused v{d.refused_ack[0]}: {d.refused_ack[1]}")
        if d.revocation is not None and d.revocation.outcome != "applied":
            problems.append(f"refused revocation #{d.revocation.sequence}: {d.revocation.reason}")
        if d.audit_problem:
            problems.append(f"audit chain {d.audit_problem}")
        fleet.add_row(
            Text(d.device_id), state, version, outbox, Text(_ago(d.heard_at, now)), Text("; ".join(problems), style="red")
        )
    c = store.counts()
    footer = Text(
        f"{c['hits']} hits, {c['duplicates']} duplicates dropped, {c['rejected']} malformed messages kept aside, {c['acks']} acks"
    )
    return Group(hits, fleet, footer, Text(KEY_HELP, style="dim"))


def watch_keys(stop: threading.Event) -> threading.Thread | None:
    """Set ``stop`` when ``q`` is pressed (a terminal on stdin only); the terminal is restored on exit."""
    if not sys.stdin.isatty():
        return None
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def loop() -> None:
        tty.setcbreak(fd)
        try:
            while not stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready and os.read(fd, 1) in (b"q", b"Q"):
                    stop.set()
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    thread = threading.Thread(target=loop, name="console-keys", daemon=True)
    thread.start()
    return thread
