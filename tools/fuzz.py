#!/usr/bin/env python3
"""Fuzz every parser of outside input with generated inputs; every input must parse or raise the project's own error.

python tools/fuzz.py --inputs 1000000 --json fuzz.json [--seed N] [--target NAME ...]
python tools/fuzz.py --quick                      # 20,000 inputs, for release checks at reduced scale

Targets: the watchlist manifest parser, the chunk parser, verification of a bundle folder on disk,
``edge alerts`` ingest of MQTT payloads (topic + bytes), the TOML configuration loader (file and
``EDGE_*`` variables), the model manifest parser, and the device's watchlist-sync MQTT handler
(manifest, chunk and revoke topics, on a real SQLite file: refusals are audited and acked). Inputs start from real seeds (a signed
bundle, hit/status/ack payloads that the store accepts, a full config, models/manifest.json) and
are mutated structurally (JSON values, types, lengths, re-signed and re-hashed so they get past
the signature and hash checks) and byte-wise, with some purely random bytes.

A crash is any exception that is not an ``EdgeError`` (for ``edge alerts`` ingest: any
exception, since it must keep malformed messages aside instead of raising); it is recorded with
the input (hex) and the traceback. An input that takes more than ``--hang-s`` (default 1 s) of CPU
time is a hang; one still running after ``--abort-s`` of wall time is interrupted and is a hang too.
Exit status 1 on any crash or hang.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: `python tools/fuzz.py`
    sys.path.insert(0, str(ROOT))

from tools.fuzzing.base import BundleKit, Stats, Target  # noqa: E402
from tools.fuzzing.bundle_targets import ChunkTarget, FolderTarget, ManifestTarget  # noqa: E402
from tools.fuzzing.config_targets import ConfigTarget, ModelManifestTarget  # noqa: E402
from tools.fuzzing.message_targets import AlertsTarget, SyncTarget  # noqa: E402

log = logging.getLogger("fuzz")

# Share of the total inputs per target: the cheap parsers get more, the ones that touch files or pydantic fewer.
WEIGHTS = {
    "watchlist-manifest": 0.22,
    "watchlist-chunk": 0.22,
    "bundle-folder": 0.10,
    "alerts-ingest": 0.20,
    "config-toml": 0.08,
    "model-manifest": 0.18,
    "watchlist-sync": 0.10,
}
MAX_CRASH_RECORDS = 20  # per distinct (target, exception, place); all are counted
HEX_LIMIT = 16384  # bytes of an input kept in the report (the crash folder keeps the whole input)


class Hang(BaseException):
    """Raised by the alarm inside a stuck input (a BaseException, so parsers cannot swallow it)."""


TARGETS: dict[str, type[Target]] = {
    t.name: t for t in (ManifestTarget, ChunkTarget, FolderTarget, AlertsTarget, ConfigTarget, ModelManifestTarget, SyncTarget)
}


# --- the run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Interrupt a stuck input after ``seconds`` (main thread only; C code is interrupted when it returns)."""

    def fire(_sig: int, _frame: FrameType | None) -> None:
        raise Hang(f"input still running after {seconds:.0f}s")

    old = signal.signal(signal.SIGALRM, fire)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def fuzz_target(target: Target, count: int, *, hang_s: float, abort_s: float, crash_dir: Path | None,
                crashes_out: list[dict[str, Any]], progress: Callable[[int], None]) -> Stats:  # fmt: skip
    stats = Stats()
    seen: dict[str, int] = {}
    for i in range(count):
        case = target.generate()
        error: str | None = None
        t0, cpu0 = time.perf_counter(), time.thread_time()
        signal.setitimer(signal.ITIMER_REAL, abort_s)
        try:
            accepted = target.run(case)
        except Hang as exc:
            accepted, error = False, f"Hang: {exc}"
        except target.expected as exc:
            accepted = False
            stats.rejections[type(exc).__name__] = stats.rejections.get(type(exc).__name__, 0) + 1
        except Exception:
            accepted, error = False, traceback.format_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        # CPU time, not wall time, decides a hang: on a shared machine a process can wait seconds for a core.
        # An input blocked without using the CPU is caught by the wall-clock alarm (abort_s) instead.
        ms = (time.thread_time() - cpu0) * 1000
        stats.slowest_wall_ms = max(stats.slowest_wall_ms, (time.perf_counter() - t0) * 1000)
        stats.inputs += 1
        if ms > stats.slowest_ms:
            stats.slowest_ms = ms
            stats.slowest_input_hex = target.describe(case)[:256].hex()
        hang = ms > hang_s * 1000
        if error is None and not hang:
            stats.accepted += accepted
            stats.rejected += not accepted
        else:
            kind = "crash" if error is not None and not error.startswith("Hang") else "hang"
            stats.hangs += kind == "hang"
            stats.crashes += kind == "crash"
            text = error or f"took {ms:.0f} ms"
            where = text.strip().splitlines()
            signature = f"{kind}:{where[-1][:120] if where else ''}:{where[-3][:200] if len(where) > 2 else ''}"
            seen[signature] = seen.get(signature, 0) + 1
            if seen[signature] <= MAX_CRASH_RECORDS:
                raw = target.describe(case)
                record = {"target": target.name, "kind": kind, "index": i, "ms": round(ms, 1), "error": text,
                          "input_hex": raw[:HEX_LIMIT].hex(), "input_bytes": len(raw)}  # fmt: skip
                if crash_dir is not None:
                    crash_dir.mkdir(parents=True, exist_ok=True)
                    path = crash_dir / f"{target.name}-{i}.bin"
                    path.write_bytes(raw)
                    record["file"] = str(path)
                crashes_out.append(record)
                log.error("%s %s on input %d (%d bytes): %s", target.name, kind, i, len(raw), where[-1] if where else text)
        if i % 1000 == 999:
            progress(1000)
    progress(count % 1000)
    return stats


