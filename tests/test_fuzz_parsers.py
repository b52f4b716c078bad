"""Parsers of outside input: whatever arrives, the answer is a value or the project's own error, never a crash.

The bundle parsers and ``edge alerts`` ingest have their own property tests (test_bundle_format.py,
test_alerts.py); this file covers the configuration, the model manifest and the shared JSON loader,
and runs the scripted fuzzer (tools/fuzz.py) at a tiny scale.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge.config import Settings, load_settings
from edge.errors import ConfigError, InputFormatError, ModelError
from edge.models import default_models_dir, parse_manifest
from edge.untrusted import load_json
from tools.fuzzing.config_targets import CONFIG_SEED, to_toml

ROOT = Path(__file__).resolve().parent.parent
SLOW_OK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20
)


# --- the shared JSON loader ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"1" * 5000, "Exceeds the limit"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"a": -Infinity}', "Infinity is not JSON"),
        (b'["\\ud800"]', "unpaired"),
        (b"\xff\xfe{}", "utf-8"),
        ('{"a": 1}'.encode("utf-16"), "utf-8"),  # json.loads would sniff UTF-16; the contract says UTF-8
    ],
    ids=["5000 digits", "deep nesting", "NaN", "-Infinity", "lone surrogate", "not UTF-8", "UTF-16"],
)
def test_every_way_json_can_fail_is_one_input_format_error(data: bytes, why: str) -> None:
    with pytest.raises(InputFormatError, match=why):
        load_json(data)


def test_a_correct_surrogate_pair_is_a_character_not_an_error() -> None:
    assert load_json(b'["\\ud83d\\ude00"]') == ["\U0001f600"]


@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
@settings(max_examples=300)
def test_load_json_returns_a_value_or_raises_input_format_error(data: bytes) -> None:
    try:
        value = load_json(data)
    except InputFormatError:
        return
    json.dumps(value, allow_nan=False).encode("utf-8")  # whatever it returns can be stored and hashed again


# --- the configuration file ---------------------------------------------------------------------


def _config_doc() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(CONFIG_SEED)


SECTIONS = list(_config_doc())


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """The full example configuration with a few values replaced by anything TOML can hold."""
    doc = _config_doc()
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(SECTIONS))
        value = draw(scalars.filter(lambda v: v is not None) | st.lists(scalars.filter(lambda v: v is not None), max_size=3))
        if isinstance(doc[section], dict) and doc[section] and draw(st.booleans()):
            doc[section][draw(st.sampled_from(sorted(doc[section])))] = value
        else:
            doc[section] = value
    return doc


def test_the_fuzzers_example_configuration_is_valid(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(CONFIG_SEED)
    s = load_settings(cfg)
    assert [src.camera for src in s.sources] == ["gate", "yard"] and s.mqtt.port == 8883


@given(mutated_configs())
@SLOW_OK
def test_a_mutated_configuration_loads_or_is_refused_with_config_error(tmp_path: Path, doc: dict[str, Any]) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(to_toml(doc), encoding="utf-8", errors="surrogatepass")
    try:
        assert isinstance(load_settings(cfg), Settings)
    except ConfigError as exc:
        assert str(exc).startswith(("invalid configuration", "configuration file")), str(exc)


@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(b"a = " + b"1" * 5000)  # beyond Python's integer digit limit: a ValueError inside tomllib
@example(b"a = " + b"[" * 2000 + b"]" * 2000)
@example(b"\xff\xfe")
@example(b"{}\n\r")  # a bare CR: valid for a text-mode read, not for the TOML loader (found by tools/fuzz.py)
@SLOW_OK
def test_arbitrary_bytes_as_a_config_file_never_crash(tmp_path: Path, data: bytes) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_bytes(data)
    with contextlib.suppress(ConfigError):
        load_settings(cfg)


@pytest.mark.parametrize(
    ("name", "value"),
    [("EDGE_SOURCES", "not json"), ("EDGE_MQTT", "{"), ("EDGE_WATCHLIST__PUBLIC_KEYS", "[1"), ("EDGE_MQTT__PORT", "x")],
)
def test_a_malformed_environment_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"invalid configuration"):
        load_settings()


# --- the model manifest -------------------------------------------------------------------------


def _models_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((default_models_dir() / "manifest.json").read_text())
    return doc


MODEL_NAMES = sorted(_models_doc()["models"])
MODEL_FIELDS = ["kind", "file", "sha256", "size", "variant_of", "accelerator", "embedding_space", "threshold"]


@st.composite
def mutated_model_manifests(draw: st.DrawFn) -> Any:
    doc = _models_doc()
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(MODEL_NAMES))
        if draw(st.integers(0, 9)) == 0:
            doc["models"][name] = draw(json_values)
        elif isinstance(doc["models"].get(name), dict):
            doc["models"][name][draw(st.sampled_from(MODEL_FIELDS))] = draw(json_values)
    return doc if draw(st.integers(0, 19)) else draw(json_values)


@given(mutated_model_manifests())
@settings(max_examples=300, deadline=None)
def test_a_mutated_model_manifest_parses_with_typed_fields_or_raises_model_error(doc: Any) -> None:
    data = json.dumps(doc).encode()
    try:
        m = parse_manifest(data, Path("/nonexistent"))
    except ModelError as exc:
        assert "manifest" in str(exc)
        return
    for spec in m.models.values():  # what the device relies on after a successful parse
        assert isinstance(spec.file, str) and isinstance(spec.sha256, str) and isinstance(spec.kind, str)
        assert isinstance(spec.size, int) and not isinstance(spec.size, bool) and spec.size >= 0
        assert spec.variant_of is None or isinstance(spec.variant_of, str)
        assert not any(isinstance(v, float) and not math.isfinite(v) for v in spec.extra.values())


@given(st.binary(max_size=300))
@example(b'{"models": {"x": {"kind": "embedder", "file": "f", "sha256": "s", "size": 1e999}}}')
@example(b'{"models": {"x": 3}}')
@settings(max_examples=300)
def test_arbitrary_bytes_as_a_model_manifest_raise_model_error(data: bytes) -> None:
    with contextlib.suppress(ModelError):
        parse_manifest(data, Path("/nonexistent"))


def test_the_shipped_model_manifest_still_parses() -> None:
    m = parse_manifest((default_models_dir() / "manifest.json").read_bytes(), default_models_dir())
    assert m.get("mobilefacenet", "embedder").size > 0


# --- the scripted fuzzer ------------------------------------------------------------------------


def test_the_fuzz_script_runs_every_target_and_reports_no_crash(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fuzz.py"), "--inputs", "1200", "--seed", "7", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"inputs_total", "per_target", "crashes", "hangs", "seconds"} <= set(result)
    assert result["inputs_total"] == 1200 and result["crashes"] == 0 and result["hangs"] == 0
    expected = {"watchlist-manifest", "watchlist-chunk", "bundle-folder", "alerts-ingest", "config-toml", "model-manifest",
                "watchlist-sync"}  # fmt: skip
    assert set(result["per_target"]) == expected
    for name, t in result["per_target"].items():
        assert {"inputs", "accepted", "rejected", "crashes", "slowest_ms"} <= set(t), name
        assert t["inputs"] > 0 and t["accepted"] + t["rejected"] == t["inputs"], name
        assert t["accepted"] > 0, f"{name}: no input was accepted, so the mutations never reach past the first check"
