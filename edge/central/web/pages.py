"""Fleet, watchlists, audit log and export pages."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.central.web import data
from edge.central.web.auth import Session
from edge.central.web.console import Console, guarded

log = logging.getLogger(__name__)


def routes(console: Console) -> list[Route]:
    async def audit_page(request: Request, session: Session) -> Response:
        entries = await run_in_threadpool(data.audit_entries, console.store, 300)
        return console.render(request, "audit.html", session, nav="audit", entries=entries)

    async def fleet_page(request: Request, session: Session) -> Response:
        devices = await run_in_threadpool(data.fleet_view, console.store)
        published = await run_in_threadpool(data.published_versions, console.store)
        versions = {name: p["version"] for name, p in published.items()}
        return console.render(request, "fleet.html", session, nav="fleet", devices=devices, published=versions)

    async def export(request: Request, session: Session) -> Response:
        fmt = request.path_params["fmt"]
        text = await run_in_threadpool(data.export_text, console.store, fmt)
        await run_in_threadpool(data.audit, console.store, session.user, "export", fmt, "")
        media = "application/json" if fmt == "json" else "text/csv"
        return Response(text, media_type=media, headers={"Content-Disposition": f'attachment; filename="hits.{fmt}"'})

    return [
        Route("/audit", guarded(console, "audit", audit_page), methods=["GET"]),
        Route("/fleet", guarded(console, "fleet", fleet_page), methods=["GET"]),
        Route("/export.{fmt:str}", guarded(console, "export", export), methods=["GET"]),
    ]
