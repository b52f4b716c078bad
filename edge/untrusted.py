"""Parsing bytes that come from outside the process (MQTT payloads, bundle files, manifests).

``json.loads`` fails in more ways than ``JSONDecodeError``: a 5,000-digit number raises a plain
``ValueError``, deep nesting a ``RecursionError``, and a ``\\ud800`` escape yields a string that
later breaks UTF-8 encoding (SQLite, hashing). Parsers of outside input call ``load_json`` so
every one of those becomes one ``InputFormatError`` the caller turns into its own error.

With ``storable=True`` (messages bound for a database) numbers are held to what a store can keep:
an integer outside 64 bits or a float that overflows to infinity (``1e400``) is refused. A schema's
``"type": "number"`` admits a 400-digit integer, and one such value in one device's hit made the
central store's batch fail on every retry (a float column cannot take it): ingest stopped for the
whole fleet.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from edge.errors import EdgeError, InputFormatError


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python extensions, not JSON


INT64 = 2**63


def _int(text: str) -> int:
    value = int(text)  # past the interpreter's digit limit: ValueError, refused below
    if not -INT64 <= value < INT64:
        raise ValueError(f"integer {text[:24]}{'...' if len(text) > 24 else ''} does not fit in 64 bits")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]}{'...' if len(text) > 24 else ''} overflows")
    return value


def load_json(data: bytes | str, *, storable: bool = False) -> Any:
    """The JSON value in ``data`` (UTF-8 when bytes); any malformation raises InputFormatError.

    ``storable``: also refuse numbers no database column holds (see the module's docstring).
    """
    hooks: dict[str, Any] = {"parse_int": _int, "parse_float": _float} if storable else {}
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data  # UTF-8 only, not json's UTF-16/32 sniffing
        doc = json.loads(text, parse_constant=_no_constant, **hooks)
    except RecursionError as exc:
        raise InputFormatError("JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integer digit limit
        raise InputFormatError(f"not valid JSON ({exc})") from exc
    if "\\ud" in text or "\\uD" in text:
        try:  # only escapes can produce an unpaired surrogate; check the slow way only then
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputFormatError("JSON string holds an unpaired UTF-16 surrogate") from exc
        except RecursionError as exc:  # pragma: no cover - json.loads fails deeper first
            raise InputFormatError("JSON nested too deeply") from exc
    return doc


def read_csv(path: Path, required: set[str], what: str, error: type[EdgeError]) -> csv.DictReader[str]:
    """Rows of a UTF-8 CSV file (a BOM is fine) whose header has the ``required`` columns, or ``error`` naming it.

    ``what`` describes the expected columns for the message, e.g. "columns entry_id,path".
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise error(f"{path}: cannot read the CSV ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a CSV text file ({exc.reason} at byte {exc.start})") from exc
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not required <= set(reader.fieldnames):
        raise error(f"{path}: needs {what}, got {reader.fieldnames}")
    return reader
