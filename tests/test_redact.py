"""Camera passwords never leave the device: source errors, logs, the retained status and the self-test redact them."""

from __future__ import annotations

import json
import logging
import string
import time
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edge.redact import MASK, RedactingFilter, redact, redact_values
from edge.selftest import Result, print_checklist
from edge.sources import OpenCVSource, SourceError
from tests.broker import Broker, free_port
from tests.mqtt_helpers import Subscriber, wait_for_text
from tests.test_daemon import finish, kit, start_daemon, write_config  # noqa: F401  (kit is a fixture)

SECRET = "S3cret-pw"
USER_CHARS = string.ascii_letters + string.digits + "-._~%!$&'()*+,;="
# A password may hold anything but whitespace and the characters that end a URL in text ("<>).
PASSWORD_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters='"<>\x85\xa0')
HOST = st.from_regex(r"\A[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?(:[0-9]{1,5})?\Z")
PATH = st.from_regex(r"\A(/[A-Za-z0-9._~-]{0,12}){0,3}(\?[a-z]{1,8}=[a-z0-9]{0,8})?\Z")
TEXT = st.text(st.characters(blacklist_characters="@="), max_size=30)


@given(
    scheme=st.sampled_from(["rtsp", "rtsps", "http", "https", "rtmp"]),
    user=st.text(USER_CHARS.replace(":", ""), min_size=1, max_size=12),
    password=st.text(PASSWORD_CHARS, min_size=1, max_size=24),
    host=HOST,
    path=PATH,
    before=TEXT,
    after=st.sampled_from(["", " (timeout)", ": connection refused", "'", ")"]),
)
@example(scheme="rtsp", user="admin", password="p@ss/w:rd@", host="cam", path="/s", before="x ", after="")
def test_the_password_in_a_url_is_replaced_and_the_rest_kept(
    scheme: str, user: str, password: str, host: str, path: str, before: str, after: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}{path}"
    shown = redact(f"{before}{url}{after}")
    assert shown == f"{before}{scheme}://{user}:{MASK}@{host}{path}{after}"
    assert redact(shown) == shown, "redacting twice changes nothing"


@given(token=st.text(PASSWORD_CHARS.filter(lambda c: c != ":"), min_size=1, max_size=24), host=HOST)
def test_a_token_as_the_whole_userinfo_is_replaced(token: str, host: str) -> None:
    assert redact(f"rtsp://{token}@{host}/live") == f"rtsp://{MASK}@{host}/live"


@given(
    key=st.sampled_from(["password", "PASSWORD", "passwd", "pwd", "token", "secret", "api_key"]),
    # (a value with "@" is hidden too, with the URL's host: the userinfo rule over-redacts rather than leak)
    value=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="&@"), max_size=20),
    rest=st.sampled_from(["", "&channel=1", " failed"]),
)
def test_a_password_query_parameter_is_replaced(key: str, value: str, rest: str) -> None:
    shown = redact(f"cannot open http://cam.local/cgi?user=admin&{key}={value}{rest}")
    assert shown == f"cannot open http://cam.local/cgi?user=admin&{key}={MASK}{rest}"


@given(st.text(st.characters(blacklist_characters="@=")))
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_ordinary_urls_and_paths_are_unchanged() -> None:
    for text in ("rtsp://cam.local:554/stream1", "/var/lib/edge/clip.avi", "0", "http://cam/x?channel=1&subtype=0"):
        assert redact(text) == text


def test_every_string_of_a_payload_is_redacted() -> None:
    status = {"cameras": [{"error": f"cannot open rtsp://admin:{SECRET}@cam/1", "frames": 3}], "last_error": None}
    assert SECRET not in json.dumps(redact_values(status))
    assert redact_values(status)["cameras"][0]["frames"] == 3


def test_a_source_error_names_the_camera_url_without_its_password() -> None:
    port = free_port()  # nothing listens there: OpenCV's RTSP open fails at once
    source = OpenCVSource("gate", f"rtsp://admin:{SECRET}@127.0.0.1:{port}/stream?password={SECRET}")
    with pytest.raises(SourceError) as err:
        source.open()
    assert SECRET not in str(err.value)
    assert f"rtsp://admin:{MASK}@127.0.0.1:{port}/stream?password={MASK}" in str(err.value)


def test_log_records_and_tracebacks_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("edge.test_redact")
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="edge.test_redact"):
        logger.warning("camera %s: cannot open %s", "gate", f"rtsp://admin:{SECRET}@cam/1")
        try:
            raise SourceError(f"stream rtsp://admin:{SECRET}@cam/1 broke")
        except SourceError:
            logger.exception("capture failed")
    assert SECRET not in caplog.text, caplog.text
    assert "rtsp://admin:***@cam/1" in caplog.text


def test_the_selftest_checklist_shows_no_password(capsys: pytest.CaptureFixture[str]) -> None:
    print_checklist([Result("camera", "FAIL", f"camera gate: cannot open rtsp://admin:{SECRET}@cam/1")])
    out = capsys.readouterr().out
    assert SECRET not in out and "rtsp://admin:***@cam/1" in out


def test_the_daemon_log_and_retained_status_carry_no_camera_password(kit: Path, tmp_path: Path) -> None:  # noqa: F811
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/stream"
    with Broker(tmp_path) as broker:
        sub = Subscriber(broker.port, ["edge/v1/+/status"]).connect()
        cfg = write_config(kit, tmp_path, broker.port, url=url, stop_at_end=False)
        proc = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            assert wait_for_text(tmp_path / "daemon.log", "reopening in"), (tmp_path / "daemon.log").read_text()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(c.get("error") for s in sub.json("/status") for c in s["cameras"]):
                time.sleep(0.1)
            assert any(c.get("error") for s in sub.json("/status") for c in s["cameras"]), "the status reports the camera"
        finally:
            proc.terminate()
            finish(proc, 30)
        sub.sync()
        sub.disconnect()
    log = (tmp_path / "daemon.log").read_text()
    statuses = [p for t, p, _ in sub.messages if t.endswith("/status")]
    assert SECRET not in log, log
    assert not [p for p in statuses if SECRET.encode() in p]
    assert "rtsp://admin:***@127.0.0.1" in log
    assert any(b"rtsp://admin:***@127.0.0.1" in p for p in statuses)
