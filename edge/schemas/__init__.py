"""JSON Schemas of the MQTT payloads (also at docs/schemas/): the contract the device and central tools share."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

BY_SCHEMA_ID = {
    "edge.hit/1": "hit",
    "edge.status/1": "status",
    "edge.watchlist-ack/1": "watchlist-ack",
    "edge.audit/1": "audit",
}


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys silently: an edit to the first copy would change nothing.
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r} in a schema")
        seen[key] = value
    return seen


@cache
def load(name: str) -> dict[str, Any]:
    """The schema ``name`` (hit, status, watchlist-ack, audit) as a dict."""
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    return data


@cache
def validator(name: str) -> Any:
    """A ready validator for schema ``name``: the schema is checked once, not on every message.

    ``jsonschema.validate`` re-checks the schema against its metaschema on each call (about
    20 ms here), which capped the central console at ~45 messages/s in the fleet simulation.
    """
    import jsonschema

    schema = load(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)
