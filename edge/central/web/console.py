"""What every console page shares: its configuration, the process's state, and the guard around each handler.

Its own module so that the page modules (queue, pages, watchlists) and the app that mounts them do
not import each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from edge.central.store import Store
from edge.central.web import auth
from edge.central.web.photos import QualityChecker

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "edge_session"
LOGIN_COOKIE = "edge_login"


@dataclass
class ConsoleConfig:
    store: Store  # the central store (its engine also holds the console's own tables)
    photos_dir: Path | None = None  # enrolment photos: one subfolder per entry_id (as `edge watchlist build --photos`)
    broker: str | None = None  # HOST:PORT the Watchlists page publishes to
    # How to reach it (as `edge watchlist publish` takes them): ca, cert, key, username, password_file.
    broker_auth: dict[str, Any] = field(default_factory=dict)
    workdir: Path | None = None  # where bundles built from the browser are kept
    public_keys: list[Path] = field(default_factory=list)  # keys a published bundle must verify against
    poll_s: float = 0.5  # how often the live stream looks for new hits


Handler = Callable[[Request], Awaitable[Response]]


class Console:
    """Shared state of one console process: the database, the cookie signer and the templates."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.store = config.store
        self.engine = config.store.engine
        self.signer = URLSafeSerializer(auth.secret_key(self.engine), salt="edge-console-session")
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.autoescape = True  # every template, whatever its name
        self.quality = QualityChecker()

    # --- sessions -------------------------------------------------------------------------
    async def session(self, request: Request) -> auth.Session | None:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            sid = self.signer.loads(raw)
        except BadSignature:
            return None
        if not isinstance(sid, str):
            return None
        return await run_in_threadpool(auth.lookup, self.engine, sid)

    def render(self, request: Request, name: str, session: auth.Session | None, status: int = 200, **ctx: Any) -> Response:
        ctx.update(session=session, csrf=session.csrf_token if session else "")
        return self.templates.TemplateResponse(request, name, ctx, status_code=status)


def same_origin(request: Request) -> bool:
    """A state-changing request must come from our own pages: Origin (or, failing it, Referer) must be ours."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # not a browser (browsers send Origin on every POST); the CSRF token still has to match
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


def guarded(console: Console, permission: str | None, handler: Callable[[Request, auth.Session], Awaitable[Response]]) -> Handler:
    """Wrap a handler: a live session, the role's permission and, for POSTs, origin and CSRF token."""

    async def endpoint(request: Request) -> Response:
        session = await console.session(request)
        if session is None:
            if request.method == "GET" and "text/event-stream" not in request.headers.get("accept", ""):
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
            raise HTTPException(401, "log in first")
        if permission is not None and not session.may(permission):
            raise HTTPException(403, f"the {session.role} role may not do this")
        if request.method == "POST":
            if not same_origin(request):
                raise HTTPException(403, "request from another site refused")
            form = await request.form()
            token = request.headers.get("x-csrf-token") or form.get("csrf_token")
            if not auth.same_token(token if isinstance(token, str) else None, session.csrf_token):
                raise HTTPException(403, "missing or wrong CSRF token; reload the page")
        return await handler(request, session)

    return endpoint
