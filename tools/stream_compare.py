#!/usr/bin/env python3
"""Whole processes on one clip: ``edge run`` against the plain per-frame pipeline (wall time, CPU-seconds, hits).

    python tools/stream_compare.py --photos ../shared/data/faces [--size 640x480] [--frames 460] [--out DIR]

A clip of people walking past (edge.measure.clips; five of them on a signed watchlist, the
rest strangers) is written as MJPEG AVI. ``edge run`` processes it (MQTT off, stop_at_end),
then a second process runs the plain pipeline on the same file (every frame decoded, the
detector's full-frame pass once, every face embedded and matched, the same alert policy).
Both are timed as whole processes (model loading included); CPU time comes from the
kernel's accounting of the child (os.wait4). Run on a quiet machine and quote ``uptime``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def run_timed(cmd: list[str], log: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


def plain_main(config: Path) -> int:
    """The plain per-frame pipeline over the config's first source; prints one ``HIT entry`` line per hit."""
    from edge.analyze import FaceAnalyser
    from edge.capture import CapturedFrame
    from edge.config import load_settings
    from edge.db import connect
    from edge.match import Matcher, MatcherHolder
    from edge.measure.stream import PlainPipeline
    from edge.sources import make_source
    from edge.watchlist.store import WatchlistStore

    settings = load_settings(config)
    analyser = FaceAnalyser.from_settings(settings.recognition)
    holder = MatcherHolder(Matcher.from_store(WatchlistStore(connect(settings.database)), settings.watchlist.name))
    plain = PlainPipeline(analyser, holder, settings.tracking)
    src = settings.sources[0]
    source = make_source(src.camera, src.url)
    source.open()
    fps = source.media_fps or 25.0
    i = 0
    decisions = []
    while (picture := source.read()) is not None:
        picture.rgb()  # every frame decoded in full, as the plain pipeline needs it (and in this thread, as before)
        decisions += plain.process(CapturedFrame(src.camera, picture, i, i / fps, time.time()))
        i += 1
    decisions += plain.tracker.finish()
    for d in decisions:
        print(f"HIT entry {d.entry_id}", flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, help="folder with faces.csv (default: the shipped samples)")
    p.add_argument("--size", default="640x480")
    p.add_argument("--frames", type=int, default=460)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--out", type=Path, default=Path("/tmp/edge-stream-compare"))
    p.add_argument("--plain", type=Path, help=argparse.SUPPRESS)  # internal: run the plain pipeline on this config
    args = p.parse_args()
    if args.plain:
        return plain_main(args.plain)

    from edge.analyze import FaceAnalyser
    from edge.cli import main as edge
    from edge.config import RecognitionSettings
    from edge.measure.clips import load_people, make_clip

    w, h = (int(v) for v in args.size.split("x"))
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    (out / "photos").mkdir(parents=True)
    analyser = FaceAnalyser.from_settings(RecognitionSettings())
    cast = load_people(analyser, args.photos, count=10, listed=5)
    clip = make_clip(analyser, args.photos, size=(w, h), frames=args.frames, fps=args.fps, cast=cast)
    writer = cv2.VideoWriter(str(out / "clip.avi"), cv2.VideoWriter.fourcc(*"MJPG"), args.fps, (w, h))
    for data in clip.jpegs:
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert frame is not None
        writer.write(frame)
    writer.release()
    for person in cast[0]:
        if person.listed:
            (out / "photos" / person.identity).mkdir()
            cv2.imwrite(str(out / "photos" / person.identity / "enrol.png"), cv2.cvtColor(person.patch, cv2.COLOR_RGB2BGR))
    assert edge(["watchlist", "keygen", "--out", str(out / "keys")]) == 0
    assert edge(["watchlist", "build", "--photos", str(out / "photos"), "--name", "bench", "--version", "1",
                 "--key", str(out / "keys" / "watchlist.key"), "--out", str(out / "bundle"), "--quiet"]) == 0  # fmt: skip
    cfg = out / "edge.toml"
    cfg.write_text(
        f'device_id = "bench"\ndata_dir = "{out / "data"}"\n'
        f'[[sources]]\ncamera = "street"\nurl = "{out / "clip.avi"}"\nstop_at_end = true\n'
        f'[mqtt]\nenabled = false\n[watchlist]\nname = "bench"\npublic_keys = ["{out / "keys" / "watchlist.pub"}"]\n'
    )
    assert edge(["watchlist", "apply", str(out / "bundle"), "--config", str(cfg)]) == 0
    expected = sorted(clip.expected)
    load = os.getloadavg()
    edge_row = run_timed([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], out / "edge.log")
    edge_hits = sorted(set(re.findall(r"\bHIT \S+ camera \S+ entry (\S+)", (out / "edge.log").read_text())))
    plain_row = run_timed([sys.executable, __file__, "--plain", str(cfg)], out / "plain.log")
    plain_hits = sorted(set(re.findall(r"^HIT entry (\S+)$", (out / "plain.log").read_text(), re.M)))
    result = {
        "clip": {"size": args.size, "frames": args.frames, "fps": args.fps, "expected_hits": expected},
        "edge_run": {**edge_row, "hits": edge_hits},
        "plain": {**plain_row, "hits": plain_hits},
        "speed_ratio": round(plain_row["wall_s"] / edge_row["wall_s"], 2),
        "cpu_ratio": round(edge_row["cpu_s"] / plain_row["cpu_s"], 2),
        "load_average": [round(x, 2) for x in load + os.getloadavg()],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
