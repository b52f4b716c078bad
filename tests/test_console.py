"""The web console over HTTP: logins, sessions, CSRF, roles, escaping, photos, decisions and mutes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from edge.central.store import Store
from edge.central.web import data
from edge.central.web.app import create_app
from edge.central.web.console import ConsoleConfig
from edge.central.web.db import open_store
from edge.cli import main
from tests.central_db import BACKENDS, database
from tests.console_helpers import PASSWORD, add_accounts, csrf_token, hit_doc, login_token, photos_dir, store_hit

BASE = "http://127.0.0.1:8000"
PERSON_A = [
    "compreface/CompreFace__embedding-calculator__sample_images__001_A_jpg.jpg",
    "compreface/CompreFace__embedding-calculator__sample_images__002_A_jpg.jpg",
]


@pytest.fixture(scope="module")
def with_accounts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the four accounts, made once: argon2 hashing is slow on purpose."""
    path = tmp_path_factory.mktemp("accounts") / "central.db"
    s = open_store(str(path))
    add_accounts(s)
    s.close()
    return path


@pytest.fixture
def store(tmp_path: Path, with_accounts: Path) -> Iterator[Store]:
    shutil.copy(with_accounts, tmp_path / "central.db")
    s = open_store(str(tmp_path / "central.db"))
    yield s
    s.close()


@pytest.fixture
def app_client(store: Store, tmp_path: Path, faces_dir: Path) -> Iterator[TestClient]:
    photos = photos_dir(tmp_path, faces_dir, {"case-A": PERSON_A})
    with TestClient(create_app(ConsoleConfig(store=store, photos_dir=photos)), base_url=BASE) as c:
        yield c


def login(client: TestClient, user: str, password: str = PASSWORD, next_url: str = "/queue") -> Any:
    token = login_token(client.get("/login").text)
    return client.post(
        "/login", data={"username": user, "password": password, "login_token": token, "next": next_url}, follow_redirects=False
    )


def decide(client: TestClient, event_id: str, decision: str, token: str | None, **headers: str) -> int:
    form = {"decision": decision, "reason": "", "note": "seen at the gate"}
    if token is not None:
        form["csrf_token"] = token
    return int(client.post(f"/hits/{event_id}/decision", data=form, headers=headers, follow_redirects=False).status_code)


