"""Building a watchlist says what it left out, how photos must be laid out, and when the bundle expires."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge.cli import main

ASTRONAUT = Path(__file__).resolve().parent.parent / "edge" / "samples" / "astronaut.png"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("wl")
    assert main(["watchlist", "keygen", "--out", str(ws / "keys")]) == 0
    for eid in ("case-1", "case-2", "case-3"):
        (ws / "photos" / eid).mkdir(parents=True)
    shutil.copy(ASTRONAUT, ws / "photos" / "case-1" / "a.png")
    (ws / "photos" / "case-2" / "b.jpg").write_bytes(b"not a jpeg")  # unusable: entry left out
    return ws  # case-3 has no photo at all


def build(ws: Path, out: str, *extra: str) -> list[str]:
    return ["watchlist", "build", "--photos", str(ws / "photos"), "--name", "city", "--version", "1",
            "--key", str(ws / "keys" / "watchlist.key"), "--out", str(ws / out), "--quiet", *extra]  # fmt: skip


def test_entries_left_out_fail_the_build_unless_allowed(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(build(ws, "strict")) == 1
    out = capsys.readouterr().out
    assert "2 of 3 entries would be left out (case-2, case-3)" in out and "--allow-missing" in out
    assert not (ws / "strict").exists(), "nothing is signed or written"
    assert main(build(ws, "lenient", "--allow-missing")) == 0
    out = capsys.readouterr().out
    assert "left out (--allow-missing): case-2, case-3" in out
    assert "1 entries" in out and "expires " in out and "(in 30 days)" in out


def test_a_flat_photos_folder_is_told_the_expected_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(ASTRONAUT, tmp_path / "a.png")
    rc = main(["watchlist", "build", "--photos", str(tmp_path), "--name", "w", "--version", "1", "--out", str(tmp_path / "b")])
    assert rc == 2
    assert "holds 1 photos directly; it needs one subfolder per entry, named by its entry_id" in capsys.readouterr().err


def test_show_verify_and_apply_say_the_expiry_and_list_what_the_device_holds(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(build(ws, "b", "--allow-missing")) == 0
    capsys.readouterr()
    assert main(["watchlist", "show", str(ws / "b")]) == 0
    assert "(in 30 days)" in capsys.readouterr().out
    assert main(["watchlist", "verify", str(ws / "b"), "--public-key", str(ws / "keys" / "watchlist.pub")]) == 0
    assert "(in 30 days)" in capsys.readouterr().out
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[watchlist]\nname = "city"\npublic_keys = ["{ws / "keys" / "watchlist.pub"}"]\n'
    )
    assert main(["watchlist", "apply", str(ws / "b"), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "vNone" not in out and "the first on this device" in out
    assert main(["watchlist", "show", "--config", str(cfg), "--entries"]) == 0
    out = capsys.readouterr().out
    assert "case-1\t4 embeddings" in out and "watchlist city v1: 1 entries; expires" in out  # the photo and its 3 distant views
