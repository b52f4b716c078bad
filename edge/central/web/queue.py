"""The review queue: candidate hits newest first, live by server-sent events, decisions in one click."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from edge.central.web import data, mutes, photos
from edge.central.web.auth import Session
from edge.central.web.console import Console, guarded
from edge.quality import QualityGate

log = logging.getLogger(__name__)

DECISIONS = ("confirm", "reject", "not-this-person", "escalate")  # as the store records them
DEFAULT_REASONS = {
    "confirm": "face matches the enrolment photos",
    "reject": "false alarm",
    "not-this-person": "a different person who looks alike",
    "escalate": "needs a second opinion",
}
REASONS = [
    {"value": "", "text": "usual reason for the button"},
    {"value": "face matches the enrolment photos", "text": "face matches the enrolment photos"},
    {"value": "a different person who looks alike", "text": "a different person who looks alike"},
    {"value": "image too poor to decide", "text": "image too poor to decide"},
    {"value": "face partly covered or turned", "text": "face partly covered or turned"},
    {"value": "needs a second opinion", "text": "needs a second opinion"},
    {"value": "test or staged", "text": "test or staged"},
]
STATES = ["", "candidate", "confirmed", "rejected", "not-this-person", "escalated"]
GATE = QualityGate()
HEARTBEAT_S = 15.0


def badges(face: dict[str, Any]) -> list[dict[str, Any]]:
    """Quality badges: amber where a match is less reliable than the gate's minimum suggests."""
    size, sharp, yaw, det = (face.get(k) for k in ("size_px", "sharpness", "yaw", "detector_score"))
    out = []
    if isinstance(size, int | float):
        out.append({"text": f"face {size:.0f} px", "ok": size >= 64, "hint": "faces under 64 px match less reliably"})
    if isinstance(sharp, int | float):
        out.append({"text": f"sharpness {sharp:.0f}", "ok": sharp >= 3 * GATE.min_sharpness, "hint": "blurred faces mislead"})
    if isinstance(yaw, int | float):
        out.append({"text": f"yaw {yaw:+.0f}°", "ok": abs(yaw) <= 30, "hint": "turned faces match less reliably"})
    if isinstance(det, int | float):
        out.append({"text": f"detector {det:.2f}", "ok": det >= 0.75, "hint": "detector confidence"})
    return out


def present(console: Console, hit: dict[str, Any]) -> dict[str, Any]:
    hit = dict(hit)
    hit["badges"] = badges(hit.get("face") or {})
    hit["photos"] = photos.photo_urls(console.config.photos_dir, hit["entry_id"])
    hit["last_review"] = hit["reviews"][-1] if hit.get("reviews") else None
    return hit


def filters_from(request: Request) -> data.HitFilter:
    q = request.query_params
    state = q.get("state") or None
    return data.HitFilter(
        device=(q.get("device") or "").strip() or None,
        camera=(q.get("camera") or "").strip() or None,
        entry=(q.get("entry") or "").strip() or None,
        state=state if state in STATES else None,
        muted=q.get("muted") == "1",
    )


