"""The device's own system for ``edge provision``: the ``edge`` service user and the systemd unit.

Only on the real system: provisioning into ``--root DIR`` (an image, a test) never creates
users or touches systemd, and ``--no-enable`` skips this part. The steps are planned first so
``--dry-run`` can list them.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError

log = logging.getLogger(__name__)

UNIT_PATH = Path("/etc/systemd/system/edge.service")
# Shipped with the package (edge/systemd is a symlink to the checkout's systemd/, copied into a wheel).
PACKAGED_UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edge.service"


class SystemSetupError(EdgeError):
    """Creating the service user or enabling the unit failed."""


@dataclass(frozen=True)
class Step:
    what: str
    command: list[str] | None = None  # a command to run, or None for installing the unit file


def plan_system(root: Path, *, enable: bool) -> tuple[list[Step], str | None]:
    """The steps that make this device run edge as a service, and why there are none (when there are none)."""
    if not enable:
        return [], "--no-enable: service user and unit left as they are"
    if root.resolve() != Path("/"):
        return [], f"--root {root}: service user and unit are set up on the device itself (hardware.md)"
    if os.geteuid() != 0:
        return [], "not run as root: create the edge user and enable the unit as hardware.md says"
    steps: list[Step] = []
    try:
        pwd.getpwnam("edge")
    except KeyError:
        cmd = ["useradd", "--system", "--home-dir", "/var/lib/edge", "--shell", "/usr/sbin/nologin", "--user-group"]
        try:
            grp.getgrnam("video")
            cmd += ["--groups", "video"]  # cameras
        except KeyError:
            pass
        steps.append(Step("create the edge service user", [*cmd, "edge"]))
    if not UNIT_PATH.exists():
        steps.append(Step(f"install {UNIT_PATH}"))
    if shutil.which("systemctl") is None:
        return steps, "no systemctl on this system: enable the service by hand"
    steps.append(Step("reload systemd", ["systemctl", "daemon-reload"]))
    steps.append(Step("enable edge.service at boot", ["systemctl", "enable", "edge.service"]))
    return steps, None


def run_step(step: Step) -> None:
    if step.command is None:
        try:
            shutil.copyfile(PACKAGED_UNIT, UNIT_PATH)
            UNIT_PATH.chmod(0o644)
        except OSError as exc:
            raise SystemSetupError(f"cannot install {UNIT_PATH} from {PACKAGED_UNIT} ({exc.strerror or exc})") from exc
        return
    try:
        proc = subprocess.run(step.command, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemSetupError(f"{step.what}: {' '.join(step.command)} failed ({exc})") from exc
    if proc.returncode != 0:
        raise SystemSetupError(f"{step.what}: {' '.join(step.command)} exited {proc.returncode}: {proc.stderr.strip()}")
