"""``edge console --broker``: ingest beside the web server, like ``edge alerts --headless``."""

from __future__ import annotations

import argparse
import threading

from edge.errors import EdgeError


def start_ingest(args: argparse.Namespace, stop: threading.Event) -> threading.Thread:
    raise EdgeError("--broker: ingesting from the console needs the central store's ingest worker (not merged yet)")
