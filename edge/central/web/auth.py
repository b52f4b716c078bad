"""Accounts, sessions, CSRF tokens, login throttling and what each role may do.

Passwords are argon2id hashes (argon2-cffi's defaults). A session is a random id kept in the
database (so logging out or disabling an account ends it everywhere) and sent to the browser
signed, in an HttpOnly, SameSite=Strict cookie. Each session has its own CSRF token that every
form and every script request must carry.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edge.central.web import ROLES
from edge.central.web.tables import login_failures, sessions, settings, users
from edge.errors import EdgeError

log = logging.getLogger(__name__)

USER_NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD_LEN = 10
SESSION_IDLE_S = 8 * 3600
THROTTLE_WINDOW_S = 15 * 60
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_CLIENT = 20

# What each role may do; checked on the server for every request, whatever the page shows.
PERMISSIONS: dict[str, frozenset[str]] = {
    "reviewer": frozenset({"queue", "decide", "mute", "fleet", "photos"}),
    "watchlist-admin": frozenset({"queue", "fleet", "photos", "watchlists", "publish"}),
    "auditor": frozenset({"queue", "fleet", "photos", "audit", "export", "watchlists"}),
    "admin": frozenset({"queue", "decide", "mute", "fleet", "photos", "watchlists", "publish", "audit", "export", "users"}),
}

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a real password, only for constant-time refusals")


class AuthError(EdgeError):
    """A login, session or permission check failed (the message is safe to show)."""


class ThrottledError(AuthError):
    """Too many failed logins for this account or client recently."""


@dataclass(frozen=True)
class Session:
    id: str
    user: str
    role: str
    csrf_token: str

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LEN:
        raise AuthError(f"the password must have at least {MIN_PASSWORD_LEN} characters")


def add_user(engine: sa.Engine, name: str, role: str, password: str) -> None:
    if not USER_NAME_RE.fullmatch(name):
        raise AuthError("user names are 1-64 letters, digits and _.@- only")
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    check_new_password(password)
    with engine.begin() as c:
        if c.execute(sa.select(users.c.name).where(users.c.name == name)).first() is not None:
            raise AuthError(f"user {name!r} exists already")
        c.execute(users.insert().values(name=name, role=role, password_hash=_hasher.hash(password), created_at=time.time()))


def secret_key(engine: sa.Engine) -> str:
    """The key that signs session cookies: made once, kept in the database so every console process shares it."""
    with engine.begin() as c:
        row = c.execute(sa.select(settings.c.value).where(settings.c.key == "session_secret")).first()
        if row is not None:
            return str(row[0])
        value = secrets.token_urlsafe(48)
        c.execute(settings.insert().values(key="session_secret", value=value))
        return value


def _recent_failures(c: sa.Connection, column: sa.Column[str], value: str, now: float) -> int:
    q = (
        sa.select(sa.func.count())
        .select_from(login_failures)
        .where(column == value, login_failures.c.ts > now - THROTTLE_WINDOW_S)
    )
    return int(c.execute(q).scalar_one())


def login(engine: sa.Engine, name: str, password: str, client: str) -> Session:
    """A new session for a correct name and password; AuthError (or ThrottledError) otherwise."""
    now = time.time()
    with engine.begin() as c:
        c.execute(login_failures.delete().where(login_failures.c.ts < now - THROTTLE_WINDOW_S))
        if (
            _recent_failures(c, login_failures.c.user_name, name[:64], now) >= MAX_FAILURES_PER_USER
            or _recent_failures(c, login_failures.c.client, client[:64], now) >= MAX_FAILURES_PER_CLIENT
        ):
            raise ThrottledError("too many failed logins; try again in 15 minutes")
        row = c.execute(sa.select(users).where(users.c.name == name)).mappings().first()
    ok = False
    try:
        ok = _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password) and row is not None and not row["disabled"]
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None:
        with engine.begin() as c:  # committed before raising (an exception inside would roll it back)
            c.execute(login_failures.insert().values(user_name=name[:64], client=client[:64], ts=now))
        raise AuthError("wrong user name or password")
    with engine.begin() as c:
        c.execute(login_failures.delete().where(login_failures.c.user_name == name))
        if _hasher.check_needs_rehash(row["password_hash"]):
            c.execute(users.update().where(users.c.name == name).values(password_hash=_hasher.hash(password)))
        s = Session(secrets.token_urlsafe(32), name, str(row["role"]), secrets.token_urlsafe(32))
        c.execute(sessions.insert().values(id=s.id, user_name=name, csrf_token=s.csrf_token, created_at=now, last_seen=now))
    return s


def lookup(engine: sa.Engine, session_id: str) -> Session | None:
    """The live session with this id (touching its idle timer), or None when it ended, expired or its account is off."""
    now = time.time()
    with engine.begin() as c:
        row = (
            c.execute(
                sa.select(
                    sessions.c.id,
                    sessions.c.user_name,
                    sessions.c.csrf_token,
                    sessions.c.last_seen,
                    users.c.role,
                    users.c.disabled,
                )
                .join(users, users.c.name == sessions.c.user_name)
                .where(sessions.c.id == session_id)
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        if row["disabled"] or row["last_seen"] < now - SESSION_IDLE_S:
            c.execute(sessions.delete().where(sessions.c.id == session_id))
            return None
        if now - row["last_seen"] > 60:  # one write a minute per session is enough for the idle timer
            c.execute(sessions.update().where(sessions.c.id == session_id).values(last_seen=now))
    return Session(str(row["id"]), str(row["user_name"]), str(row["role"]), str(row["csrf_token"]))


def logout(engine: sa.Engine, session_id: str) -> None:
    with engine.begin() as c:
        c.execute(sessions.delete().where(sessions.c.id == session_id))


def same_token(a: str | None, b: str) -> bool:
    return a is not None and secrets.compare_digest(a.encode(), b.encode())
