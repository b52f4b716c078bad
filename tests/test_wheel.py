"""A device installed from the wheel alone (no checkout) has its models and runs the demo and the self-test.

hardware.md installs devices with ``pip install edge-*.whl``: the wheel must carry every model the
manifest lists, and nothing may reach back into a source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Only what a build reads: a stale build/ or .venv in the checkout must not leak into the wheel.
_SKIP = {".git", ".venv", "build", "dist", "tests", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src") / "edge-src"
    skip = lambda _d, names: [n for n in names if n in _SKIP or n.endswith(".egg-info")]  # noqa: E731
    shutil.copytree(ROOT, src, symlinks=True, ignore=skip)
    out = tmp_path_factory.mktemp("wheel")
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)], cwd=out)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("edge-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with the wheel installed; numpy, OpenCV etc. come from the base Python."""
    home = tmp_path_factory.mktemp("venv") / "v"
    r = _run([sys.base_prefix + "/bin/python3", "-m", "venv", "--system-site-packages", str(home)], cwd=home.parent)
    assert r.returncode == 0, r.stderr
    pip = [str(home / "bin/python"), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
    r = _run([*pip, str(wheel)], cwd=home.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    return home


def test_the_wheel_holds_exactly_the_models_the_manifest_lists(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = {n.removeprefix("edge/model_files/") for n in z.namelist() if n.startswith("edge/model_files/")}
        manifest = json.loads(z.read("edge/model_files/manifest.json"))
        unit = "edge/systemd/edge.service" in z.namelist()
    assert names == {"manifest.json"} | {m["file"] for m in manifest["models"].values()}
    assert unit, "edge provision installs the systemd unit from the package"


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "PYTHON", "VIRTUAL_ENV"))}
    env["HOME"] = str(tmp)
    return env


def test_a_wheel_install_runs_the_demo_and_the_selftest_without_the_checkout(venv: Path, tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    py = str(venv / "bin/python")
    where = _run([py, "-c", "import edge.models as m; print(m.__file__); print(m.default_models_dir())"], cwd=tmp_path, env=env)
    module, models = where.stdout.split()
    assert module.startswith(str(venv)), "the checkout's edge was imported instead of the installed one"
    assert models.startswith(str(venv))

    demo = _run([str(venv / "bin/edge"), "demo", "--console", "--workdir", str(tmp_path / "demo")], cwd=tmp_path, env=env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Traceback" not in demo.stdout + demo.stderr
    assert "HIT" in demo.stdout.upper()

    check = _run(
        [str(venv / "bin/edge"), "selftest", "--config", str(tmp_path / "demo/edge.toml"), "--skip", "camera,broker,clock"],
        cwd=tmp_path,
        env=env,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "[PASS] models" in check.stdout and str(venv) in check.stdout
