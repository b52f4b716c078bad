"""``edge console --broker``: ingest beside the web server, exactly as ``edge alerts --headless`` does.

It runs as a child process (the very command, so the console ingests with the same checks,
batching and acknowledgements) and is stopped with the console.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

from edge.errors import EdgeError

log = logging.getLogger(__name__)


def ingest_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "edge.cli", "alerts", "--db", str(args.db), "--broker", args.broker, "--headless"]
    cmd += ["--client-id", args.client_id]
    for flag in ("ca", "cert", "key", "username", "password_file"):
        value = getattr(args, flag, None)
        if value is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(value)]
    return cmd


def start_ingest(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    try:
        proc = subprocess.Popen(ingest_command(args), stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise EdgeError(f"cannot start the ingest worker: {exc}") from exc
    log.info("ingesting from %s (pid %s, client id %s)", args.broker, proc.pid, args.client_id)
    return proc


def stop_ingest(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