def test_pages_need_a_login_and_the_session_cookie_is_locked_down(app_client: TestClient) -> None:
    r = app_client.get("/queue", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert login(app_client, "rita", "wrong password!").status_code == 401
    r = login(app_client, "rita")
    assert r.status_code == 303 and r.headers["location"] == "/queue"
    cookie = r.headers["set-cookie"].lower()
    assert "edge_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    page = app_client.get("/queue")
    assert page.status_code == 200 and "rita (reviewer)" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_after_login_only_local_pages_are_followed(app_client: TestClient) -> None:
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = login(app_client, "rita", next_url=evil)
        assert r.headers["location"] == "/queue"


def test_the_login_form_needs_its_own_token(app_client: TestClient) -> None:
    app_client.get("/login")
    r = app_client.post("/login", data={"username": "rita", "password": PASSWORD, "login_token": "forged"})
    assert r.status_code == 403 and "expired" in r.text
    fresh = TestClient(app_client.app, base_url=BASE)  # no login cookie at all, as from another site's form
    assert fresh.post("/login", data={"username": "rita", "password": PASSWORD}).status_code == 403


def test_logins_are_throttled_and_audited(app_client: TestClient, store: Store) -> None:
    for _ in range(5):
        assert login(app_client, "rita", "not the password").status_code == 401
    r = login(app_client, "rita")  # the right password, too late
    assert r.status_code == 429 and "too many failed logins" in r.text
    assert login(app_client, "ada").status_code == 303  # another account is not locked out
    actions = [(e["actor"], e["action"]) for e in data.audit_entries(store)]
    assert actions.count(("rita", "login-failed")) == 6 and ("ada", "login") in actions


def test_every_form_needs_the_sessions_csrf_token_and_our_origin(app_client: TestClient, store: Store) -> None:
    doc = hit_doc()
    store_hit(store, doc)
    other = TestClient(app_client.app, base_url=BASE)
    login(other, "ada")
    other_token = csrf_token(other.get("/queue").text)
    login(app_client, "rita")
    token = csrf_token(app_client.get("/queue").text)
    assert other_token != token
    assert decide(app_client, doc["event_id"], "confirm", None) == 403
    assert decide(app_client, doc["event_id"], "confirm", "x" * len(token)) == 403
    assert decide(app_client, doc["event_id"], "confirm", other_token) == 403
    assert decide(app_client, doc["event_id"], "confirm", token, origin="http://evil.example") == 403
    assert data.get_hit(store, doc["event_id"])["state"] == "candidate"  # type: ignore[index]
    assert decide(app_client, doc["event_id"], "confirm", token, origin=BASE) == 303
    assert data.get_hit(store, doc["event_id"])["state"] == "confirmed"  # type: ignore[index]


def test_logging_out_ends_the_session_and_forged_cookies_are_refused(app_client: TestClient) -> None:
    login(app_client, "rita")
    page = app_client.get("/queue")
    stolen = app_client.cookies.get("edge_session")
    assert app_client.post("/logout", data={"csrf_token": csrf_token(page.text)}, follow_redirects=False).status_code == 303
    replay = TestClient(app_client.app, base_url=BASE, cookies={"edge_session": stolen or ""})
    assert replay.get("/queue", follow_redirects=False).status_code == 303
    forged = TestClient(app_client.app, base_url=BASE, cookies={"edge_session": (stolen or "")[:-2] + "xx"})
    assert forged.get("/queue", follow_redirects=False).status_code == 303


def test_roles_are_enforced_on_the_server(app_client: TestClient, store: Store) -> None:
    doc = hit_doc()
    store_hit(store, doc)
    login(app_client, "rita")
    assert app_client.get("/audit").status_code == 403
    assert app_client.get("/export.json").status_code == 403
    auditor = TestClient(app_client.app, base_url=BASE)
    login(auditor, "otto")
    token = csrf_token(auditor.get("/audit").text)
    assert decide(auditor, doc["event_id"], "confirm", token) == 403
    exported = auditor.get("/export.json")
    assert exported.status_code == 200 and doc["event_id"] in exported.text
    assert ("otto", "export") in [(e["actor"], e["action"]) for e in data.audit_entries(store)]


HOSTILE = ['<script>window.pwned=1</script>[/]"', "x' onmouseover='alert(1)", '"><img src=x onerror=alert(1)>']


def test_device_supplied_text_is_escaped_on_every_page(app_client: TestClient, store: Store) -> None:
    docs = [hit_doc(entry=h, camera=h, device=h, label=h) for h in HOSTILE]
    for d in docs:
        store_hit(store, d)
    login(app_client, "ada")
    pages = [app_client.get("/queue").text, app_client.get("/audit").text, app_client.get("/fleet").text]
    pages += [app_client.get(f"/hits/{d['event_id']}/card").text for d in docs]
    for page in pages:
        for h in HOSTILE:
            assert h not in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;[/]&#34;" in pages[0]


def test_enrolment_photos_are_served_only_to_accounts_and_only_from_the_photo_folder(
    app_client: TestClient, store: Store
) -> None:
    store_hit(store, hit_doc(entry="case-A"))
    name = Path(PERSON_A[0]).name
    assert app_client.get(f"/photos/case-A/{name}", follow_redirects=False).status_code == 303
    login(app_client, "rita")
    page = app_client.get("/queue").text
    assert f"/photos/case-A/{name}" in page
    photo = app_client.get(f"/photos/case-A/{name}")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg" and photo.content[:2] == b"\xff\xd8"
    for bad in ("/photos/case-A/..%2F..%2Fcentral.db", "/photos/..%2Fcase-A/" + name, "/photos/case-A/%2Fetc%2Fpasswd"):
        assert app_client.get(bad).status_code == 404


def test_decisions_are_appended_never_overwritten(app_client: TestClient, store: Store) -> None:
    doc = hit_doc()
    store_hit(store, doc)
    login(app_client, "rita")
    token = csrf_token(app_client.get("/queue").text)
    assert decide(app_client, doc["event_id"], "confirm", token) == 303
    assert decide(app_client, doc["event_id"], "not-this-person", token) == 303
    assert decide(app_client, doc["event_id"], "approve", token) == 400
    hit = data.get_hit(store, doc["event_id"])
    assert hit is not None and hit["state"] == "not-this-person"
    assert [(r["decision"], r["reviewer"], r["reason"]) for r in hit["reviews"]] == [
        ("confirm", "rita", "face matches the enrolment photos"),
        ("not-this-person", "rita", "a different person who looks alike"),
    ]
    exported = json.loads(data.export_text(store, "json"))
    rows = exported["hits"] if isinstance(exported, dict) else exported
    assert [r["decision"] for r in rows[0]["history"]] == ["confirm", "not-this-person"]


def test_a_muted_entry_leaves_the_queue_until_unmuted(app_client: TestClient, store: Store) -> None:
    doc = hit_doc(entry="case-noisy")
    store_hit(store, doc)
    login(app_client, "rita")
    token = csrf_token(app_client.get("/queue").text)
    form = {"csrf_token": token, "kind": "entry", "entry_id": "case-noisy", "device_id": "pole-1", "camera": "gate", "hours": "8"}
    assert app_client.post("/mutes", data=form, follow_redirects=False).status_code == 303
    assert doc["event_id"] not in app_client.get("/queue").text
    assert doc["event_id"] in app_client.get("/queue?muted=1").text
    mute_id = sa.select(sa.func.max(sa.text("id"))).select_from(sa.table("console_mutes"))
    with store.engine.connect() as c:
        mid = c.execute(mute_id).scalar()
    assert app_client.post(f"/mutes/{mid}/end", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert doc["event_id"] in app_client.get("/queue").text
    actions = [e["action"] for e in data.audit_entries(store)]
    assert "mute:entry" in actions and "unmute:entry" in actions


def test_add_user_refuses_bad_input_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "c.db")
    pw = tmp_path / "pw"
    pw.write_text("short\n")
    assert main(["console", "add-user", "eve", "--role", "reviewer", "--password-file", str(pw), "--db", db]) == 2
    assert "at least 10 characters" in capsys.readouterr().err
    assert main(["console", "add-user", "eve", "--role", "reviewer", "--password-file", str(tmp_path / "none"), "--db", db]) == 2
    assert "cannot read the password file" in capsys.readouterr().err
    pw.write_text("a long enough password\n")
    assert main(["console", "add-user", "e<v>e", "--role", "reviewer", "--password-file", str(pw), "--db", db]) == 2
    assert main(["console", "add-user", "eve", "--role", "admin", "--password-file", str(pw), "--db", db]) == 0
    assert main(["console", "add-user", "eve", "--role", "admin", "--password-file", str(pw), "--db", db]) == 2
    assert "exists already" in capsys.readouterr().err


def test_a_watchlist_is_built_signed_offline_and_published_with_the_devices_checks(
    store: Store, tmp_path: Path, faces_dir: Path
) -> None:
    import cv2

    from edge.watchlist.keys import generate_keypair
    from tests.broker import Broker
    from tests.mqtt_helpers import Subscriber

    photos = photos_dir(tmp_path, faces_dir, {"case-A": PERSON_A})
    original = cv2.imread(str(faces_dir / PERSON_A[1]))
    assert original is not None
    tiny = cv2.resize(original, (48, 48))
    cv2.imwrite(str(photos / "case-A" / "tiny.jpg"), tiny)
    key, pub = generate_keypair(tmp_path / "keys")
    other_key, _ = generate_keypair(tmp_path / "other")
    with Broker(tmp_path) as broker:
        config = ConsoleConfig(
            store=store, photos_dir=photos, broker=f"127.0.0.1:{broker.port}", workdir=tmp_path / "work", public_keys=[pub]
        )
        client = TestClient(create_app(config), base_url=BASE)
        login(client, "wanda")
        page = client.get("/watchlists").text
        assert "refused:" in page and page.count("usable ·") == 2  # the tiny photo fails the device's gate
        token = csrf_token(page)
        built = client.post("/watchlists/build", data={"csrf_token": token, "name": "city", "version": "1", "expires_days": "30"})
        assert built.status_code == 200 and "built unsigned bundle city-v1" in built.text
        manifest = client.get("/watchlists/bundles/city-v1/manifest.json").content
        assert client.post("/watchlists/publish", data={"csrf_token": token, "folder": "city-v1"}).status_code == 400

        offline = tmp_path / "offline"
        offline.mkdir()
        (offline / "manifest.json").write_bytes(manifest)
        assert main(["watchlist", "sign", str(offline), "--key", str(other_key)]) == 0  # a key the console does not trust
        files = {"manifest": ("manifest.json", (offline / "manifest.json").read_bytes()),
                 "signature": ("manifest.sig", (offline / "manifest.sig").read_bytes())}  # fmt: skip
        refused = client.post("/watchlists/bundles/city-v1/signature", data={"csrf_token": token}, files=files)
        assert refused.status_code == 400 and "signature refused" in refused.text
        (offline / "manifest.json").write_bytes(manifest)
        assert main(["watchlist", "sign", str(offline), "--key", str(key)]) == 0
        files = {"manifest": ("manifest.json", (offline / "manifest.json").read_bytes()),
                 "signature": ("manifest.sig", (offline / "manifest.sig").read_bytes())}  # fmt: skip
        r = client.post("/watchlists/bundles/city-v1/signature", data={"csrf_token": token}, files=files, follow_redirects=False)
        assert r.status_code == 303

        reviewer = TestClient(create_app(config), base_url=BASE)
        login(reviewer, "rita")
        rtoken = csrf_token(reviewer.get("/queue").text)
        assert reviewer.get("/watchlists/bundles/city-v1/manifest.json").status_code == 403
        assert reviewer.post("/watchlists/publish", data={"csrf_token": rtoken, "folder": "city-v1"}).status_code == 403

        sub = Subscriber(broker.port, ["edge/v1/watchlists/#"], client_id="test-fleet").connect()
        published = client.post("/watchlists/publish", data={"csrf_token": token, "folder": "city-v1"})
        assert published.status_code == 200 and "published city v1" in published.text
        again = client.post("/watchlists/publish", data={"csrf_token": token, "folder": "city-v1"})
        assert again.status_code == 400 and "not published" in again.text  # a replay, as a device would refuse it
        sub.sync()
        assert [m["schema"] for m in sub.json("/manifest")] == ["edge.watchlist-bundle/1"]
        sub.disconnect()
    actions = [(e["actor"], e["action"]) for e in data.audit_entries(store)]
    for action in ("watchlist:build", "watchlist:signature-refused", "watchlist:signature", "watchlist-publish"):
        assert ("wanda", action) in actions


def test_a_thumbnail_is_shown_only_when_the_device_sent_a_real_jpeg(
    app_client: TestClient, store: Store, faces_dir: Path
) -> None:
    import base64

    import cv2

    image = cv2.imread(str(faces_dir / PERSON_A[0]))
    assert image is not None
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(image, (112, 112)))
    assert ok
    with_thumb = hit_doc(thumbnail_jpeg_b64=base64.b64encode(jpeg.tobytes()).decode())
    html_thumb = hit_doc(thumbnail_jpeg_b64=base64.b64encode(b"<html><script>alert(1)</script>").decode())
    without = hit_doc()
    for d in (with_thumb, html_thumb, without):
        store_hit(store, d)
    login(app_client, "rita")
    page = app_client.get("/queue").text
    assert f"/hits/{with_thumb['event_id']}/thumbnail.jpg" in page and "device sends none" in page
    r = app_client.get(f"/hits/{with_thumb['event_id']}/thumbnail.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content == jpeg.tobytes()
    assert app_client.get(f"/hits/{html_thumb['event_id']}/thumbnail.jpg").status_code == 404
    assert app_client.get(f"/hits/{without['event_id']}/thumbnail.jpg").status_code == 404


@pytest.mark.parametrize("backend", BACKENDS)
def test_queue_filters_mutes_feedback_and_the_live_feed_work_alike_on_sqlite_and_postgresql(backend: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from edge.central.web import auth

    with database(backend, tmp_path) as url:
        s = open_store(url)
        try:
            auth.add_user(s.engine, "rita", "reviewer", PASSWORD)
            a, b, c = hit_doc(entry="case-A"), hit_doc(entry="case-B", camera="side"), hit_doc(entry="case-A", device="pole-2")
            for d in (a, b, c):
                store_hit(s, d)
            client = TestClient(create_app(ConsoleConfig(store=s)), base_url=BASE)
            login(client, "rita")
            token = csrf_token(client.get("/queue").text)
            assert decide(client, a["event_id"], "not-this-person", token) == 303

            def shown(query: str) -> set[str]:
                page = client.get(f"/queue?{query}").text
                return {d["event_id"] for d in (a, b, c) if f'id="hit-{d["event_id"]}"' in page}

            assert shown("") == {a["event_id"], b["event_id"], c["event_id"]}
            assert shown("state=not-this-person") == {a["event_id"]}
            assert shown("state=candidate") == {b["event_id"], c["event_id"]}
            assert shown("device=pole-2") == {c["event_id"]}
            assert shown("camera=side&entry=case-B") == {b["event_id"]}
            form = {
                "csrf_token": token,
                "kind": "camera",
                "entry_id": "case-B",
                "device_id": "pole-1",
                "camera": "side",
                "hours": "1",
            }
            assert client.post("/mutes", data=form, follow_redirects=False).status_code == 303
            assert shown("") == {a["event_id"], c["event_id"]}
            assert data.entry_feedback(s) == {"case-A": {"false": [0.71], "confirmed": []}}
            ids, _ = data.hits_after(s, data.LiveCursor(datetime.now(UTC) - timedelta(seconds=5)), data.HitFilter(muted=True))
            assert set(ids) == {a["event_id"], b["event_id"], c["event_id"]}
        finally:
            s.close()
