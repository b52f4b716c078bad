"""Every device, watchlist, provisioning and evaluation subcommand meets bad input with a message and a
non-zero exit, never a Python traceback. (``edge alerts`` and ``edge console`` have their own tests.)
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from edge.cli import main
from tests.broker import free_port


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good keys and a bundle to misuse, and the kinds of bad files people point commands at."""
    ws = tmp_path_factory.mktemp("bad")
    assert main(["watchlist", "keygen", "--out", str(ws / "keys")]) == 0
    (ws / "photos" / "case-1").mkdir(parents=True)
    (ws / "photos" / "case-1" / "a.png").write_bytes((Path(__file__).parent.parent / "edge/samples/astronaut.png").read_bytes())
    assert main(["watchlist", "build", "--photos", str(ws / "photos"), "--name", "city", "--version", "1",
                 "--key", str(ws / "keys/watchlist.key"), "--out", str(ws / "bundle"), "--quiet"]) == 0  # fmt: skip
    (ws / "garbage.bin").write_bytes(b"\x00\xff" * 100)
    (ws / "garbage.csv").write_text("this,is\nnot,a manifest\n")
    (ws / "bad.toml").write_text("device_id = [\n")
    (ws / "badrows.csv").write_text("entry_id,path,threshold\ncase-1,photos/case-1/a.png,high\ncase-2\n")
    (ws / "nosources.toml").write_text(f'data_dir = "{ws / "data"}"\n')
    (ws / "ok.toml").write_text(
        f'data_dir = "{ws / "data"}"\n[[sources]]\ncamera = "c"\nurl = "{ws / "photos"}"\n'
        f'[watchlist]\nname = "city"\npublic_keys = ["{ws / "keys/watchlist.pub"}"]\n'
    )
    (ws / "flat").mkdir()
    (ws / "flat" / "a.png").write_bytes((ws / "photos/case-1/a.png").read_bytes())
    (ws / "badbundle").mkdir()
    (ws / "badbundle" / "manifest.json").write_text("{not json")
    return ws


def cases(ws: Path) -> list[list[str]]:
    missing, g = str(ws / "missing"), str(ws / "garbage.bin")
    pub, key, bundle = str(ws / "keys/watchlist.pub"), str(ws / "keys/watchlist.key"), str(ws / "bundle")
    build = ["watchlist", "build", "--name", "city", "--version", "2", "--out", str(ws / "out"), "--quiet"]
    prov = ["provision", "--root", str(ws / "root"), "--device-id", "p", "--broker", "127.0.0.1:1", "--watchlist-name", "w",
            "--camera", str(ws / "photos"), "--no-selftest"]  # fmt: skip
    return [
        ["eval", "--manifest", missing],
        ["eval", "--manifest", str(ws / "garbage.csv")],
        ["eval", "--manifest", g],
        ["eval", "--manifest", str(ws)],
        ["eval", "--manifest", str(ws / "garbage.csv"), "--embedder", "nope"],
        ["eval", "--manifest", str(ws / "garbage.csv"), "--config", missing],
        ["eval", "--manifest", str(ws / "garbage.csv"), "--details", str(ws / "missing" / "details.csv")],
        ["bench", "--embedder", "nope"],
        ["calibrate", "--manifest", missing],
        ["watchlist", "keygen", "--out", str(ws / "keys")],  # keys there already
        ["watchlist", "keygen", "--out", g],  # a file, not a folder
        [*build, "--photos", missing],
        [*build, "--photos", str(ws / "flat")],
        [*build, "--csv", str(ws / "garbage.csv")],
        [*build, "--csv", missing],
        [*build, "--csv", str(ws / "badrows.csv")],
        [*build, "--photos", str(ws / "photos"), "--key", g],
        [*build, "--photos", str(ws / "photos"), "--key", pub],
        [*build],
        ["watchlist", "sign", missing, "--key", key],
        ["watchlist", "sign", str(ws / "badbundle"), "--key", key],
        ["watchlist", "sign", bundle, "--key", g],
        ["watchlist", "verify", missing, "--public-key", pub],
        ["watchlist", "verify", bundle, "--public-key", g],
        ["watchlist", "verify", bundle, "--public-key", missing],
        ["watchlist", "verify", str(ws / "badbundle"), "--public-key", pub],
        ["watchlist", "show", missing],
        ["watchlist", "show", str(ws / "badbundle")],
        ["watchlist", "show", "--config", missing],
        ["watchlist", "show", "--config", str(ws / "bad.toml")],
        ["watchlist", "show"],
        ["watchlist", "publish", missing, "--broker", "127.0.0.1:1"],
        ["watchlist", "publish", bundle, "--broker", "127.0.0.1:notaport"],
        ["watchlist", "publish", bundle, "--broker", f"127.0.0.1:{free_port()}"],
        ["watchlist", "apply", missing, "--config", str(ws / "ok.toml")],
        ["watchlist", "apply", bundle, "--config", missing],
        ["watchlist", "apply", str(ws / "badbundle"), "--config", str(ws / "ok.toml")],
        [*prov, "--watchlist-key", missing],
        [*prov, "--watchlist-key", pub, "--ca", missing],
        [*prov, "--watchlist-key", pub, "--password-file", str(ws)],
        ["provision", "--root", str(ws / "root"), "--from-file", g],
        ["provision", "--root", str(ws / "root"), "--from-file", missing],
        ["provision", "--root", str(ws / "root")],
        ["run", "--config", missing],
        ["run", "--config", str(ws / "bad.toml")],
        ["run", "--config", str(ws / "nosources.toml")],
        ["run", "--config", str(ws)],
        ["config", "check", "--config", missing],
        ["config", "check", "--config", g],
        ["config", "show", "--config", str(ws)],
        ["selftest", "--config", missing],
        ["selftest", "--config", str(ws / "ok.toml"), "--skip", "nope"],
        ["demo", "--workdir", g],
        ["demo", "--embedder", "nope"],
        ["nonsense"],
    ]


def test_no_subcommand_answers_bad_input_with_a_traceback(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failures = []
    for argv in cases(ws):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage and exit 2
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:
            failures.append(f"edge {' '.join(argv)}:\n{traceback.format_exc()}")
            continue
        out = capsys.readouterr()
        if code == 0:
            failures.append(f"edge {' '.join(argv)}: exit 0\n{out.out}{out.err}")
        elif "Traceback" in out.out + out.err or not (out.out + out.err).strip():
            failures.append(f"edge {' '.join(argv)}: exit {code} without a plain message\n{out.out}{out.err}")
    assert not failures, "\n\n".join(failures)
