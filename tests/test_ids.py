"""Ids (device, camera, watchlist name, entry) match their whole pattern: a trailing newline is refused.

Python's `$` also matches before a final newline, so every id check anchors at the very end
(`\\Z` / `fullmatch` in code; `$(?!\\n)` in the JSON Schemas, which Python validates with `re.search`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.config import Settings
from edge.errors import EdgeError
from edge.operator.enrol import requests_from_folder
from edge.schemas import load, validator
from edge.watchlist.chunks import ENTRY_ID_RE
from edge.watchlist.manifest import NAME_RE

GOOD = "pole-7"


@pytest.mark.parametrize("regex", [NAME_RE, ENTRY_ID_RE], ids=["NAME_RE", "ENTRY_ID_RE"])
@pytest.mark.parametrize("method", ["match", "fullmatch", "search"])
def test_watchlist_name_and_entry_id_refuse_a_trailing_newline_however_applied(regex: re.Pattern[str], method: str) -> None:
    check = getattr(regex, method)
    assert check(GOOD)
    for bad in (GOOD + "\n", GOOD + "\r\n", "\n" + GOOD, GOOD + "\n" + GOOD, ""):
        assert not check(bad), repr(bad)


@pytest.mark.parametrize("field", ["device_id", "camera", "watchlist_name"])
def test_config_ids_refuse_a_trailing_newline(field: str) -> None:
    def settings(value: str) -> Settings:
        if field == "device_id":
            return Settings(device_id=value)
        if field == "camera":
            return Settings.model_validate({"sources": [{"camera": value, "url": "0"}]})
        return Settings.model_validate({"watchlist": {"name": value}})

    settings(GOOD)
    with pytest.raises(ValidationError):
        settings(GOOD + "\n")


def test_a_photo_folder_whose_name_ends_in_a_newline_is_not_an_entry_id(tmp_path: Path) -> None:
    (tmp_path / "person-1\n").mkdir()
    with pytest.raises(EdgeError, match="not a valid entry_id"):
        requests_from_folder(tmp_path)


def _patterns(node: object, path: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        found = [(path, node["pattern"])] if isinstance(node.get("pattern"), str) else []
        for key, value in node.items():
            found += _patterns(value, f"{path}/{key}")
        return found
    if isinstance(node, list):
        return [p for i, item in enumerate(node) for p in _patterns(item, f"{path}/{i}")]
    return []


@pytest.mark.parametrize("name", ["hit", "status", "watchlist-ack", "audit"])
def test_every_schema_pattern_refuses_a_trailing_newline(name: str) -> None:
    for where, pattern in _patterns(load(name)):
        assert pattern.startswith("^") and pattern.endswith("$(?!\\n)"), f"{name}{where}: {pattern} not anchored at the end"


def test_a_hit_whose_device_id_ends_in_a_newline_is_invalid() -> None:
    hit = {"device_id": GOOD + "\n", "camera": "cam\n", "first_seen": "2026-01-01T00:00:00.000Z\n"}
    errors = {next(iter(e.path)) for e in validator("hit").iter_errors(hit) if e.validator == "pattern"}
    assert errors == {"device_id", "camera", "first_seen"}
    assert not [e for e in validator("hit").iter_errors({"device_id": GOOD}) if e.validator == "pattern"]
