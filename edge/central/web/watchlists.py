"""The Watchlists page: entries with their enrolment photos and quality, review feedback, and the bundle workflow.

Build an unsigned bundle here (through the device's own pipeline and quality gate), download its
manifest, sign it offline with ``edge watchlist sign``, upload the signed manifest and signature,
and publish with the checks of ``edge watchlist verify`` and ``edge watchlist publish``.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from edge.central.web import data, photos
from edge.central.web.auth import Session
from edge.central.web.console import Console, guarded
from edge.errors import EdgeError

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_UPLOAD = 1 << 20


def suggest_threshold(scores: dict[str, list[float]], current: float | None) -> dict[str, Any] | None:
    """A per-entry threshold just above every hit reviewers called "not this person", with what it would have cost."""
    false, confirmed = scores.get("false", []), scores.get("confirmed", [])
    if not false:
        return None
    t = math.ceil((max(false) + 0.01) * 200) / 200  # next 0.005 step above the worst false match
    if current is not None and t <= current:
        return None
    kept = sum(s >= t for s in confirmed)
    return {
        "threshold": t,
        "evidence": f"{len(false)} hit(s) marked not this person (scores {', '.join(f'{s:.3f}' for s in sorted(false))}); "
        f"{kept} of {len(confirmed)} confirmed hit(s) would still alert",
    }


def bundles_dir(console: Console) -> Path:
    base = console.config.workdir or Path.cwd() / "edge-console"
    return base / "bundles"


def _published(console: Console) -> dict[str, Any]:
    return data.published_versions(console.store)


def list_bundles(console: Console) -> list[dict[str, Any]]:
    from edge.watchlist.errors import BundleError
    from edge.watchlist.manifest import parse_manifest

    published = _published(console)
    out: list[dict[str, Any]] = []
    root = bundles_dir(console)
    for folder in sorted(root.iterdir() if root.is_dir() else [], reverse=True):
        if not (folder / "manifest.json").is_file():
            continue
        try:
            m = parse_manifest((folder / "manifest.json").read_bytes())
        except BundleError as exc:
            out.append({"folder": folder.name, "error": str(exc)})
            continue
        live = published.get(m.name, {})
        out.append({
            "folder": folder.name, "name": m.name, "version": m.version, "entries": m.entry_count, "expires_at": m.expires_at,
            "signed": (folder / "manifest.sig").is_file(), "published": live.get("version") == m.version, "error": "",
        })  # fmt: skip
    return out


def build(console: Console, name: str, version: int, expires_days: float) -> tuple[str, list[str]]:
    from edge.analyze import FaceAnalyser
    from edge.config import RecognitionSettings
    from edge.distant_views import DistantViews
    from edge.operator.enrol import enrol, requests_from_folder
    from edge.watchlist.bundle import build_unsigned, write_bundle
    from edge.watchlist.manifest import now_utc

    if console.config.photos_dir is None:
        raise EdgeError("the console was started without --photos: there is nothing to build from")
    if not NAME_RE.fullmatch(name) or not 0 < version < 2**31 or not 0 < expires_days <= 366:
        raise EdgeError("a watchlist name (letters, digits, _.-), a version from 1 and a lifetime of up to 366 days")
    settings = RecognitionSettings(accelerator="cpu")
    analyser = FaceAnalyser.from_settings(settings)
    views = DistantViews.from_settings(settings.enrol_views)
    report = enrol(analyser, requests_from_folder(console.config.photos_dir), progress=False, views=views)
    notes = [f"{p.parent.name}/{p.name}: {why}" for p, why in report.rejected]
    notes += [f"entry {e}: no usable photo, left out" for e in report.empty]
    manifest, chunks = build_unsigned(
        report.entries, name=name, version=version, embedding_space=str(analyser.embedder.embedding_space),
        expires_at=now_utc() + timedelta(days=expires_days),
    )  # fmt: skip
    note = analyser.threshold.explain(manifest.entry_count)  # a large list is matched stricter: say so before publishing
    if note:
        notes.append(f"matching (at the default recognition.max_fpir): {note}")
    folder = bundles_dir(console) / f"{name}-v{version}"
    write_bundle(folder, manifest.to_bytes(), chunks, None)
    return folder.name, notes


def attach_signature(console: Console, folder: Path, manifest_bytes: bytes, signature: bytes) -> None:
    """Accept a manifest signed offline only if it is the one built here, and its signature verifies."""
    from edge.watchlist.bundle import verify_signature
    from edge.watchlist.keys import trusted_keys
    from edge.watchlist.manifest import parse_manifest

    built = parse_manifest((folder / "manifest.json").read_bytes())
    signed = parse_manifest(manifest_bytes)
    if {**signed.__dict__, "key_id": ""} != {**built.__dict__, "key_id": ""}:
        raise EdgeError("the uploaded manifest is not the one built here (different version, entries or chunks)")
    if not console.config.public_keys:
        raise EdgeError("the console trusts no public key (start it with --public-key)")
    verify_signature(manifest_bytes, signature, trusted_keys(console.config.public_keys))
    (folder / "manifest.json").write_bytes(manifest_bytes)
    (folder / "manifest.sig").write_bytes(signature)


def publish(console: Console, folder: Path, by: str) -> str:
    from edge.operator.watchlist_cli import verify_folder
    from edge.operator.watchlist_publish import cmd_publish

    if not console.config.broker:
        raise EdgeError("the console was started without --broker: nowhere to publish")
    if not console.config.public_keys:
        raise EdgeError("the console trusts no public key (start it with --public-key)")
    published = _published(console)
    from edge.watchlist.manifest import parse_manifest, parse_time

    name = parse_manifest((folder / "manifest.json").read_bytes()).name
    current = published.get(name, {}).get("version")
    manifest, _ = verify_folder(folder, console.config.public_keys, current_version=current, models_dir=None, embedder=None)
    auth = {"ca": None, "cert": None, "key": None, "username": None, "password_file": None, **console.config.broker_auth}
    # db=None: the publication is recorded below on the console's own store, with the account's name.
    args = argparse.Namespace(
        bundle=folder, broker=console.config.broker, public_key=list(console.config.public_keys), force=False, timeout=60.0,
        db=None, by=None, **auth,
    )  # fmt: skip
    if cmd_publish(args) != 0:
        raise EdgeError(f"{name} was not published: the checks before publishing refused it (see the console's log)")
    expires = parse_time(manifest.expires_at, "expires_at")
    console.store.publish_watchlist(manifest.name, manifest.version, manifest.sha256, expires, by)  # audited by the store
    return f"{manifest.name} v{manifest.version}"


def _folder(console: Console, name: str) -> Path:
    folder = bundles_dir(console) / name
    if not NAME_RE.fullmatch(name) or not (folder / "manifest.json").is_file():
        raise HTTPException(404, "no such bundle")
    return folder


def routes(console: Console) -> list[Route]:
    async def page(request: Request, session: Session, message: str = "", error: str = "", status: int = 200) -> Response:
        feedback = await run_in_threadpool(data.entry_feedback, console.store)
        entries = []
        root = console.config.photos_dir
        for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root else []:
            files = photos.entry_photos(root, sub.name)
            quality = [await run_in_threadpool(console.quality.check, p) for p in files]
            fb = feedback.get(sub.name, {"false": [], "confirmed": []})
            entries.append({
                "entry_id": sub.name, "photos": list(zip(photos.photo_urls(root, sub.name), quality, strict=False)),
                "false": len(fb["false"]), "confirmed": len(fb["confirmed"]), "suggestion": suggest_threshold(fb, None),
            })  # fmt: skip
        bundles = await run_in_threadpool(list_bundles, console)
        return console.render(
            request, "watchlists.html", session, status=status, nav="watchlists", entries=entries, bundles=bundles,
            message=message, error=error, published=_published(console),
        )  # fmt: skip

    async def view(request: Request, session: Session) -> Response:
        return await page(request, session)

    async def do_build(request: Request, session: Session) -> Response:
        form = await request.form()
        try:
            folder, notes = await run_in_threadpool(
                build, console, str(form.get("name") or ""), int(str(form.get("version") or 0)),
                float(str(form.get("expires_days") or 30)),
            )  # fmt: skip
        except (EdgeError, ValueError) as exc:
            return await page(request, session, error=str(exc), status=400)
        await run_in_threadpool(data.audit, console.store, session.user, "watchlist:build", folder, "; ".join(notes)[:2000])
        return await page(
            request, session, message=f"built unsigned bundle {folder}" + (f" ({len(notes)} photos refused)" if notes else "")
        )

    async def manifest(request: Request, session: Session) -> Response:
        folder = _folder(console, request.path_params["folder"])
        body = (folder / "manifest.json").read_bytes()
        return Response(
            body, media_type="application/json", headers={"Content-Disposition": 'attachment; filename="manifest.json"'}
        )

    async def signature(request: Request, session: Session) -> Response:
        folder = _folder(console, request.path_params["folder"])
        form = await request.form()
        m, s = form.get("manifest"), form.get("signature")
        if not isinstance(m, UploadFile) or not isinstance(s, UploadFile):
            return await page(request, session, error="upload both the signed manifest.json and manifest.sig", status=400)
        try:
            await run_in_threadpool(attach_signature, console, folder, await m.read(MAX_UPLOAD), await s.read(4096))
        except EdgeError as exc:
            await run_in_threadpool(data.audit, console.store, session.user, "watchlist:signature-refused", folder.name, str(exc))
            return await page(request, session, error=f"signature refused: {exc}", status=400)
        await run_in_threadpool(data.audit, console.store, session.user, "watchlist:signature", folder.name, "")
        return RedirectResponse("/watchlists", status_code=303)

    async def do_publish(request: Request, session: Session) -> Response:
        form = await request.form()
        folder = _folder(console, str(form.get("folder") or ""))
        try:
            what = await run_in_threadpool(publish, console, folder, session.user)
        except EdgeError as exc:
            await run_in_threadpool(data.audit, console.store, session.user, "watchlist:publish-refused", folder.name, str(exc))
            return await page(request, session, error=f"not published: {exc}", status=400)
        await run_in_threadpool(data.audit, console.store, session.user, "watchlist:publish", what, folder.name)
        return await page(request, session, message=f"published {what}")

    return [
        Route("/watchlists", guarded(console, "watchlists", view), methods=["GET"]),
        Route("/watchlists/build", guarded(console, "publish", do_build), methods=["POST"]),
        Route("/watchlists/bundles/{folder}/manifest.json", guarded(console, "publish", manifest), methods=["GET"]),
        Route("/watchlists/bundles/{folder}/signature", guarded(console, "publish", signature), methods=["POST"]),
        Route("/watchlists/publish", guarded(console, "publish", do_publish), methods=["POST"]),
    ]
