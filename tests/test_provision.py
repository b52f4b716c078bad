"""Provisioning into a temporary root, and the self-test in passing and failing set-ups."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from edge.cli import main
from edge.demo import make_clip
from edge.models import default_models_dir
from tests.broker import Broker, free_port
from tests.pki import make_pki


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("prov")
    assert main(["watchlist", "keygen", "--out", str(ws / "keys")]) == 0
    make_clip(ws / "camera.avi", seconds=1)
    (ws / "pw").write_text("correct horse\n")
    return ws


def provision(assets: Path, root: Path, port: int, *extra: str) -> int:
    return main(
        ["provision", "--root", str(root), "--device-id", "pole-9", "--broker", f"127.0.0.1:{port}",
         "--watchlist-name", "city", "--watchlist-key", str(assets / "keys" / "watchlist.pub"),
         "--camera", str(assets / "camera.avi"), "--password-file", str(assets / "pw"), "--skip", "clock", *extra]
    )  # fmt: skip


def test_provisioning_writes_private_files_passes_the_selftest_and_is_idempotent(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    with Broker(tmp_path) as broker:
        assert provision(assets, root, broker.port) == 0
        out = capsys.readouterr().out
        assert "self-test passed" in out and "[PASS] camera" in out and "watchlist topic subscribed" in out
        etc = root / "etc" / "edge"
        for secret in ("edge.toml", "credentials/mqtt-password"):
            assert stat.S_IMODE((etc / secret).stat().st_mode) == 0o600
        assert (etc / "credentials" / "mqtt-password").read_text() == "correct horse\n"
        assert provision(assets, root, broker.port) == 0
        assert "written" not in capsys.readouterr().out.replace("unchanged", "")
    assert main(["config", "check", "--config", str(root / "etc" / "edge" / "edge.toml")]) == 0


def test_dry_run_writes_nothing(assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert provision(assets, tmp_path / "root", 1, "--dry-run") == 0
    assert "would write" in capsys.readouterr().out
    assert not (tmp_path / "root").exists()


def test_make_key_writes_a_private_key_and_a_csr_for_the_device(assets: Path, tmp_path: Path) -> None:
    from cryptography import x509

    pki = make_pki(tmp_path / "pki", "unused")
    assert provision(assets, tmp_path / "root", 1, "--ca", str(pki["ca"]), "--make-key", "--no-selftest") == 0
    etc = tmp_path / "root" / "etc" / "edge"
    assert stat.S_IMODE((etc / "device.key").stat().st_mode) == 0o600
    csr = x509.load_pem_x509_csr((etc / "device.csr").read_bytes())
    assert csr.subject.rfc4514_string() == "CN=pole-9"
    key_before = (etc / "device.key").read_bytes()
    assert provision(assets, tmp_path / "root", 1, "--ca", str(pki["ca"]), "--make-key", "--no-selftest") == 0
    assert (etc / "device.key").read_bytes() == key_before, "re-running keeps the device's key"


def failing(capsys: pytest.CaptureFixture[str], check: str) -> str:
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("[FAIL]") and check in line)
    assert "self-test FAILED" in out
    return line


def test_broker_down_fails_clearly(assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert provision(assets, tmp_path / "root", free_port()) == 1
    assert "cannot reach broker" in failing(capsys, "broker")


def test_no_camera_fails_clearly(assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Broker(tmp_path) as broker:
        rc = main(
            ["provision", "--root", str(tmp_path / "root"), "--device-id", "pole-9", "--broker", f"127.0.0.1:{broker.port}",
             "--watchlist-name", "city", "--watchlist-key", str(assets / "keys" / "watchlist.pub"),
             "--camera", str(tmp_path / "unplugged.avi"), "--skip", "clock"]
        )  # fmt: skip
    assert rc == 1
    assert "not found" in failing(capsys, "camera")


def test_an_altered_model_fails_clearly(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    shutil.copytree(default_models_dir(), models)
    data = bytearray((models / "MobileFaceNet_prelu.tflite").read_bytes())
    data[1234] ^= 0xFF
    (models / "MobileFaceNet_prelu.tflite").write_bytes(bytes(data))
    monkeypatch.setenv("EDGE_MODELS_DIR", str(models))
    with Broker(tmp_path) as broker:
        assert provision(assets, tmp_path / "root", broker.port) == 1
    assert "MobileFaceNet_prelu.tflite" in failing(capsys, "models")


def test_a_wrong_ca_fails_clearly(assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real, other = make_pki(tmp_path / "real", "pole-9"), make_pki(tmp_path / "other", "pole-9")
    conf = f"cafile {real['ca']}\ncertfile {real['server_cert']}\nkeyfile {real['server_key']}\n"
    with Broker(tmp_path, extra_conf=conf) as broker:
        assert provision(assets, tmp_path / "root", broker.port, "--ca", str(other["ca"])) == 1
    assert "certificate verify failed" in failing(capsys, "broker")


def test_a_wrong_password_fails_clearly(assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "pole-9", "the real one"], check=True, capture_output=True)
    passwd.chmod(0o600)
    with Broker(tmp_path, extra_conf=f"password_file {passwd}\n", anonymous=False) as broker:
        assert provision(assets, tmp_path / "root", broker.port) == 1
    assert "refused the connection" in failing(capsys, "broker")


def test_framing_check_uses_the_detectors_minimum_face_size(
    assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Broker(tmp_path) as broker:
        common = ("--width", "1920", "--height", "1080", "--hfov-deg", "60", "--skip", "clock,camera")
        assert provision(assets, tmp_path / "near", broker.port, "--face-distance-m", "1.5", *common) == 0
        assert "[PASS] framing" in capsys.readouterr().out
        assert provision(assets, tmp_path / "far", broker.port, "--face-distance-m", "12", *common) == 1
    assert "detector needs" in failing(capsys, "framing")
