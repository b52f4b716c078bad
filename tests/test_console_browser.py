"""The web console in a real browser: Debian's chromium driven by Playwright, against `edge console` on loopback.

Screenshots go to build/screenshots/ as test artefacts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.central.web import data
from edge.central.web.db import open_store
from edge.cli import main
from tests.broker import Broker, free_port
from tests.console_helpers import PASSWORD, add_accounts, hit_doc, photos_dir, store_hit
from tests.mqtt_helpers import wait_for_text

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
PERSON_A = [
    "compreface/CompreFace__embedding-calculator__sample_images__001_A_jpg.jpg",
    "compreface/CompreFace__embedding-calculator__sample_images__002_A_jpg.jpg",
]
TIMEOUT_MS = 15_000


class Console:
    """`edge console --broker` as an operator starts it: it serves the pages and ingests from a real Mosquitto."""

    def __init__(self, workdir: Path, faces: Path, broker_port: int) -> None:
        self.workdir = workdir
        self.db = workdir / "central.db"
        self.store = open_store(str(self.db))
        add_accounts(self.store, ("rita", "ada", "otto"))
        self.photos = photos_dir(workdir, faces, {"case-A": PERSON_A})
        self.broker_port = broker_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "edge.cli", "console", "--db", str(self.db), "--listen", f"127.0.0.1:{self.port}"]
        cmd += ["--photos", str(self.photos), "--broker", f"127.0.0.1:{self.broker_port}", "--client-id", "console-test"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir)
        assert wait_for_text(self.log, "edge console on", 30), self.log.read_text()
        # A retained status reaches the ingest worker whenever it subscribes: once it is stored, hits will be too.
        publish(self.broker_port, "edge/v1/pole-1/status", STATUS, retain=True)
        assert wait_until(lambda: bool(data.fleet_view(self.store)), 30), self.log.read_text()

    def deliver(self, doc: dict[str, Any]) -> None:
        publish(self.broker_port, f"edge/v1/{doc['device_id']}/hits", doc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)


def publish(port: int, topic: str, doc: dict[str, Any], retain: bool = False) -> None:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, json.dumps(doc), qos=1, retain=retain).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


STATUS = {
    "schema": "edge.status/1", "device_id": "pole-1", "state": "online", "ts": "2026-11-22T10:00:00.000Z",
    "outbox": {"depth": 0, "oldest_age_s": None, "dropped": 0},
    "watchlist": {"name": "city", "version": 3, "sha256": "a" * 64, "entries": 10, "last_sync": None},
}  # fmt: skip


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> Iterator[Console]:
    workdir = tmp_path_factory.mktemp("console")
    with Broker(workdir) as broker:
        c = Console(workdir, faces_dir, broker.port)
        c.start()
        yield c
        c.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (tools/test.sh does it)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    yield pg
    context.close()


def log_in(page: Any, console: Console, user: str) -> None:
    page.goto(f"{console.url}/queue")
    assert "/login" in page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url(f"{console.url}/queue")


def shoot(page: Any, name: str) -> None:
    """A full-page screenshot once every image has loaded (build/screenshots/NAME.png)."""
    # Polled from here: Playwright's wait_for_function evaluates strings, which the page's CSP forbids.
    assert wait_until(lambda: page.evaluate("Array.from(document.images).every((i) => i.complete)"), TIMEOUT_MS / 1000)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def wait_live(page: Any) -> None:
    page.wait_for_selector("#live[data-connected='1']", state="attached")


def test_a_reviewer_sees_a_hit_arrive_live_and_decides_in_one_click(page: Any, console: Console) -> None:
    log_in(page, console, "rita")
    wait_live(page)
    doc = hit_doc(entry="case-A", label="Person A")
    console.deliver(doc)  # a device's hit through the real broker
    card = page.locator(f"#hit-{doc['event_id']}")
    card.wait_for()
    assert card.locator(".entry").inner_text() == "case-A" and "Person A" in card.inner_text()
    assert "Candidate for human review" in card.inner_text()
    assert card.locator("figure.enrolled img").count() == 2
    shoot(page, "queue-hit-arrived")
    widths = card.locator("figure.enrolled img").evaluate_all("(imgs) => imgs.map((i) => i.naturalWidth)")
    assert all(w > 0 for w in widths), "the enrolment photos did not load beside the hit"
    card.get_by_role("button", name="Confirm").click()  # the one click: the default reason is already chosen
    page.locator(f"#hit-{doc['event_id']} .state strong").filter(has_text="confirmed").wait_for()
    shoot(page, "queue-decided")
    assert main(["alerts", "--db", str(console.db), "--export", "json", "--out", str(console.workdir / "export.json")]) == 0
    exported = json.loads((console.workdir / "export.json").read_text())
    rows = exported["hits"] if isinstance(exported, dict) else exported
    (row,) = [h for h in rows if h["event_id"] == doc["event_id"]]
    assert [(r["decision"], r["reviewer"]) for r in row["history"]] == [("confirm", "rita")]
    assert any(e["actor"] == "rita" and e["action"] == "review:confirm" for e in data.audit_entries(console.store))
    live = {**STATUS, "cameras": [{"camera": "gate", "state": "reopening", "frames": 10, "dropped": 0,
                                   "error": "rtsp://admin:s3cret@10.0.0.7/live timed out"}]}  # fmt: skip
    publish(console.broker_port, "edge/v1/pole-1/status", live)  # heard live now, not a retained replay
    assert wait_until(lambda: data.fleet_view(console.store)[0]["state"] == "online", 15)
    page.goto(f"{console.url}/fleet")
    row = page.locator("#device-pole-1").inner_text()
    assert row.startswith("pole-1") and "online" in row and "rtsp://***@10.0.0.7" in row and "s3cret" not in page.content()
    shoot(page, "fleet")
    page.get_by_role("button", name="Log out").click()
    log_in(page, console, "otto")  # the auditor sees the decision in the audit log
    page.goto(f"{console.url}/audit")
    row = page.locator("tr", has_text=doc["event_id"]).first
    assert "rita" in row.inner_text() and "review:confirm" in row.inner_text()
    shoot(page, "audit-log")


HOSTILE = "<script>window.pwned=1</script>[/]\"'"


def test_hostile_device_text_renders_as_plain_text(page: Any, console: Console) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    # The label is free text in the hit schema: it arrives through the broker as any device would send it.
    labelled = hit_doc(entry="case-A", label='<img src=x onerror="alert(1)">' + HOSTILE)
    console.deliver(labelled)
    # Ids are pattern-checked at ingest; stored directly, they check the pages do not rely on that.
    doc = hit_doc(entry=HOSTILE, camera=HOSTILE + "cam", device="pole-<b>9</b>", label='<img src=x onerror="alert(1)">')
    store_hit(console.store, doc)
    assert wait_until(lambda: data.get_hit(console.store, labelled["event_id"]) is not None, 15)
    log_in(page, console, "ada")
    assert page.locator(f"#hit-{labelled['event_id']} .label").inner_text() == labelled["label"]
    card = page.locator(f"#hit-{doc['event_id']}")
    assert card.locator(".entry").inner_text() == HOSTILE
    assert card.locator(".camera").inner_text() == HOSTILE + "cam"
    assert card.locator(".device").inner_text() == "pole-<b>9</b>"
    assert page.evaluate("window.pwned") is None and dialogs == []
    assert page.locator("article.hit script, article.hit b, article.hit img[src=x]").count() == 0
    shoot(page, "queue-hostile-text")


def test_a_reviewer_cannot_publish_or_skip_the_csrf_token(page: Any, console: Console) -> None:
    log_in(page, console, "rita")
    assert page.get_by_role("link", name="Watchlists").count() == 0
    status = page.evaluate(
        """async () => {
            const csrf = document.body.dataset.csrf;
            const body = new URLSearchParams({csrf_token: csrf, version: "1"});
            return (await fetch("/watchlists/publish", {method: "POST", body})).status;
        }"""
    )
    assert status == 403
    doc = hit_doc()
    store_hit(console.store, doc)
    no_token = page.evaluate(
        f"""async () => (await fetch("/hits/{doc["event_id"]}/decision",
            {{method: "POST", body: new URLSearchParams({{decision: "confirm"}})}})).status"""
    )
    assert no_token == 403
    assert data.get_hit(console.store, doc["event_id"])["state"] == "candidate"  # type: ignore[index]


def test_logging_out_ends_the_session(page: Any, console: Console) -> None:
    log_in(page, console, "rita")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{console.url}/login")
    page.goto(f"{console.url}/queue")
    assert "/login" in page.url
    shoot(page, "login")


def test_the_queue_fits_a_tablet(page: Any, console: Console) -> None:
    page.set_viewport_size({"width": 768, "height": 1024})
    store_hit(console.store, hit_doc(entry="case-A"))
    log_in(page, console, "rita")
    page.locator("article.hit").first.wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 768, f"the page scrolls sideways on a tablet ({width} px)"
    shoot(page, "queue-tablet")
