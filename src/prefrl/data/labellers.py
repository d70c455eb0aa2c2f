"""Labellers and their login tokens.

A labeller logs in with a one-time token; only its SHA-256 hash is stored. Tokens are
256-bit random strings, so a fast unsalted hash is enough (there is nothing to guess).
"""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from prefrl.data import schema
from prefrl.data.database import Database
from prefrl.data.schema import check_name
from prefrl.data.types import LABELLER_ROLES, Labeller, LabellerRole, utcnow

__all__ = ["LabellerRegistry"]


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class LabellerRegistry(Database):
    """The people allowed to label (the part of :class:`PreferenceStore` the web app logs in with)."""

    def add_labeller(self, name: str, role: LabellerRole = "labeller") -> str:
        """Register a labeller and return their login token (shown once; only its hash is kept).

        Raises ``ValueError`` for a duplicate or empty name, or a role other than "labeller"/"admin".
        """
        name = check_name(name, "name")
        if role not in LABELLER_ROLES:
            raise ValueError(f"role must be one of {LABELLER_ROLES}, got {role!r}")
        token = secrets.token_urlsafe(32)
        values = {"name": name, "role": role, "token_hash": _hash_token(token), "created_at": utcnow()}
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
        """The labeller whose token this is, or ``None``."""
        if not isinstance(token, str) or not token:
            return None
        t = schema.labellers
        stmt = sa.select(t).where(t.c.token_hash == _hash_token(token))
        row = self._read(lambda conn: conn.execute(stmt).first())
        return None if row is None else schema.labeller_from_row(row)

    def redeem_token(self, token: str) -> Labeller | None:
        """Exchange a one-time login token: the labeller it belongs to, or ``None``.

        The stored hash is replaced by that of a fresh secret nobody knows, in one
        conditional UPDATE, so a token logs in at most once even when two requests race.
        """
        labeller = self.authenticate(token)
        if labeller is None:
            return None
        old, new = _hash_token(token), _hash_token(secrets.token_urlsafe(32))
        t = schema.labellers

        def consume(conn: Connection) -> int:
            return conn.execute(t.update().where(t.c.token_hash == old).values(token_hash=new)).rowcount

        return labeller if self._write(consume) == 1 else None

    def reissue_token(self, name: str) -> str:
        """A new login token for an existing labeller (the previous one stops working)."""
        token = secrets.token_urlsafe(32)
        t = schema.labellers

        def update(conn: Connection) -> int:
            stmt = t.update().where(t.c.name == name).values(token_hash=_hash_token(token))
            return conn.execute(stmt).rowcount

        if self._write(update) != 1:
            raise KeyError(f"no labeller called {name!r}")
        return token

    def labellers(self) -> list[Labeller]:
        """All registered labellers, in order of registration."""
        stmt = sa.select(schema.labellers).order_by(schema.labellers.c.id)
        return self._read(lambda conn: [schema.labeller_from_row(r) for r in conn.execute(stmt)])
