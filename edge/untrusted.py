"""Parsing bytes that come from outside the process (MQTT payloads, bundle files, manifests).

``json.loads`` fails in more ways than ``JSONDecodeError``: a 5,000-digit number raises a plain
``ValueError``, deep nesting a ``RecursionError``, and a ``\\ud800`` escape yields a string that
later breaks UTF-8 encoding (SQLite, hashing). Parsers of outside input call ``load_json`` so
every one of those becomes one ``InputFormatError`` the caller turns into its own error.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from edge.errors import EdgeError, InputFormatError


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python extensions, not JSON


def load_json(data: bytes | str) -> Any:
    """The JSON value in ``data`` (UTF-8 when bytes); any malformation raises InputFormatError."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data  # UTF-8 only, not json's UTF-16/32 sniffing
        doc = json.loads(text, parse_constant=_no_constant)
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
