"""Signed revocations: single entries removed from a watchlist at once, without a new bundle.

A revocation is canonical JSON (sorted keys, no whitespace, UTF-8) signed with Ed25519 over its
exact bytes by a trusted watchlist key, like a manifest::

    {"schema": "edge.watchlist-revoke/1", "name": "city", "sequence": 3, "version": 7,
     "issued_at": "2026-12-03T09:00:00.000Z", "entry_ids": ["case-0042"], "key_id": "…"}

``sequence`` only increases per watchlist (a device refuses the one it holds and older ones);
``version`` is the bundle version it was issued against. It travels, retained, on
``edge/v1/watchlists/{name}/revoke`` (and on disk) as ``{"schema": "edge.watchlist-revoke-message/1",
"revoke": "<revoke JSON text>", "signature": "<base64>"}``. The retained topic holds one message,
so ``edge watchlist revoke`` makes each message cumulative: it carries every entry revoked
against the same bundle version, and a device that was offline for an earlier one still gets it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge import audit
from edge.errors import InputFormatError
from edge.untrusted import load_json
from edge.watchlist.chunks import ENTRY_ID_RE
from edge.watchlist.errors import BundleError, SignatureError, UnknownKeyError, WrongWatchlistError
from edge.watchlist.keys import key_id
from edge.watchlist.manifest import KEY_ID_RE, MAX_INT, NAME_RE, format_time, now_utc, parse_time
from edge.watchlist.state import Revocation
from edge.watchlist.store import ApplyResult, WatchlistStore, clip

log = logging.getLogger(__name__)

REVOKE_SCHEMA = "edge.watchlist-revoke/1"
MESSAGE_SCHEMA = "edge.watchlist-revoke-message/1"
MAX_REVOKE_IDS = 10_000


class RevokeFormatError(BundleError):
    reason = "revoke_malformed"


@dataclass(frozen=True)
class Revoke:
    name: str
    sequence: int
    version: int
    issued_at: str
    entry_ids: tuple[str, ...]
    key_id: str
    sha256: str

    def revocation(self) -> Revocation:
        return Revocation(self.sequence, self.version, self.issued_at, self.entry_ids)


def _int(doc: dict[str, object], key: str) -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_INT:
        raise RevokeFormatError(f"revoke {key!r} must be an integer from 1 to 2^63-1")
    return v


def parse_revoke(data: bytes) -> Revoke:
    try:
        doc = load_json(data)
    except InputFormatError as exc:
        raise RevokeFormatError(f"revoke: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != REVOKE_SCHEMA:
        raise RevokeFormatError(f"revoke must be a JSON object with schema {REVOKE_SCHEMA!r}")
    name, issued, ids, kid = doc.get("name"), doc.get("issued_at"), doc.get("entry_ids"), doc.get("key_id")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RevokeFormatError("revoke name is not a watchlist name")
    if not isinstance(issued, str):
        raise RevokeFormatError("revoke issued_at must be a string")
    try:
        parse_time(issued, "revoke issued_at")
    except BundleError as exc:
        raise RevokeFormatError(str(exc)) from exc
    if not isinstance(kid, str) or not KEY_ID_RE.fullmatch(kid):
        raise RevokeFormatError("revoke key_id is not a key id")
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_REVOKE_IDS:
        raise RevokeFormatError(f"revoke entry_ids must list 1 to {MAX_REVOKE_IDS} entry ids")
    if not all(isinstance(e, str) and ENTRY_ID_RE.match(e) for e in ids) or len(set(ids)) != len(ids):
        raise RevokeFormatError("revoke entry_ids holds a malformed or repeated entry id")
    return Revoke(name, _int(doc, "sequence"), _int(doc, "version"), issued, tuple(ids), kid, hashlib.sha256(data).hexdigest())


def verify_revoke(data: bytes, signature: bytes, keys: dict[str, Ed25519PublicKey]) -> Revoke:
    rev = parse_revoke(data)
    key = keys.get(rev.key_id)
    if key is None:
        raise UnknownKeyError(f"revoke is signed with key {rev.key_id}, which this device does not trust")
    try:
        key.verify(signature, data)
    except InvalidSignature as exc:
        raise SignatureError(f"revoke signature does not verify against trusted key {rev.key_id}") from exc
    return rev


def sign_revoke(
    private: Ed25519PrivateKey,
    *,
    name: str,
    sequence: int,
    version: int,
    entry_ids: list[str],
    issued_at: datetime | None = None,
) -> tuple[bytes, bytes]:
    doc = {
        "schema": REVOKE_SCHEMA,
        "name": name,
        "sequence": sequence,
        "version": version,
        "issued_at": format_time(issued_at or now_utc()),
        "entry_ids": list(entry_ids),
        "key_id": key_id(private.public_key()),
    }
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    parse_revoke(data)  # the operator gets the device's own complaint before anything is sent
    return data, private.sign(data)


def to_message(data: bytes, signature: bytes) -> bytes:
    return json.dumps(
        {"schema": MESSAGE_SCHEMA, "revoke": data.decode("utf-8"), "signature": base64.b64encode(signature).decode("ascii")}
    ).encode()


def from_message(payload: bytes) -> tuple[bytes, bytes]:
    """(revoke bytes, signature) of a revoke message; anything malformed raises RevokeFormatError."""
    try:
        doc = load_json(payload)
    except InputFormatError as exc:
        raise RevokeFormatError(f"revoke message: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("revoke"), str) or not isinstance(doc.get("signature"), str):
        raise RevokeFormatError("revoke message must be an object with 'revoke' and 'signature' strings")
    try:
        return doc["revoke"].encode("utf-8"), base64.b64decode(doc["signature"], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise RevokeFormatError(f"revoke message signature is not base64 ({exc})") from exc


def refuse_revoke(store: WatchlistStore, name: str, exc: BundleError) -> ApplyResult:
    """Record a refused revocation in the audit log (its own transaction) and say why."""
    held = store.current(name)
    version = held.version if held else None
    message = clip(str(exc))
    audit.append(store.conn, "watchlist.revoke_refused", exc.reason, watchlist=name, version=version, detail={"message": message})
    log.warning("watchlist %s: revoke refused: %s", name, message)
    return ApplyResult(False, name, version, version, exc.reason, message, kind="revoke")


def apply_revoke(
    store: WatchlistStore, data: bytes, signature: bytes, keys: dict[str, Ed25519PublicKey], *, expected_name: str
) -> ApplyResult:
    """Verify a signed revocation and remove its entries at once; never raises for a bad one (refused and audited)."""
    held = store.current(expected_name)
    version = held.version if held else None
    try:
        rev = verify_revoke(data, signature, keys)
        if rev.name != expected_name:
            raise WrongWatchlistError(f"revoke is for watchlist {rev.name!r}, this device holds {expected_name!r}")
        # Entries of a bundle issued after this revocation were put back on purpose: left alone.
        covered = held is None or rev.revocation().covers(held.version, held.issued_at)
        removed = store.revoke(
            expected_name, rev.entry_ids if covered else (), revocation=rev.revocation(), revoke_sha256=rev.sha256
        )
    except BundleError as exc:
        return refuse_revoke(store, expected_name, exc)
    info = store.current(expected_name)
    log.info("watchlist %s: revoke %d removed %d of %d entries", expected_name, rev.sequence, removed, len(rev.entry_ids))
    return ApplyResult(
        True, expected_name, version, version, "revoked", f"revoked {len(rev.entry_ids)} entries, {removed} were held",
        info.entry_count if info else 0, info.sha256 if info else None, kind="revoke", revoke_sequence=rev.sequence,
        removed=removed,
    )  # fmt: skip
