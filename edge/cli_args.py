"""Arguments shared by the commands that run the models (eval, bench, calibrate, demo, watchlist build).

Its own module so that ``edge.cli`` and the operator commands both use it without importing each other.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def recognition_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="device config (TOML); its [recognition] section is used")
    p.add_argument("--embedder", help="embedder from models/manifest.json (default: the config's, else mobilefacenet)")
    p.add_argument("--detector", help="detector from models/manifest.json (default: the config's, else yunet)")
    p.add_argument("--accelerator", choices=["auto", "cpu", "edgetpu"], help="where models run (default: auto)")
    p.add_argument("--threads", type=int, help="CPU threads per model (default: 2)")


def analyser_from_args(args: argparse.Namespace, *, threshold: float | None = None) -> Any:
    from edge.analyze import FaceAnalyser
    from edge.config import load_settings

    settings = load_settings(args.config)
    rec = settings.recognition
    updates: dict[str, Any] = {}
    if args.embedder:
        updates["embedder"] = args.embedder
    if args.accelerator:
        updates["accelerator"] = args.accelerator
    if args.threads:
        updates["threads"] = args.threads
    if threshold is not None:
        updates["threshold"] = threshold
    if args.detector:
        updates["detector"] = rec.detector.model_copy(update={"model": args.detector})
    return FaceAnalyser.from_settings(rec.model_copy(update=updates))
