"""``edge console``: serve the operator web console (and ingest with --broker); ``edge console add-user``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from edge.central.web import ROLES
from edge.errors import EdgeError

log = logging.getLogger(__name__)


def open_database(db: str) -> Any:
    """The central store with the console's tables in place."""
    from edge.central.web.db import open_store

    return open_store(db)


def cmd_add_user(args: argparse.Namespace) -> int:
    from edge.central.web import auth, data

    db = args.user_db or args.db
    if not db:
        raise EdgeError("--db FILE_OR_URL is needed")
    try:
        password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise EdgeError(f"cannot read the password file {args.password_file}: {exc.strerror}") from exc
    store = open_database(db)
    auth.add_user(store.engine, args.name, args.role, password)
    data.audit(store, "(command line)", "add-user", args.name, args.role)
    print(f"account {args.name} ({args.role}) created")
    return 0


def _check_listen(host: str, port: int) -> None:
    """Refuse an address that cannot be served on, with a clear message (not the web server's traceback)."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise EdgeError(f"--listen {host}:{port}: cannot serve there ({exc.strerror or exc})") from exc


def cmd_console(args: argparse.Namespace) -> int:
    if args.console_command == "add-user":
        return cmd_add_user(args)
    if not args.db or not args.listen:
        raise EdgeError("edge console needs --db FILE_OR_URL and --listen HOST:PORT")
    import uvicorn

    from edge.central.web.app import create_app
    from edge.central.web.console import ConsoleConfig
    from edge.publish import parse_host_port

    try:
        host, port = parse_host_port(args.listen)
    except EdgeError as exc:
        raise EdgeError(f"--listen {args.listen!r} is not HOST:PORT") from exc
    _check_listen(host, port)
    if args.photos is not None and not args.photos.is_dir():
        raise EdgeError(f"--photos {args.photos}: not a folder")
    config = ConsoleConfig(
        store=open_database(args.db),
        photos_dir=args.photos,
        broker=args.broker,
        broker_auth={k: getattr(args, k) for k in ("ca", "cert", "key", "username", "password_file")},
        workdir=args.workdir or (Path.cwd() if "://" in args.db else Path(args.db).resolve().parent) / "edge-console",
        public_keys=list(args.public_key or []),
    )
    app = create_app(config)
    from edge.central.web.ingest import start_ingest, stop_ingest

    worker = start_ingest(args) if args.broker else None
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2, proxy_headers=False)
    )
    print(f"edge console on http://{host}:{port}/login", flush=True)
    try:
        server.run()
    finally:
        if worker is not None:
            stop_ingest(worker)
    if worker is not None and worker.returncode not in (0, -15):
        raise EdgeError(f"the ingest worker stopped with status {worker.returncode} (see its messages above)")
    return 0


def add_parser(sub: Any) -> None:
    from edge.publish import add_broker_arguments

    p = sub.add_parser("console", help="operator web console: review queue, fleet, watchlists (with --broker it also ingests)")
    p.add_argument("--db", metavar="FILE_OR_URL", help="central store: a SQLite file or postgresql://user@host:port/db")
    p.add_argument("--listen", metavar="HOST:PORT", help="HOST:PORT to serve on (e.g. 127.0.0.1:8080)")
    p.add_argument("--broker", help="HOST:PORT: also ingest hits like `edge alerts --headless`, and publish watchlists there")
    p.add_argument("--client-id", default="edge-console", help="MQTT client id of the ingest session (with --broker)")
    add_broker_arguments(p)
    p.add_argument("--photos", type=Path, help="enrolment photos, one subfolder per entry_id (shown beside hits)")
    p.add_argument("--workdir", type=Path, help="folder for bundles built from the browser (default: beside the database)")
    p.add_argument(
        "--public-key", type=Path, action="append", help="watchlist public key a bundle must verify against (repeatable)"
    )
    p.set_defaults(func=cmd_console, console_command=None)
    csub = p.add_subparsers(dest="console_command", metavar="ACTION")
    a = csub.add_parser("add-user", help="create a console account")
    a.add_argument("name", help="user name (letters, digits, _.@-)")
    a.add_argument("--role", required=True, choices=ROLES, help="what the account may do")
    a.add_argument("--password-file", type=Path, required=True, help="file holding the password (at least 10 characters)")
    a.add_argument(
        "--db", dest="user_db", metavar="FILE_OR_URL", help="central store: a SQLite file or postgresql://user@host:port/db"
    )
    a.set_defaults(func=cmd_console)
