"""The daemon against a locked-down Mosquitto: mutual TLS, and an ACL that refuses a publish."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.broker import Broker
from tests.mqtt_helpers import Subscriber
from tests.pki import make_pki
from tests.test_daemon import finish, kit, outbox_depth, start_daemon, write_config  # noqa: F401  (kit is a fixture)


def test_hits_are_delivered_over_mutual_tls(kit: Path, tmp_path: Path) -> None:  # noqa: F811
    pki = make_pki(tmp_path / "pki", "pole-7")
    plain = Broker(tmp_path)  # a plain listener for the test's own subscriber
    tls_port = Broker(tmp_path).port
    plain.extra_conf = (
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\nkeyfile {pki['server_key']}\n"
        "require_certificate true\nuse_identity_as_username true\n"
    )
    plain.start()
    try:
        sub = Subscriber(plain.port, ["edge/v1/+/hits"]).connect()
        tls = f'tls = {{ ca = "{pki["ca"]}", cert = "{pki["device_cert"]}", key = "{pki["device_key"]}" }}\n'
        cfg = write_config(kit, tmp_path, tls_port)
        cfg.write_text(cfg.read_text().replace("status_interval_s = 1\n", "status_interval_s = 1\n" + tls))
        assert finish(start_daemon(cfg, tmp_path / "daemon.log")) == 0, (tmp_path / "daemon.log").read_text()
        hits = sub.wait_for("/hits", 1, timeout=5)
        sub.disconnect()
    finally:
        plain.stop()
    assert [h["entry_id"] for h in hits] == ["case-0001"]


def test_a_publish_the_broker_refuses_stays_in_the_outbox_and_is_reported(kit: Path, tmp_path: Path) -> None:  # noqa: F811
    acl = tmp_path / "acl"
    # The device may publish its status but (misconfigured) not its hits.
    acl.write_text("user pole-7\ntopic write edge/v1/pole-7/status\ntopic read edge/v1/watchlists/#\n")
    broker = Broker(tmp_path, extra_conf=f"acl_file {acl}\n")
    broker.start()
    try:
        cfg = write_config(kit, tmp_path, broker.port, extra="[daemon]\ndrain_timeout_s = 4\n")
        cfg.write_text(cfg.read_text().replace("status_interval_s = 1\n", 'status_interval_s = 1\nusername = "pole-7"\n'))
        code = finish(start_daemon(cfg, tmp_path / "daemon.log"))
    finally:
        broker.stop()
    log = (tmp_path / "daemon.log").read_text()
    assert code == 1, log
    assert "broker refused message" in log and "Not authorized" in log
    assert outbox_depth(tmp_path) == 1, "the refused hit is kept for delivery once the ACL is fixed"
    with sqlite3.connect(tmp_path / "data" / "edge.db") as c:
        assert c.execute("SELECT attempts, last_error FROM outbox").fetchone()[0] >= 1
