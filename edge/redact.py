"""Credentials out of anything shown: camera URLs carry passwords (``rtsp://admin:pw@cam/…``, ``?password=``).

Source errors, log lines, the retained status (which the central side stores) and the self-test
all pass their text through ``redact``; a log filter applies it to every record as a backstop.
Redaction errs on the side of hiding too much: the userinfo runs to the last ``@`` before
whitespace, so a password containing ``@`` or ``/`` is hidden whole.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

MASK = "***"

# scheme://userinfo@ ; userinfo greedy up to the last "@" of the run (a password may hold "@" or "/").
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s\"<>]*)@")
# password=… and its usual spellings, in a query string or anywhere else in a message.
_SECRET_PARAM = re.compile(
    r"(?i)(?<![\w-])(?P<key>password|passwd|pwd|pass|secret|token|access_token|api_key|apikey)=(?P<value>[^&\s]*)"
)


def _userinfo(m: re.Match[str]) -> str:
    user, sep, _ = m["userinfo"].partition(":")
    return f"{m['scheme']}{user}:{MASK}@" if sep else f"{m['scheme']}{MASK}@"


def redact(text: str) -> str:
    """``text`` with URL passwords (userinfo) and ``password=``-style values replaced by ``***``."""
    if "@" in text:
        text = _USERINFO.sub(_userinfo, text)
    if "=" in text:
        text = _SECRET_PARAM.sub(lambda m: f"{m['key']}={MASK}", text)
    return text


def redact_values(value: Any) -> Any:
    """A JSON-like value with every string in it redacted (for payloads such as the status)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Redacts each record's final message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info or record.exc_text:
            # (another handler may have formatted the record first and cached its traceback text)
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")  # type: ignore[misc]
            record.exc_text = redact(text)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of ``logger`` (the root logger by default): records from any module pass it."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
