"""The preference store: the one place that persists segments, text pairs, comparisons,
labelling queries and labellers.

It sits behind a SQLAlchemy database URL, so one code path serves a single-user SQLite
file and a PostgreSQL server shared by many labellers::

    store = PreferenceStore("runs/prefs.db")                       # → sqlite:///runs/prefs.db
    store = PreferenceStore("postgresql+psycopg2://u:p@host/db")   # many writers

Every public write is one transaction (the ``add_*s`` batch methods are all or nothing),
and bad input raises ``ValueError`` naming the field before anything is written.

:class:`PreferenceStore` is assembled from one part per concern, each in its own module:

- :mod:`prefrl.data.database` — engine, transactions, schema creation;
- :mod:`prefrl.data.schema` — tables and row codecs;
- :mod:`prefrl.data.records` — segments, text pairs, comparisons;
- :mod:`prefrl.data.queue` — the query queue (add / lease / answer / release / undo);
- :mod:`prefrl.data.labellers` — labellers and their login tokens.
"""

from __future__ import annotations

from prefrl.data.labellers import LabellerRegistry
from prefrl.data.queue import LeaseError, QueryQueue
from prefrl.data.records import RecordStore
from prefrl.data.schema import SCHEMA_VERSION, decode_array, encode_array
from prefrl.data.types import Labeller, LabellerRole, Query, QueryStatus

__all__ = [
    "PreferenceStore",
    "LeaseError",
    "Query",
    "QueryStatus",
    "Labeller",
    "LabellerRole",
    "encode_array",
    "decode_array",
    "SCHEMA_VERSION",
]


class PreferenceStore(QueryQueue, RecordStore, LabellerRegistry):
    """Segments, text pairs, comparisons, labelling queries and labellers in one database.

    ``PreferenceStore(url_or_path, *, busy_timeout_s=30.0, retry_s=60.0, echo=False)``; the
    arguments are those of :class:`~prefrl.data.database.Database`. Use as a context manager or
    call :meth:`close`. One instance may be shared by threads; each process opens its own.
    """
