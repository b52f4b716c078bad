"""Fuzz targets for configuration: the TOML file and EDGE_* variables, and the model manifest."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from datetime import datetime
from pathlib import Path
from typing import Any

from edge import models as edge_models
from edge.config import load_settings
from edge.errors import EdgeError
from tools.fuzzing.base import BundleKit, Target, _keys_of
from tools.fuzzing.mutator import Mutator

CONFIG_SEED = """\
device_id = "pole-7"
data_dir = "/var/lib/edge"

[[sources]]
camera = "gate"
url = "rtsp://10.0.0.5/stream1"
fps_cap = 10.0
width = 1920
height = 1080
face_distance_m = 6.0
hfov_deg = 62.2

[[sources]]
camera = "yard"
url = "0"
stop_at_end = false

[mqtt]
host = "broker.example.net"
port = 8883
tls = { ca = "/etc/edge/ca.pem", cert = "/etc/edge/device.pem", key = "/etc/edge/device.key" }
username = "pole-7"
keepalive_s = 30
status_interval_s = 30.0
max_inflight = 50

[recognition]
embedder = "mobilefacenet"
accelerator = "auto"
threads = 2
flip = true

[recognition.detector]
model = "blazeface-full-range"
close_face_retry = true

[recognition.quality]
min_size_px = 24.0
min_sharpness = 10.0
max_abs_yaw = 60.0

[watchlist]
name = "city"
public_keys = ["/etc/edge/watchlist.pub", "/etc/edge/watchlist-next.pub"]
assemble_timeout_s = 300.0

[tracking]
iou_match = 0.3
min_frames = 2
realert_s = 60.0

[outbox]
max_rows = 200000
max_age_days = 14.0

[privacy]
thumbnails = false
retention_days = 30.0

[daemon]
queue_frames = 4
drain_timeout_s = 600.0
"""
ENV_KEYS = ["EDGE_DEVICE_ID", "EDGE_DATA_DIR", "EDGE_SOURCES", "EDGE_MQTT", "EDGE_MQTT__PORT", "EDGE_MQTT__TLS",
            "EDGE_MQTT__TLS__CA", "EDGE_WATCHLIST__PUBLIC_KEYS", "EDGE_RECOGNITION__THRESHOLD", "EDGE_TRACKING",
            "EDGE_RECOGNITION__DETECTOR__SCORE_THRESHOLD", "EDGE_PRIVACY__THUMBNAILS", "EDGE_UNKNOWN"]  # fmt: skip
ENV_VALUES = ["", "1", "-1", "abc", "[]", "{}", "[1", "{\"a\":", '[{"camera":"x","url":"y"}]', '{"port": "x"}', "false",
              "true", "1e999", "nan", "é", "99999999999999999999999", '{"ca": 1}', '["/a", 2]', "1" * 5000]  # fmt: skip


def _toml_key(k: str) -> str:
    if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k):
        return k
    return json.dumps(k, ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, datetime):
        return v.isoformat()
    return '""'  # None: TOML has no null


def to_toml(doc: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer (tables, arrays of tables, inline values) for the mutated configuration."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not _is_table(v) and not _is_table_array(v)]
    for k, v in doc.items():
        name = f"{prefix}{_toml_key(k)}"
        if _is_table(v):
            lines.append(f"\n[{name}]\n" + to_toml(v, name + "."))
        elif _is_table_array(v):
            lines.extend(f"\n[[{name}]]\n" + to_toml(item, name + ".") for item in v)
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict) and not any(_is_table_array(x) for x in v.values()) and len(v) != 1


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


class ConfigTarget(Target):
    """``load_settings``: a TOML file (mutated as a document or as text) and sometimes ``EDGE_*`` variables."""

    name = "config-toml"

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        import tomllib

        self.doc = tomllib.loads(CONFIG_SEED)
        self.m = Mutator(rng, _keys_of(self.doc))
        self.path = work / "edge.toml"
        self.lines = CONFIG_SEED.splitlines()

    def generate(self) -> tuple[bytes, dict[str, str]]:
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            doc = self.m.mutate_json(self.doc)
            text = to_toml(doc).encode("utf-8", "surrogatepass") if isinstance(doc, dict) else self.m.dump_json(doc)
        elif r < 0.75:  # line edits: drop, repeat, swap, or add a line
            lines = list(self.lines)
            for _ in range(rng.choice([1, 2, 3])):
                i = rng.randrange(len(lines))
                op = rng.randrange(4)
                if op == 0:
                    del lines[i]
                elif op == 1:
                    lines.insert(i, lines[i])
                elif op == 2:
                    j = rng.randrange(len(lines))
                    lines[i], lines[j] = lines[j], lines[i]
                else:
                    lines.insert(i, f"{self.m.key()} = {_toml_value(self.m.value())}")
            text = "\n".join(lines).encode("utf-8", "surrogatepass")
        elif r < 0.95:
            text = self.m.mutate_bytes(CONFIG_SEED.encode())
        else:
            text = self.m.random_bytes()
        env: dict[str, str] = {}
        if rng.random() < 0.15:
            for _ in range(rng.choice([1, 2])):
                env[rng.choice(ENV_KEYS)] = rng.choice(ENV_VALUES)
        return text, env

    def run(self, case: tuple[bytes, dict[str, str]]) -> bool:
        text, env = case
        self.path.write_bytes(text)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            load_settings(self.path)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return True

    def describe(self, case: tuple[bytes, dict[str, str]]) -> bytes:
        return json.dumps(case[1]).encode() + b"\n" + case[0]


class ModelManifestTarget(Target):
    """The model manifest, then the look-ups the device makes with it (embedder, detector, Edge TPU variant)."""

    name = "model-manifest"

    def __init__(self, rng: random.Random, work: Path, kit: BundleKit) -> None:
        super().__init__(rng, work, kit)
        self.seed = (edge_models.default_models_dir() / edge_models.MANIFEST_NAME).read_bytes()
        self.doc = json.loads(self.seed)
        self.m = Mutator(rng, _keys_of(self.doc))
        self.names = list(self.doc.get("models", {}))

    def generate(self) -> bytes:
        r = self.rng.random()
        if r < 0.6:
            return self.m.dump_json(self.m.mutate_json(self.doc))
        if r < 0.95:
            return self.m.mutate_bytes(self.seed)
        return self.m.random_bytes()

    def run(self, case: bytes) -> bool:
        manifest = edge_models.parse_manifest(case, self.work)
        for name in self.names:
            with contextlib.suppress(EdgeError):
                spec = manifest.get(name, self.rng.choice([None, "embedder", "detector"]))
                manifest.variant(spec.name, "edgetpu")
                manifest.path(spec)
        return True
