"""The MQTT payload schemas are one contract each: every key defined once, every schema valid."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from edge.schemas import BY_SCHEMA_ID, load, validator


def keys_defined_twice(text: str) -> list[str]:
    twice: list[str] = []

    def collect(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        twice.extend(sorted({k for k in keys if keys.count(k) > 1}))
        return dict(pairs)

    json.loads(text, object_pairs_hook=collect)
    return twice


@pytest.mark.parametrize("name", sorted(BY_SCHEMA_ID.values()))
def test_no_schema_defines_a_property_twice(name: str) -> None:
    # json keeps the last copy silently: a field documented in the first copy would not be what is checked.
    text = resources.files("edge.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    assert keys_defined_twice(text) == []


@pytest.mark.parametrize("name", sorted(BY_SCHEMA_ID.values()))
def test_every_schema_loads_and_is_a_valid_json_schema(name: str) -> None:
    assert load(name)["type"] == "object"
    assert validator(name) is not None


def test_a_schema_with_a_key_defined_twice_is_refused_at_load() -> None:
    from edge.schemas import _refuse_duplicate_keys

    with pytest.raises(ValueError, match="duplicate key 'clock'"):
        json.loads('{"clock": 1, "clock": 2}', object_pairs_hook=_refuse_duplicate_keys)
