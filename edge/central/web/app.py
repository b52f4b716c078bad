"""The operator web console: a Starlette app with Jinja2 pages, served by ``edge console``.

Every page and action checks the session and the account's role on the server; every form
carries the session's CSRF token and a POST from another origin is refused; every action is
written to the central audit log with the account's name. Device-supplied text reaches pages
only through Jinja2's autoescaping (no ``|safe`` anywhere).
"""

from __future__ import annotations

import logging
import secrets
from functools import partial

from markupsafe import escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge.central.web import auth
from edge.central.web.console import HERE, LOGIN_COOKIE, SESSION_COOKIE, Console, ConsoleConfig, guarded, same_origin

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "no-store")
        return response


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if request.headers.get("x-requested-with") == "fetch":
        return Response(str(exc.detail), status_code=status, media_type="text/plain")
    body = f"<!doctype html><title>{status}</title><p>{_esc(str(exc.detail))}</p><p><a href='/'>back</a></p>"
    return HTMLResponse(body, status_code=status)


def _esc(text: str) -> str:
    return str(escape(text))


def create_app(config: ConsoleConfig) -> Starlette:
    from edge.central.web import pages, queue, watchlists

    console = Console(config)
    routes = [
        Route("/login", partial(login_page, console), methods=["GET"]),
        Route("/login", partial(login_submit, console), methods=["POST"]),
        Route("/logout", guarded(console, None, partial(logout, console)), methods=["POST"]),
        Route("/", home, methods=["GET"]),
        *queue.routes(console),
        *pages.routes(console),
        *watchlists.routes(console),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: http_error},
    )


async def home(_request: Request) -> Response:
    return RedirectResponse("/queue", status_code=303)


def _safe_next(value: str | None) -> str:
    # Only a local path: never an absolute URL or //host (an open redirect after login).
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/queue"


async def login_page(console: Console, request: Request, error: str = "", status: int = 200) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = console.render(
        request,
        "login.html",
        None,
        status=status,
        error=error,
        login_token=nonce,
        next=_safe_next(request.query_params.get("next")),
    )
    # Login CSRF: the form's token must equal this cookie (double submit), so another site cannot log a victim in.
    response.set_cookie(
        LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/login"
    )
    return response


async def login_submit(console: Console, request: Request) -> Response:
    from edge.central.web import data

    form = await request.form()
    cookie = request.cookies.get(LOGIN_COOKIE)
    token = form.get("login_token")
    if not same_origin(request) or cookie is None or not auth.same_token(token if isinstance(token, str) else None, cookie):
        return await login_page(console, request, "the login form expired; please try again", status=403)
    name = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    client = request.client.host if request.client else "unknown"
    try:
        session = await run_in_threadpool(auth.login, console.engine, name, password, client)
    except auth.AuthError as exc:
        await run_in_threadpool(data.audit, console.store, name[:64] or "(none)", "login-failed", client, str(exc))
        return await login_page(console, request, str(exc), status=429 if isinstance(exc, auth.ThrottledError) else 401)
    await run_in_threadpool(data.audit, console.store, session.user, "login", client, session.role)
    response = RedirectResponse(_safe_next(str(form.get("next") or "")), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        console.signer.dumps(session.id),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=auth.SESSION_IDLE_S,
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


async def logout(console: Console, request: Request, session: auth.Session) -> Response:
    from edge.central.web import data

    await run_in_threadpool(auth.logout, console.engine, session.id)
    await run_in_threadpool(data.audit, console.store, session.user, "logout", "", "")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