def plan(total: int, names: list[str]) -> dict[str, int]:
    weights = {n: WEIGHTS[n] for n in names}
    scale = sum(weights.values())
    counts = {n: int(total * w / scale) for n, w in weights.items()}
    counts[names[0]] += total - sum(counts.values())  # rounding remainder, so the total is exact
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--inputs", type=int, default=1_000_000, help="generated inputs in total, split over the targets (default 1,000,000)"
    )
    p.add_argument("--quick", action="store_true", help="20,000 inputs in total (release checks at reduced scale)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed generates the same inputs")
    p.add_argument("--target", action="append", choices=sorted(TARGETS), help="fuzz only this target (repeatable)")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    p.add_argument("--hang-s", type=float, default=1.0, help="an input using more CPU time than this is a hang (default 1 s)")
    p.add_argument("--abort-s", type=float, default=10.0, help="an input still running after this is interrupted (default 10 s)")
    p.add_argument("--crash-dir", type=Path, help="write each recorded crashing input to this folder in full")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    total = 20_000 if args.quick else args.inputs
    names = args.target or list(TARGETS)
    counts = plan(total, names)
    logging.getLogger("edge").setLevel(logging.CRITICAL)  # rejections log warnings; millions of them are noise
    crashes: list[dict[str, Any]] = []
    per_target: dict[str, Stats] = {}
    started = time.monotonic()
    done = 0
    last_report = started

    def progress(n: int) -> None:
        nonlocal done, last_report
        done += n
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            log.info("%d of %d inputs, %.0f s", done, total, last_report - started)

    with tempfile.TemporaryDirectory(prefix="edge-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        kit = BundleKit(random.Random(f"{args.seed}:kit"))
        with alarm(args.abort_s):
            for name in names:
                work = Path(tmp) / name
                work.mkdir()
                target = TARGETS[name](random.Random(f"{args.seed}:{name}"), work, kit)
                t0 = time.monotonic()
                per_target[name] = fuzz_target(target, counts[name], hang_s=args.hang_s, abort_s=args.abort_s,
                                               crash_dir=args.crash_dir, crashes_out=crashes, progress=progress)  # fmt: skip
                target.close()
                per_target[name].rejections.update(target.reasons)
                s = per_target[name]
                log.info("%s: %d inputs in %.1f s, %d accepted, %d rejected, %d crashes, %d hangs, slowest %.1f ms", name,
                         s.inputs, time.monotonic() - t0, s.accepted, s.rejected, s.crashes, s.hangs, s.slowest_ms)  # fmt: skip
    seconds = time.monotonic() - started
    result = {
        "inputs_total": sum(s.inputs for s in per_target.values()),
        "seed": args.seed,
        "per_target": {n: s.__dict__ for n, s in per_target.items()},
        "crashes": sum(s.crashes for s in per_target.values()),
        "hangs": sum(s.hangs for s in per_target.values()),
        "seconds": round(seconds, 1),
        "crash_records": crashes,
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['inputs_total']} inputs in {seconds:.0f} s: {result['crashes']} crashes, {result['hangs']} hangs "
        f"({', '.join(f'{n} {s.inputs}' for n, s in per_target.items())})"
    )
    return 1 if result["crashes"] or result["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
