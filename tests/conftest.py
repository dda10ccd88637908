"""Suite-wide hooks.

A PostgreSQL connection left open is reported by psycopg when the garbage collector frees it,
which may be many tests after the one that leaked it (a connection held in a reference cycle
waits for a collection), so the failing test is rarely the culprit. The hooks below remember
where each connection was opened and put that stack in the warning, which the suite turns into
an error (``filterwarnings = error``): the report then names the code to fix.
"""

from __future__ import annotations

import traceback
import warnings
from typing import Any

import psycopg

# id() of a live connection -> the stack that opened it. psycopg's connections have no
# __dict__ and no __weakref__ slot, so neither an attribute nor a weak map can hold it; every
# connection passes through __del__, which removes its entry.
_opened_at: dict[int, str] = {}
_connect = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]
_base: Any = psycopg.Connection.__mro__[1]  # psycopg's BaseConnection (not exported)
_del = _base.__del__


def _traced_connect(cls: type[psycopg.Connection[Any]], *args: Any, **kwargs: Any) -> Any:
    conn = _connect(cls, *args, **kwargs)
    _opened_at[id(conn)] = "".join(traceback.format_stack(limit=40)[:-1])
    return conn


def _traced_del(self: Any) -> None:
    opened = _opened_at.pop(id(self), None)
    if opened is not None and hasattr(self, "pgconn") and not self.closed:
        warnings.warn(
            f"a PostgreSQL connection was deleted while still open; it was opened at:\n{opened}",
            ResourceWarning,
            stacklevel=1,
        )
        return
    _del(self)


psycopg.Connection.connect = classmethod(_traced_connect)  # type: ignore[assignment,method-assign]
psycopg.connect = psycopg.Connection.connect  # the module's alias, which SQLAlchemy calls
_base.__del__ = _traced_del