def routes(console: Console) -> list[Route]:
    async def queue_page(request: Request, session: Session) -> Response:
        f = filters_from(request)
        hits = await run_in_threadpool(data.list_hits, console.store, f, 100)
        active = await run_in_threadpool(mutes.active, console.engine)
        query = urlencode({k: v for k, v in request.query_params.items() if k in ("device", "camera", "entry", "state", "muted")})
        return console.render(
            request, "queue.html", session, nav="queue", hits=[present(console, h) for h in hits], filters=f,
            states=STATES, reasons=REASONS, mutes=active, query=query,
        )  # fmt: skip

    async def card(request: Request, session: Session) -> Response:
        hit = await run_in_threadpool(data.get_hit, console.store, request.path_params["event_id"])
        if hit is None:
            raise HTTPException(404, "no such hit")
        return console.render(request, "_card.html", session, hit=present(console, hit), reasons=REASONS)

    async def thumbnail(request: Request, session: Session) -> Response:
        b64 = await run_in_threadpool(data.thumbnail_b64, console.store, request.path_params["event_id"])
        try:
            jpeg = base64.b64decode(b64 or "", validate=True)
        except (binascii.Error, ValueError):
            jpeg = b""
        if not jpeg.startswith(b"\xff\xd8"):  # only ever served as a JPEG; anything else the device sent is not shown
            raise HTTPException(404, "no thumbnail")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    async def decide(request: Request, session: Session) -> Response:
        form = await request.form()
        event_id = request.path_params["event_id"]
        choice = str(form.get("decision") or "")
        if choice not in DECISIONS:
            raise HTTPException(400, "choose Confirm, Reject, Not this person or Escalate")
        reason = str(form.get("reason") or "").strip()[:200] or DEFAULT_REASONS[choice]
        note = str(form.get("note") or "").strip()[:500]
        try:
            await run_in_threadpool(data.record_decision, console.store, event_id, choice, reason, note, session.user)
        except data.NotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        detail = json.dumps({"reason": reason, "note": note})
        await run_in_threadpool(data.audit, console.store, session.user, f"review:{choice}", event_id, detail)
        if request.headers.get("x-requested-with") == "fetch":
            return await card(request, session)
        return RedirectResponse(f"/queue#hit-{event_id}", status_code=303)

    async def add_mute(request: Request, session: Session) -> Response:
        form = await request.form()
        kind = str(form.get("kind") or "")
        target = str(form.get("entry_id") if kind == "entry" else form.get("camera") or "")
        try:
            hours = float(str(form.get("hours") or "1"))
            m = await run_in_threadpool(
                mutes.add, console.engine, kind, target, str(form.get("device_id") or "") or None, hours, session.user
            )
        except (ValueError, mutes.MuteError) as exc:
            raise HTTPException(400, str(exc)) from exc
        await run_in_threadpool(data.audit, console.store, session.user, f"mute:{kind}", m.label, f"until {m.until_text}")
        return RedirectResponse("/queue", status_code=303)

    async def end_mute(request: Request, session: Session) -> Response:
        m = await run_in_threadpool(mutes.end, console.engine, int(request.path_params["mute_id"]))
        if m is not None:
            await run_in_threadpool(data.audit, console.store, session.user, f"unmute:{m.kind}", m.label, "")
        return RedirectResponse("/queue", status_code=303)

    async def photo(request: Request, session: Session) -> Response:
        path = photos.photo_file(console.config.photos_dir, request.path_params["entry_id"], request.path_params["name"])
        if path is None:
            raise HTTPException(404, "no such photo")
        return FileResponse(path, media_type=photos.media_type(path), headers={"Cache-Control": "private, no-store"})

    async def events(request: Request, session: Session) -> Response:
        f = filters_from(request)

        async def stream() -> AsyncIterator[str]:
            cursor = await run_in_threadpool(data.latest_cursor, console.store)
            idle = 0.0
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                ids, cursor = await run_in_threadpool(data.hits_after, console.store, cursor, f)
                for event_id in ids:
                    yield f"event: hit\ndata: {json.dumps({'event_id': event_id})}\n\n"
                idle = 0.0 if ids else idle + console.config.poll_s
                if idle >= HEARTBEAT_S:
                    idle = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(console.config.poll_s)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})

    return [
        Route("/queue", guarded(console, "queue", queue_page), methods=["GET"]),
        Route("/events", guarded(console, "queue", events), methods=["GET"]),
        Route("/hits/{event_id}/card", guarded(console, "queue", card), methods=["GET"]),
        Route("/hits/{event_id}/thumbnail.jpg", guarded(console, "queue", thumbnail), methods=["GET"]),
        Route("/hits/{event_id}/decision", guarded(console, "decide", decide), methods=["POST"]),
        Route("/mutes", guarded(console, "mute", add_mute), methods=["POST"]),
        Route("/mutes/{mute_id:int}/end", guarded(console, "mute", end_mute), methods=["POST"]),
        Route("/photos/{entry_id}/{name}", guarded(console, "photos", photo), methods=["GET"]),
    ]
