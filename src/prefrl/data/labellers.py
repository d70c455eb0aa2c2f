"""Labellers, their login tokens and their sessions.

A labeller logs in with a one-time token; only its SHA-256 hash is stored. Tokens are
256-bit random strings, so a fast unsalted hash is enough (there is nothing to guess).

Each labeller also has a *session key*, a random value that every session cookie of theirs
carries (the web app signs the cookie; the key is what the store checks). Giving the labeller
a new key ends all of their sessions at once: logging out, reissuing the login link,
disabling and removing the labeller all do.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from prefrl.data import schema
from prefrl.data.database import Database
from prefrl.data.schema import check_labeller_name
from prefrl.data.types import LABELLER_ROLES, Labeller, LabellerRole, utcnow

__all__ = ["LabellerRegistry"]


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_session_key() -> str:
    return secrets.token_hex(16)


class LabellerRegistry(Database):
    """The people allowed to label (the part of :class:`PreferenceStore` the web app logs in with)."""

    def add_labeller(self, name: str, role: LabellerRole = "labeller") -> str:
        """Register a labeller and return their login token (shown once; only its hash is kept).

        Raises ``ValueError`` for a duplicate name, a name that is empty, longer than 64
        characters, holds control characters or surrounding spaces, or a role other than
        "labeller"/"admin".
        """
        name = check_labeller_name(name, "name")
        if role not in LABELLER_ROLES:
            raise ValueError(f"role must be one of {LABELLER_ROLES}, got {role!r}")
        token = secrets.token_urlsafe(32)
        values = {
            "name": name,
            "role": role,
            "token_hash": _hash_token(token),
            "created_at": utcnow(),
            "session_key": _new_session_key(),
            "disabled": False,
        }
        t = schema.labellers

        def insert(conn: Connection) -> None:
            if conn.execute(sa.select(t.c.id).where(t.c.name == name)).first() is not None:
                raise ValueError(f"name: a labeller called {name!r} already exists")
            conn.execute(t.insert().values(**values))

        try:
            self._write(insert)
        except sa.exc.IntegrityError as err:  # lost a race with another process adding the same name
            raise ValueError(f"name: a labeller called {name!r} already exists") from err
        return token

    def authenticate(self, token: str) -> Labeller | None:
        """The enabled labeller whose token this is, or ``None`` (nothing is spent)."""
        if not isinstance(token, str) or not token:
            return None
        t = schema.labellers
        stmt = sa.select(t).where(t.c.token_hash == _hash_token(token), t.c.disabled == sa.false())
        row = self._read(lambda conn: conn.execute(stmt).first())
        return None if row is None else schema.labeller_from_row(row)

    def redeem_token(self, token: str) -> Labeller | None:
        """Exchange a one-time login token: the enabled labeller it belongs to, or ``None``.

        The stored hash is replaced by that of a fresh secret nobody knows, in one
        conditional UPDATE, so a token logs in at most once even when two requests race.
        """
        labeller = self.authenticate(token)
        if labeller is None:
            return None
        old, new = _hash_token(token), _hash_token(secrets.token_urlsafe(32))
        t = schema.labellers

        def consume(conn: Connection) -> int:
            stmt = t.update().where(t.c.token_hash == old, t.c.disabled == sa.false()).values(token_hash=new)
            return conn.execute(stmt).rowcount

        return labeller if self._write(consume) == 1 else None

    def reissue_token(self, name: str) -> str:
        """A new login token for an existing labeller: the previous one stops working, and so
        does every session of theirs."""
        token = secrets.token_urlsafe(32)
        self._update_labeller(name, token_hash=_hash_token(token), session_key=_new_session_key())
        return token

    def labellers(self) -> list[Labeller]:
        """All registered labellers, in order of registration."""
        stmt = sa.select(schema.labellers).order_by(schema.labellers.c.id)
        return self._read(lambda conn: [schema.labeller_from_row(r) for r in conn.execute(stmt)])

    def get_labeller(self, name: str) -> Labeller:
        """The labeller called ``name``; ``KeyError`` if there is none."""
        t = schema.labellers
        row = self._read(lambda conn: conn.execute(sa.select(t).where(t.c.name == name)).first())
        if row is None:
            raise KeyError(f"no labeller called {name!r}")
        return schema.labeller_from_row(row)

    # ---- sessions -----------------------------------------------------------------------

    def session_key(self, name: str) -> str:
        """The key a new session of ``name`` is issued under; ``KeyError`` for an unknown or
        disabled labeller."""
        t = schema.labellers

        def read_or_make(conn: Connection) -> str | None:
            row = conn.execute(sa.select(t).where(t.c.name == name, t.c.disabled == sa.false())).first()
            if row is None:
                return None
            if row.session_key:
                return row.session_key
            key = _new_session_key()  # a labeller from a schema-1 database has none yet
            conn.execute(t.update().where(t.c.id == row.id).values(session_key=key))
            return key

        key = self._write(read_or_make)
        if key is None:
            raise KeyError(f"no enabled labeller called {name!r}")
        return key

    def check_session(self, name: str, key: str) -> Labeller | None:
        """The labeller of a session issued to ``name`` under ``key``, while it lasts; else ``None``.

        ``None`` when the labeller does not exist (or was removed), is disabled, or their
        sessions were ended since (logout, a new login link).
        """
        if not isinstance(name, str) or not isinstance(key, str) or not key:
            return None
        t = schema.labellers
        row = self._read(lambda conn: conn.execute(sa.select(t).where(t.c.name == name)).first())
        if row is None or row.disabled or not hmac.compare_digest(row.session_key, key):
            return None
        return schema.labeller_from_row(row)

    def end_sessions(self, name: str) -> None:
        """End every session of ``name`` at once (e.g. on logout); ``KeyError`` if unknown."""
        self._update_labeller(name, session_key=_new_session_key())

    def set_labeller_disabled(self, name: str, disabled: bool = True) -> None:
        """Disable (or enable again) a labeller; disabling ends their sessions and refuses their
        login token. Their answers are kept."""
        self._update_labeller(name, disabled=bool(disabled), session_key=_new_session_key())

    def remove_labeller(self, name: str) -> None:
        """Remove a labeller: their token and sessions stop working; their answers are kept."""
        t = schema.labellers
        if self._write(lambda conn: conn.execute(t.delete().where(t.c.name == name)).rowcount) != 1:
            raise KeyError(f"no labeller called {name!r}")

    def _update_labeller(self, name: str, **values: object) -> None:
        t = schema.labellers
        if self._write(lambda conn: conn.execute(t.update().where(t.c.name == name).values(**values)).rowcount) != 1:
            raise KeyError(f"no labeller called {name!r}")
