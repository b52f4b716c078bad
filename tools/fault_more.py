"""Fault scenarios on time and input: the wall clock jumping, and corrupt or wrongly sized frames."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tools.fault_kit import Console, broker, daemon_config, daemon_kit, start_daemon, tally


class JumpingClock:
    """The system clocks, with a wall-clock offset the scenario moves (someone setting the date, NTP stepping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


def clock_jumps(work: Path, iterations: int) -> dict[str, Any]:
    """Hits pile up while the broker is away and the wall clock jumps ±hours/days; none may age out or be lost."""
    from edge import audit
    from edge.daemon import iso
    from edge.outbox import Outbox
    from edge.publish import BrokerOptions, Publisher, hits_topic
    from tools.synthetic import hit_payload

    b = broker(work)
    console = Console(work, b.port).start()
    b.stop()
    clock = JumpingClock()
    ob = Outbox(work / "clock" / "edge.db", max_rows=100_000, max_age_s=3600, clock=clock)  # an hour: a day's jump would drop all
    pub = Publisher(BrokerOptions("127.0.0.1", b.port, client_id="pole-1"), device_id="pole-1", outbox=ob,
                    subscriptions=[], on_message=lambda *_: None)  # fmt: skip
    pub.start()
    expected: set[str] = set()
    jumps = [86400.0, -86400.0, 7200.0, -3 * 86400.0, 30 * 86400.0]
    try:
        for i in range(iterations):
            clock.offset += jumps[i % len(jumps)]
            for _ in range(25):
                p = hit_payload("pole-1", first_seen=iso(clock.time()))
                ob.add(str(p["event_id"]), hits_topic("pole-1"), json.dumps(p).encode(), kind="hit")
                expected.add(str(p["event_id"]))
        stats = ob.stats()
        b.start()
        drained = pub.wait_drained(60)
        console.wait_for(expected, 60)
        recorded = len(audit.records(ob.conn, "clock.jump"))
        ok = drained and stats.dropped == 0 and recorded == iterations and (stats.oldest_age_s or 0) >= 0
        return tally(expected, console, {"iterations": iterations, "jumps_s": [jumps[i % len(jumps)] for i in range(iterations)],
                                         "jumps_compensated": recorded, "dropped_by_age": stats.dropped,
                                         "oldest_age_s_before_delivery": stats.oldest_age_s, "ok": ok})  # fmt: skip
    finally:
        pub.stop()
        ob.close()
        console.stop()
        b.stop()


def bad_frames(folder: Path) -> int:
    """Files a camera folder might really hold that are no usable frame; returns how many must be refused."""
    rng = random.Random(3)
    (folder / "a000_empty.jpg").write_bytes(b"")
    (folder / "a001_noise.jpg").write_bytes(bytes(rng.randrange(256) for _ in range(5000)))
    (folder / "a002_text.png").write_text("this is not an image\n")
    cv2.imwrite(str(folder / "a003_tiny.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(folder / "a004_strip.png"), np.zeros((10, 9000, 3), np.uint8))
    cv2.imwrite(str(folder / "a005_sliver.png"), np.zeros((4, 640, 3), np.uint8))
    data = (folder / "f0003.jpg").read_bytes()
    (folder / "a009_truncated.jpg").write_bytes(data[: len(data) // 2])  # OpenCV 5 refuses a JPEG cut in half
    return 7


def frames(work: Path, iterations: int) -> dict[str, Any]:
    """A recording as a folder of frames, with corrupt files and odd sizes mixed in: the daemon counts them and goes on."""
    from edge.sources import OpenCVSource

    b = broker(work)
    console = Console(work, b.port).start()
    kit = daemon_kit(work)
    folder = work / "frames"
    folder.mkdir()
    src = OpenCVSource("gate", str(kit / "clip.avi"))
    src.open()
    n = 0
    refused = 0
    while (f := src.read()) is not None:
        cv2.imwrite(str(folder / f"f{n:04d}.jpg"), cv2.cvtColor(f.rgb(), cv2.COLOR_RGB2BGR))
        n += 1
    src.close()
    refused = bad_frames(folder)
    # Odd but valid frames the pipeline must take: grey, 16-bit, a different size.
    grey = np.asarray(cv2.imread(str(folder / "f0005.jpg"), cv2.IMREAD_GRAYSCALE), dtype=np.uint8)
    cv2.imwrite(str(folder / "a006_grey.png"), grey)
    cv2.imwrite(str(folder / "a007_16bit.png"), (grey.astype(np.uint16) * 256))
    cv2.imwrite(str(folder / "a008_small.jpg"), cv2.resize(grey, (160, 120)))
    run = work / "frames-run"
    cfg = daemon_config(kit, run, b.port, [str(folder)])
    # Consecutive frames of one clip, not separate photos: tracked like a video.
    cfg.write_text(cfg.read_text().replace("fps_cap = 10\n", "fps_cap = 10\nstills = false\n"))
    try:
        proc = start_daemon(cfg, run / "daemon.log")
        code = proc.wait(timeout=180)
        time.sleep(1.0)
        status = json.loads(console.query("SELECT payload FROM device_status WHERE device_id = 'pole-1'")[0][0])
        cam = status["cameras"][0]
        from tools.faults import stored_hits

        expected = stored_hits(run / "data" / "edge.db")
        console.wait_for(expected, 30)
        ok = code == 0 and len(expected) == 1 and cam["bad_frames"] == refused
        return tally(expected, console, {"iterations": iterations, "frames_good": n, "files_refused_expected": refused,
                                         "bad_frames_reported": cam["bad_frames"], "last_bad_frame": cam.get("last_bad_frame"),
                                         "frames_processed": cam["frames"], "exit_code": code, "ok": ok})  # fmt: skip
    finally:
        console.stop()
        b.stop()
