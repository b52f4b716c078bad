"""The ``edge`` command: one entry point, one subcommand per job.

Subcommands import their modules lazily so ``edge --help`` is fast and the device path
never pulls in operator-side code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from edge import __version__
from edge.cli_args import analyser_from_args, recognition_args
from edge.errors import EdgeError
from edge.redact import install_log_filter, redact

log = logging.getLogger("edge")


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _views(args: argparse.Namespace) -> Any:
    """The enrolment views: ``--enrol-views`` (``none``: off), else the config's ``recognition.enrol_views``."""
    from edge.config import load_settings
    from edge.distant_views import DistantViews

    if args.enrol_views is None:
        if args.enrol_views_jpeg is not None:
            raise EdgeError("--enrol-views-jpeg needs --enrol-views")
        return DistantViews.from_settings(load_settings(args.config).recognition.enrol_views)
    if args.enrol_views.strip().lower() == "none":
        return None
    try:
        sizes = tuple(int(v) for v in args.enrol_views.split(","))
        return DistantViews(sizes=sizes, jpeg_quality=args.enrol_views_jpeg)
    except ValueError as exc:
        raise EdgeError(f"--enrol-views {args.enrol_views!r}: {exc}") from exc


def _views_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--enrol-views",
        help="also enrol each enrolment face shrunk to these widths in px (comma-separated, e.g. 32,48), found and "
        "embedded as a distant probe is (an identity scores the max over its embeddings); none: the photo's "
        "embedding only (default: the config's recognition.enrol_views, as watchlist build enrols)",
    )
    p.add_argument(
        "--enrol-views-jpeg", type=int, help="with --enrol-views: JPEG quality to record the views at (default: not encoded)"
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from edge.measure.evaluate import evaluate

    if args.details is not None and not args.details.parent.is_dir():
        raise EdgeError(f"--details {args.details}: folder {args.details.parent} does not exist")
    views = _views(args)  # a bad value is refused before the models load
    analyser = analyser_from_args(args, threshold=args.threshold)
    report, scores, results = evaluate(
        analyser, args.manifest, nonfaces=args.nonfaces, enrol=args.enrol, quality_gate=args.quality_gate, views=views
    )
    c = report["counts"]
    used = report["enrol_views"]
    seen = f"views {used['sizes']} px, JPEG {used['jpeg_quality']}" if used else "no views"
    print(f"embedder {report['embedder']}, detector {report['detector']}, enrol {report['enrol']} ({seen})")
    print(
        f"identities {c['identities']} (enrolled {c['enrolled']}), genuine probes {c['genuine_probes']}, "
        f"impostor probes {c['impostor_probes']}, pairs {c['genuine_pairs']} genuine / {c['impostor_pairs']} impostor"
    )
    print(f"detection rate      {report['detection_rate']:.1%} ({c['detection_failures']} images without a face)")
    for far, tar in report["tar_at_far"].items():
        print(f"TAR @ FAR={far:<6}   {tar:.1%}")
    print(f"rank-1              {report['rank1']:.1%}")
    # A gallery larger than the shipped threshold holds is matched as the device would match it: stricter.
    policy = analyser.threshold.for_entries(c["enrolled"])
    which = "shipped threshold  " if policy is analyser.threshold else f"threshold, {c['enrolled']} entries"
    print(f"{which} {report['threshold']:.3f}: FNIR {report['fnir']:.1%}, FPIR {report['fpir']:.1%}")
    if report["nonface_false_detections_per_image"] is not None:
        print(f"non-face false detections per image {report['nonface_false_detections_per_image']:.3f}")
    ms = report["ms_per_image"]
    print(f"ms per image        detect {ms['detect']:.1f}, align+embed {ms['embed']:.1f}")
    _write_json(args.json, report)
    if args.details is not None:
        from edge.measure.details import probe_details, write_details

        rows = probe_details(args.manifest, args.enrol, scores, results, policy)
        write_details(args.details, rows)
        wrong = sum(1 for r in rows if r["outcome"] in ("miss", "false match"))
        print(f"per-probe details   {args.details} ({len(rows)} probes, {wrong} missed or falsely matched, with reasons)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import os
    import resource

    from edge.config import load_settings
    from edge.measure.bench import run_bench
    from edge.measure.stream import stream_bench

    analyser = analyser_from_args(args)
    result = run_bench(analyser, quick=args.quick)
    photos = args.photos or (Path(os.environ["EDGE_DEV_DATA"]) if os.environ.get("EDGE_DEV_DATA") else None)
    result.update(stream_bench(analyser, quick=args.quick, settings=load_settings(args.config), photos=photos))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['arch']}, {m['runtime']}; embedder {result['embedder']}")
    print("stage latency (ms)   median     p90")
    for stage, s in result["stages_ms"].items():
        print(f"  {stage:<18} {s['median']:>7.2f} {s['p90']:>7.2f}")
    print("end-to-end frames/s  " + "  ".join(f"{k:>8}" for k in ("faces_0", "faces_1", "faces_5")) + "  (plain reference)")
    ref = result["reference"]["fps"]
    for res, row in result["fps"].items():
        print(
            f"  {res:<18} " + "  ".join(f"{row[k]:>8.1f}" for k in ("faces_0", "faces_1", "faces_5"))
            + "  (" + " ".join(f"{ref[res][k]:.1f}" for k in ("faces_0", "faces_1", "faces_5")) + ")"
        )  # fmt: skip
    for name, st in result["streams"].items():
        e, p = st["edge"], st["reference"]
        occupied = f", someone in view in {st['occupied']:.0%} of them" if "occupied" in st else ""
        print(f"stream {name}: {e['frames']} frames{occupied}")
        rows = [("edge", e), ("plain", p)] + ([("finding", st["reference_finding"])] if "reference_finding" in st else [])
        for who, r in rows:
            print(
                f"  {who:<8} {r['fps']:>6.1f} frames/s  {r['cpu_s_per_video_min']:>6.1f} CPU-s per video minute  "
                f"hits {r['hits_found']}/{r['hits_expected']}  faces embedded {r['embedded']}"
            )
        print(f"  edge/plain: speed {st['speed_ratio']:.2f}x, CPU {st['cpu_ratio']:.2f}x")
        if "reference_finding" in st:
            print(
                f"  edge/finding (plain with edge's detector at the small faces' scale): speed "
                f"{st['speed_ratio_finding']:.2f}x, CPU {st['cpu_ratio_finding']:.2f}x"
            )
    print(f"load average during the run: {result['load_average']}")
    print(f"matcher ({result['matcher_kind']}), ms median / p90")
    for n, s in result["matcher_ms"].items():
        mb = result["matcher_memory_mb"][n]
        print(f"  {int(n):>9,} entries  {s['median']:>7.2f} {s['p90']:>7.2f}   ({mb:.0f} MB)")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    _write_json(args.json, result)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from edge.measure.calibrate import calibrate, write_threshold

    views = _views(args)  # a bad value is refused before the models load
    analyser = analyser_from_args(args, threshold=0.0)
    result = calibrate(analyser, args.manifest, args.impostor_photos or [], target_far=args.target_far, views=views)
    print(
        f"{analyser.embedder.name}: {result.pairs} impostor pairs (mean {result.mean:.3f}, sd {result.std:.3f}); "
        f"gaussian tail {result.details['gaussian']:.3f}, empirical {result.details['empirical']:.3f} "
        f"at pair FAR {result.target_far:g}"
    )
    bands = ", ".join(f"under {below:g} px +{r:.3f}" for below, r in result.raises.items())
    print(f"base threshold {result.base:.3f}; {bands} (rules add up; {result.small_pairs} tiny-face pairs)")
    rows = ", ".join(
        f"{far:g}: {b:.3f}" + (f" (+{sum(r.values()):.3f} small)" if any(r.values()) else "") for far, b, r in result.stricter
    )
    if rows:
        print(f"stricter, for watchlists the base cannot keep within recognition.max_fpir (pair FAR: base): {rows}")
    for row in result.details["holdout"]:
        checks = ", ".join(
            f"{k} {v['threshold']:.3f}: {v['at_or_above']}/{v['held_out_pairs']}" for k, v in row.items() if isinstance(v, dict)
        )
        print(f"held out: fitted on {row['fitted_on']} identities, pairs of the other {row['checked_on']} at or above: {checks}")
    if args.write:
        path = analyser.manifest.directory / "manifest.json"
        write_threshold(path, analyser.embedder.name, result, data=str(args.manifest.name))
        print(f"written to {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from edge.demo import run_demo

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edge-demo-"))
    return run_demo(analyser_from_args(args), workdir, use_broker=not args.console)


def cmd_run(args: argparse.Namespace) -> int:
    from edge.config import load_settings
    from edge.daemon import Daemon

    return Daemon(load_settings(args.config), json_hits=args.json).run()


def cmd_config(args: argparse.Namespace) -> int:
    from edge.config import load_settings

    settings = load_settings(args.config)
    if args.config_command == "check":
        from edge.sources import recording_problem

        problems = [f"sources {src.camera}: {p}" for src in settings.sources if (p := recording_problem(src.url))]
        if problems:
            raise EdgeError(f"{args.config}: " + "; ".join(problems))
        print(f"{args.config}: valid ({len(settings.sources)} sources, watchlist {settings.watchlist.name})")
        return 0
    data = json.loads(settings.model_dump_json())
    if data["mqtt"].get("password_file"):
        data["mqtt"]["password_file"] = f"{data['mqtt']['password_file']} (contents not shown)"
    print(json.dumps(data, indent=2))
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from edge.config import load_settings
    from edge.selftest import CHECKS, print_checklist, run_checks

    skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
    unknown = skip - set(CHECKS)
    if unknown:
        raise EdgeError(f"--skip: unknown checks {sorted(unknown)}; choose from {', '.join(CHECKS)}")
    return print_checklist(run_checks(load_settings(args.config), skip))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="Camera-side face recognition: device and operator tools.")
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("eval", help="accuracy on a labelled photo manifest (the evaluation protocol)")
    p.add_argument("--manifest", type=Path, required=True, help="CSV with columns path,identity (paths relative to it)")
    p.add_argument("--nonfaces", type=Path, help="CSV of images without faces, to count false detections")
    p.add_argument("--enrol", type=int, default=1, help="images enrolled per identity (default 1)")
    p.add_argument("--quality-gate", action="store_true", help="apply the quality gate (default: every detected face)")
    p.add_argument("--threshold", type=float, help="evaluate at this base threshold instead of the calibrated one")
    p.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    p.add_argument(
        "--details",
        type=Path,
        help="write one row per probe (face found, score against its own identity, threshold, top-1, outcome, "
        "reason for each miss) to this CSV file (JSON when it ends in .json)",
    )
    _views_args(p)
    recognition_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "bench", help="per-stage latency, frames/s (edge and a plain reference pipeline), streams, matcher latency"
    )
    p.add_argument("--quick", action="store_true", help="fewer repetitions, matcher up to 100k entries (under a minute)")
    p.add_argument(
        "--photos",
        type=Path,
        help="folder with faces.csv (path,identity) whose people walk through the stream clips "
        "(default: $EDGE_DEV_DATA, else the two shipped sample photos)",
    )
    p.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    recognition_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("calibrate", help="choose the embedder's match threshold from impostor scores")
    p.add_argument("--manifest", type=Path, required=True, help="labelled faces CSV (path,identity)")
    p.add_argument(
        "--impostor-photos", type=Path, action="append", help="CSV of photos whose faces are all impostors (repeatable)"
    )
    p.add_argument("--target-far", type=float, default=1e-4, help="pair false-accept rate to calibrate for")
    p.add_argument("--write", action="store_true", help="store the result in models/manifest.json")
    _views_args(p)
    recognition_args(p)
    p.set_defaults(func=cmd_calibrate)

    from edge.operator.watchlist_cli import add_parser as add_watchlist

    add_watchlist(sub)

    from edge.operator.provision import add_parser as add_provision

    add_provision(sub)

    from edge.central.cli import add_parser as add_alerts

    add_alerts(sub)

    from edge.central.web.cli import add_parser as add_console

    add_console(sub)

    p = sub.add_parser("run", help="run the device daemon (foreground; systemd runs it as edge.service)")
    p.add_argument("--config", type=Path, required=True, help="device config (TOML); keys in the README")
    p.add_argument("--json", action="store_true", help="also print each hit as one JSON line on stdout (the hit payload)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="check or show a device config")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    for name, text in (("check", "validate; exit non-zero naming each bad key"), ("show", "print the effective settings")):
        cp = csub.add_parser(name, help=text)
        cp.add_argument("--config", type=Path, required=True, help="device config (TOML)")
        cp.set_defaults(func=cmd_config)

    p = sub.add_parser("selftest", help="check an installed device: models, runtime, camera, framing, broker, clock, disk")
    p.add_argument("--config", type=Path, default=Path("/etc/edge/edge.toml"), help="device config (default /etc/edge/edge.toml)")
    p.add_argument("--skip", help="comma-separated checks to skip: models,runtime,camera,framing,broker,clock,disk")
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("demo", help="the whole loop on sample data shipped with edge (no camera needed)")
    p.add_argument("--workdir", type=Path, help="where to put the demo's keys, watchlist, clip and database")
    p.add_argument("--console", action="store_true", help="print hits to the console even when a broker is running")
    recognition_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    install_log_filter()  # camera URLs carry passwords; no log line shows one
    try:
        return int(args.func(args))
    except EdgeError as exc:
        print(f"edge: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a command installed its own handler (e.g. while models load)
        print("edge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (so the interpreter's final flush does not fail again)
        return 0
    except OSError as exc:  # a path given on the command line that cannot be read or written
        where = f" {exc.filename}" if exc.filename else ""
        print(f"edge: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
