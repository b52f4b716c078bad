"""``edge selftest``: the checks a technician runs on an installed device, as a pass/fail checklist.

Each check returns PASS, WARN (works, but look at it) or FAIL with one line saying what it saw
and what to do. The command exits non-zero when any check that was not skipped fails.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config import Settings
from edge.errors import EdgeError
from edge.redact import redact

log = logging.getLogger(__name__)

CHECKS = ("models", "runtime", "camera", "framing", "broker", "clock", "disk")
FACE_WIDTH_M = 0.15  # an adult face, ear to ear at eye level, roughly
MIN_FREE_BYTES = 1 << 30


@dataclass(frozen=True)
class Result:
    name: str
    status: str  # PASS, WARN, FAIL, SKIP
    detail: str


def face_pixels(distance_m: float, hfov_deg: float, width_px: int) -> float:
    """Pixels across a face at ``distance_m`` for a lens of ``hfov_deg`` imaging ``width_px`` columns."""
    scene_width_m = 2 * distance_m * math.tan(math.radians(hfov_deg) / 2)
    return FACE_WIDTH_M / scene_width_m * width_px


def check_models(s: Settings) -> Result:
    from edge.models import load_manifest

    m = load_manifest(s.recognition.models_dir)
    names = [s.recognition.detector.model, s.recognition.embedder]
    for n in names:
        m.verified_path(m.get(n))
    return Result("models", "PASS", f"{', '.join(names)}: files present, sha256 as in {m.directory / 'manifest.json'}")


def check_runtime(s: Settings) -> Result:
    from edge.runtime import edgetpu_available, runtime_name

    rt = runtime_name()
    tpu = edgetpu_available()
    if s.recognition.accelerator == "edgetpu" and not tpu:
        return Result(
            "runtime", "FAIL", f"{rt}; accelerator=edgetpu but no Edge TPU found (plug in the Coral, install libedgetpu1-std)"
        )
    return Result("runtime", "PASS", f"{rt}; Edge TPU {'found' if tpu else 'not found (models run on the CPU)'}")


def check_camera(s: Settings) -> Result:
    from edge.errors import ImageDecodeError
    from edge.sources import SourceError, make_source

    if not s.sources:
        return Result("camera", "FAIL", "no [[sources]] configured")
    notes = []
    for src in s.sources:
        source = make_source(src.camera, src.url, width=src.width, height=src.height, fps=src.fps_cap)
        try:
            source.open()
            frame = source.read()
        except SourceError as exc:
            return Result("camera", "FAIL", f"{exc} (check the cable / URL / camera ribbon)")
        except ImageDecodeError as exc:  # a folder source whose first file is not an image
            return Result("camera", "FAIL", f"camera {src.camera}: first frame unreadable: {exc}")
        finally:
            source.close()
        if frame is None:
            return Result("camera", "FAIL", f"camera {src.camera}: opened but delivered no frame")
        w, h = frame.width, frame.height
        # Only a camera has a resolution to set; a file or folder is what it is.
        if source.live and src.width and src.height and (w, h) != (src.width, src.height):
            return Result("camera", "FAIL", f"camera {src.camera}: delivers {w}x{h}, configured {src.width}x{src.height}")
        notes.append(f"{src.camera} {w}x{h}")
    return Result("camera", "PASS", "frames from " + ", ".join(notes))


def check_framing(s: Settings) -> Result:
    from edge.detectors.base import Reach
    from edge.models import load_manifest

    spec = load_manifest(s.recognition.models_dir).get(s.recognition.detector.model, "detector")
    reach = Reach.of(spec.extra, int(spec.extra["input"]["shape"][1]), s.recognition.detector.min_face_px)
    notes, worst = [], "PASS"
    for src in s.sources:
        if not (src.face_distance_m and src.hfov_deg):
            notes.append(f"{src.camera}: set face_distance_m and hfov_deg to check")
            worst = "WARN" if worst == "PASS" else worst
            continue
        width = src.width or 1920
        height = src.height or 1080
        px = face_pixels(src.face_distance_m, src.hfov_deg, width)
        # The detector's own minimum for this frame size (full-frame pass, or the fine pass for small faces).
        need = max(reach.smallest_face(width, height), s.recognition.quality.min_size_px)
        if px < need:
            worst = "FAIL"
            notes.append(
                f"{src.camera}: a face at {src.face_distance_m:g} m is ~{px:.0f} px across, the detector needs {need:.0f} px "
                f"(zoom in, mount closer, or raise the resolution)"
            )
        else:
            notes.append(f"{src.camera}: a face at {src.face_distance_m:g} m is ~{px:.0f} px (needs {need:.0f})")
    return Result("framing", worst, "; ".join(notes))


def check_broker(s: Settings) -> Result:
    from edge.publish import BrokerError, BrokerOptions, connect_blocking, make_client, manifest_topic, status_topic

    m = s.mqtt
    if not m.enabled:
        return Result("broker", "WARN", "mqtt.enabled = false: hits go to the console only")
    tls = m.tls if m.tls is not False else None
    # A broker that binds client ids to identities (docs/broker.md) replaces this id with the device id, so there
    # the check takes the running daemon's connection for a moment; elsewhere the suffix leaves the daemon alone.
    opts = BrokerOptions(
        host=m.host, port=m.port, ca=tls.ca if tls else None, cert=tls.cert if tls else None, key=tls.key if tls else None,
        username=m.username or s.device_id, password=m.password(), client_id=f"{s.device_id}-selftest", keepalive=10,
    )  # fmt: skip
    try:
        client = make_client(opts)
    except (OSError, ValueError) as exc:
        return Result("broker", "FAIL", f"TLS files unusable: {exc}")
    try:
        connect_blocking(client, opts, timeout=8)
    except BrokerError as exc:
        return Result("broker", "FAIL", str(exc))
    try:
        granted = threading.Event()
        codes: list[Any] = []

        def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
            codes.extend(reasons)
            granted.set()

        client.on_subscribe = on_subscribe
        client.subscribe(manifest_topic(s.watchlist.name), qos=1)
        payload = json.dumps({"schema": "edge.status/1", "device_id": s.device_id, "state": "selftest"})
        info = client.publish(status_topic(s.device_id), payload, qos=1)
        info.wait_for_publish(timeout=8)
        if not granted.wait(8) or not codes or codes[0].is_failure:
            return Result(
                "broker", "FAIL", f"connected, but may not subscribe to {manifest_topic(s.watchlist.name)} (check the ACL)"
            )
        if not info.is_published():
            return Result("broker", "FAIL", "connected, but the broker did not acknowledge a status publish")
    finally:
        client.disconnect()
        client.loop_stop()
    how = "TLS" + (" with client certificate" if opts.cert else "") if opts.ca else "plain TCP (no TLS)"
    return Result(
        "broker", "PASS" if opts.ca else "WARN", f"{m.host}:{m.port} over {how}; status published, watchlist topic subscribed"
    )


def check_clock(_s: Settings) -> Result:
    exe = shutil.which("timedatectl")
    if exe:
        try:
            out = subprocess.run(
                [exe, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            out = None
        if out is not None and out.stdout.strip() == "yes":
            return Result("clock", "PASS", "synchronised (NTP)")
        if out is not None and out.stdout.strip() == "no":
            return Result("clock", "FAIL", "not synchronised: hits would carry wrong times (check NTP / network)")
    if Path("/run/systemd/timesync/synchronized").exists():
        return Result("clock", "PASS", "synchronised (systemd-timesyncd)")
    year = time.gmtime().tm_year
    if year < 2025:
        return Result("clock", "FAIL", f"the clock says {year}: set up NTP")
    return Result("clock", "WARN", "cannot tell whether the clock is synchronised (no timedatectl); it looks plausible")


def check_disk(s: Settings) -> Result:
    path = s.data_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        return Result("disk", "FAIL", f"{free / 2**30:.2f} GiB free under {s.data_dir}; at least 1 GiB needed for a week offline")
    return Result("disk", "PASS", f"{free / 2**30:.1f} GiB free under {s.data_dir}")


RUNNERS: dict[str, Callable[[Settings], Result]] = {
    "models": check_models,
    "runtime": check_runtime,
    "camera": check_camera,
    "framing": check_framing,
    "broker": check_broker,
    "clock": check_clock,
    "disk": check_disk,
}


def run_checks(s: Settings, skip: set[str]) -> list[Result]:
    out = []
    for name in CHECKS:
        if name in skip:
            out.append(Result(name, "SKIP", "skipped"))
            continue
        try:
            out.append(RUNNERS[name](s))
        except EdgeError as exc:
            out.append(Result(name, "FAIL", str(exc)))
        except Exception as exc:  # a check must report, never crash the checklist
            log.debug("check %s crashed", name, exc_info=True)
            out.append(Result(name, "FAIL", f"{type(exc).__name__}: {exc}"))
    return out


def print_checklist(results: list[Result]) -> int:
    for r in results:
        print(f"[{r.status:<4}] {r.name:<8} {redact(r.detail)}")
    failed = [r.name for r in results if r.status == "FAIL"]
    print(f"\nself-test {'FAILED: ' + ', '.join(failed) if failed else 'passed'}")
    return 1 if failed else 0
