"""The fast schema check the ingest workers use never accepts what the reference validator refuses."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import schemas
from edge.central.ingest import fast_validator
from tests.central_msgs import ack, audit, hit, status

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
SEEDS = {"hit": hit(), "status": status(), "watchlist-ack": ack(), "audit": audit()}


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


@given(st.sampled_from(sorted(SEEDS)), st.data(), json_values, st.booleans())
@settings(max_examples=300, deadline=None)
def test_fast_acceptance_implies_reference_acceptance(name: str, data: st.DataObject, value: Any, delete: bool) -> None:
    doc = copy.deepcopy(SEEDS[name])
    path = data.draw(st.sampled_from(paths(doc)))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        fast_validator(name)(doc)
    except Exception:
        return  # refused: the reference's reason is what the worker records
    jsonschema.validators.validator_for(schemas.load(name))(schemas.load(name)).validate(doc)


def test_the_seeds_are_valid() -> None:
    for name, doc in SEEDS.items():
        fast_validator(name)(doc)
        schemas.validator(name).validate(doc)
