"""JSON Schemas of the MQTT payloads (also at docs/schemas/): the contract the device and central tools share."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

BY_SCHEMA_ID = {"edge.hit/1": "hit", "edge.status/1": "status", "edge.watchlist-ack/1": "watchlist-ack"}


@cache
def load(name: str) -> dict[str, Any]:
    """The schema ``name`` (hit, status, watchlist-ack) as a dict."""
    data: dict[str, Any] = json.loads(resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8"))
    return data
