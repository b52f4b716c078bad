"""Console views from store rows: the fleet (silent devices, drift, refusals, chain problems, redaction), threshold advice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.central.store import STALE_AFTER_S, RevocationAck
from edge.central.web.fleet import device_view, redact

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def status_row(device: str = "pole-1", state: str = "online", heard_s: float = 5.0, **doc: object) -> dict[str, object]:
    payload = {"watchlist": {"name": "city", "version": 3, "expires_at": "2026-12-30T00:00:00.000Z"}, **doc}
    return {
        "device_id": device, "state": state, "heard_at": NOW - timedelta(seconds=heard_s), "watchlist_name": "city",
        "watchlist_version": 3, "outbox_depth": 0, "outbox_dropped": 0, "payload": json.dumps(payload),
    }  # fmt: skip


def test_credentials_are_taken_out_of_error_messages() -> None:
    assert redact("cannot open rtsp://admin:s3cret@10.0.0.7/stream: 401") == "cannot open rtsp://***@10.0.0.7/stream: 401"
    assert redact("mqtt login failed password=hunter2 user=x") == "mqtt login failed password=*** user=x"
    assert redact(None) == ""


def test_a_device_that_stopped_reporting_is_not_shown_online() -> None:
    # One limit for both consoles: the web page once waited 180 s where the terminal console waited 120 s.
    assert device_view(status_row(heard_s=STALE_AFTER_S - 1), {}, [], None, NOW)["state"] == "online"
    assert device_view(status_row(), {}, [], None, NOW)["state"] == "online"
    assert device_view(status_row(heard_s=STALE_AFTER_S + 1), {}, [], None, NOW)["state"] == "silent"
    assert device_view(status_row(state="offline"), {}, [], None, NOW)["state"] == "offline"  # the last will


def test_drift_refusals_chain_problems_and_camera_errors_are_shown() -> None:
    cameras = [{"camera": "gate", "state": "reopening", "frames": 1, "dropped": 0, "error": "rtsp://u:p@cam/1 timed out"}]
    refused = [{"version": 4, "reason": "signature", "message": "key abc not trusted"}]
    head = {"chain_ok": False, "problem": "sequence went back from 90 to 12"}
    v = device_view(status_row(cameras=cameras, last_error="token=abc123 expired"), {"city": 4}, refused, head, NOW)
    assert v["drift"] and v["published"] == 4 and v["version"] == 3
    assert v["cameras"] == [{"camera": "gate", "state": "reopening", "error": "rtsp://***@cam/1 timed out"}]
    assert v["last_error"] == "token=*** expired"
    assert v["refused"][0]["reason"] == "signature" and v["refused"][0]["what"] == "v4"
    assert v["chain"].startswith("PROBLEM: sequence went back") and not v["chain_ok"]
    assert device_view(status_row(), {"city": 3}, [], None, NOW)["drift"] is False


def test_the_fleet_says_which_devices_applied_a_revocation_and_why_one_refused_it() -> None:
    applied = RevocationAck(2, "applied", 1, "applied", "applied")
    v = device_view(status_row(), {}, [], None, NOW, applied)
    assert v["revocation"] == {"sequence": 2, "applied": True, "removed": 1, "reason": "applied"}
    refused = [{"kind": "revoke", "revoke_sequence": 2, "version": 3, "reason": "replayed", "message": "sequence 2 held"}]
    v = device_view(status_row(), {}, refused, None, NOW, RevocationAck(2, "refused", None, "replayed", "sequence 2 held"))
    assert v["revocation"]["applied"] is False and v["refused"][0]["what"] == "revocation #2"
    assert device_view(status_row(), {}, [], None, NOW)["revocation"] is None  # not answered yet


def test_the_suggested_entry_threshold_keeps_out_every_reported_false_match_and_says_what_it_costs() -> None:
    from edge.central.web.watchlists import suggest_threshold

    assert suggest_threshold({"false": [], "confirmed": [0.8]}, None) is None  # no false match reported: nothing to suggest
    s = suggest_threshold({"false": [0.61, 0.655], "confirmed": [0.66, 0.72, 0.9]}, None)
    assert s is not None and s["threshold"] == 0.665
    assert "2 hit(s) marked not this person (scores 0.610, 0.655)" in s["evidence"] and "2 of 3 confirmed" in s["evidence"]
    assert suggest_threshold({"false": [0.61], "confirmed": []}, 0.7) is None  # the entry's threshold is already above


def test_the_fleet_flags_a_watchlist_too_large_to_keep_false_matches_within_max_fpir() -> None:
    wl = {"name": "city", "version": 3, "threshold": 0.867, "holds_max_fpir": False}
    v = device_view(status_row(watchlist=wl), {}, [], None, NOW)
    assert v["threshold"] == 0.867 and v["holds_max_fpir"] is False
    v = device_view(status_row(), {}, [], None, NOW)  # an older device does not say: nothing is claimed
    assert v["threshold"] is None and v["holds_max_fpir"] is True
    for junk in ("<script>", 10**400, float("inf"), 1e300, -5, True):
        wl = {"name": "city", "version": 3, "threshold": junk, "holds_max_fpir": "no"}
        v = device_view(status_row(watchlist=wl, outbox={"depth": 1, "oldest_age_s": junk}), {}, [], None, NOW)
        assert v["threshold"] is None and v["holds_max_fpir"] is True and v["outbox_oldest_s"] is None, junk


def test_one_device_s_absurd_numbers_do_not_take_the_fleet_page_down() -> None:
    """A schema-valid 400-digit integer once made float() raise while rendering: the page failed for every operator."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from edge.central.web import fleet

    templates = Path(fleet.__file__).parent / "templates"
    env = Environment(loader=FileSystemLoader(templates), autoescape=select_autoescape())
    wl = {"name": "city", "version": 3, "threshold": 10**400, "holds_max_fpir": False}
    devices = [device_view(status_row(watchlist=wl, outbox={"depth": 1, "oldest_age_s": 10**400}), {}, [], None, NOW)]
    page = env.get_template("fleet.html").render(devices=devices, published={}, user=None, csrf="")
    assert "too large" in page and "split the watchlist" in page
