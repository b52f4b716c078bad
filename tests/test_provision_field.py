"""Provisioning as a technician meets it: keys without a CA yet, file cameras, the questions, the environment."""

from __future__ import annotations

import logging
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.config import load_settings
from edge.demo import make_clip


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("field")
    assert main(["watchlist", "keygen", "--out", str(ws / "keys")]) == 0
    make_clip(ws / "camera.avi", seconds=1)
    (ws / "pw").write_text("correct horse\n")
    return ws


def base(assets: Path, root: Path, *extra: str) -> list[str]:
    return ["provision", "--root", str(root), "--device-id", "pole-9", "--broker", "127.0.0.1:1",
            "--watchlist-name", "city", "--watchlist-key", str(assets / "keys" / "watchlist.pub"),
            "--camera", str(assets / "camera.avi"), *extra]  # fmt: skip


def test_make_key_without_a_ca_writes_the_key_and_csr_and_dry_run_lists_them(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert main(base(assets, root, "--make-key", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert f"would write  {root / 'etc/edge/device.key'} (mode 600)" in out
    assert f"would write  {root / 'etc/edge/device.csr'}" in out
    assert main(base(assets, root, "--make-key", "--no-selftest")) == 0
    out = capsys.readouterr().out
    assert stat.S_IMODE((root / "etc/edge/device.key").stat().st_mode) == 0o600
    assert (root / "etc/edge/device.csr").read_bytes().startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    assert "send" in out and "re-run with --ca" in out


def test_a_file_camera_has_no_resolution_to_check(assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The README's --width 1920 --height 1080 with a bench clip (640x480) instead of the camera.
    rc = main(base(assets, tmp_path / "root", "--width", "1920", "--height", "1080", "--skip", "broker,clock,framing"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[PASS] camera" in out


def test_interactive_asks_every_relevant_question_with_its_default(assets: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    replies = [
        "pole-3",  # device id
        "broker.example:8883",  # broker
        str(assets / "keys" / "watchlist.pub"),  # CA file (any PEM file will do for writing)
        "",  # client certificate: empty = make a key and CSR
        "",  # username: default the device id
        str(assets / "pw"),  # password file
        "city",  # watchlist
        str(assets / "keys" / "watchlist.pub"),
        "",  # camera: default picamera2
        "",  # camera name: default cam1
        "",  # width: default 1920
        "abc",  # height: not a number, asked again
        "1080",
        "4",  # distance
        "40",  # field of view
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "provision", "--root", str(root), "--interactive", "--no-selftest"],
        input="\n".join(replies) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for question in ("broker CA certificate file for TLS (empty: no TLS)", "client certificate file", "MQTT username [pole-3]",
                     "MQTT password", "camera: picamera2", "[picamera2]", "[cam1]", "capture width in pixels [1920]",
                     "is not a number", "distance from the lens", "field of view"):  # fmt: skip
        assert question in proc.stdout, question
    s = load_settings(root / "etc/edge/edge.toml")
    src = s.sources[0]
    assert (s.device_id, s.mqtt.host, s.mqtt.port, s.mqtt.username) == ("pole-3", "broker.example", 8883, "pole-3")
    assert s.mqtt.tls and s.mqtt.tls.cert == root / "etc/edge/device.pem"
    assert (root / "etc/edge/device.csr").is_file() and s.mqtt.password_file is not None
    assert (src.url, src.camera, src.width, src.height, src.face_distance_m, src.hfov_deg) == (
        "picamera2", "cam1", 1920, 1080, 4.0, 40.0
    )  # fmt: skip


def test_interactive_does_not_ask_a_file_camera_for_its_resolution(assets: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", *base(assets, tmp_path / "root", "--interactive", "--no-selftest")],
        input="\n\n\n\n\n",  # CA, username, password, camera name, distance: all defaults
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "capture width" not in proc.stdout and "field of view" not in proc.stdout


def test_config_check_refuses_a_recording_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[[sources]]\ncamera = "gate"\nurl = "{tmp_path / "clip.mp4"}"\n')
    assert main(["config", "check", "--config", str(cfg)]) == 2
    assert "clip.mp4 not found" in capsys.readouterr().err


def test_a_misspelt_environment_variable_is_named_and_a_bad_value_blamed_on_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('device_id = "pole-1"\n')
    monkeypatch.setenv("EDGE_RECOGNITON__THRESHOLD", "0.5")
    with caplog.at_level(logging.WARNING):
        load_settings(cfg)
    assert "EDGE_RECOGNITON__THRESHOLD sets no setting" in caplog.text
    assert "did you mean EDGE_RECOGNITION__THRESHOLD" in caplog.text
    monkeypatch.setenv("EDGE_RECOGNITION__THRESHOLD", "high")
    assert main(["config", "check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration in the environment" in err and "EDGE_RECOGNITION__THRESHOLD" in err
    assert str(cfg) not in err


def test_a_provision_into_a_folder_leaves_the_system_alone(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = {p.pw_name for p in pwd.getpwall()}
    assert main(base(assets, tmp_path / "root", "--no-selftest")) == 0
    assert "service user and unit are set up on the device itself" in capsys.readouterr().out
    assert {p.pw_name for p in pwd.getpwall()} == users
    assert not (tmp_path / "root" / "etc" / "systemd").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the steps are planned only for root")
def test_as_root_on_the_device_it_plans_the_service_user_and_the_unit(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --dry-run: planned and listed, nothing run (this machine is not a device).
    assert main(base(assets, Path("/"), "--dry-run")) == 0
    out = capsys.readouterr().out
    if "edge" not in {p.pw_name for p in pwd.getpwall()}:
        assert "would run    create the edge service user: useradd --system" in out
    assert "would run    enable edge.service at boot: systemctl enable edge.service" in out
    assert main(base(assets, Path("/"), "--dry-run", "--no-enable")) == 0
    assert "would run" not in capsys.readouterr().out
