"""Where a study lives: ``--storage`` as an Optuna storage, with one clear line for a URL
that cannot be used.

* no ``--storage``: a SQLite file ``study.db`` in the study's folder (one machine: SQLite
  locks the file, so several processes on one machine share it);
* any SQLAlchemy URL: ``sqlite:///path.db``, ``postgresql+psycopg://user:pw@host/db``
  (the ``tune`` extra installs psycopg 3), ``mysql+pymysql://...``: one study for many
  processes and machines;
* ``journal:PATH`` or a path ending in ``.log``: Optuna's journal storage in that file (an
  append-only log; a shared file system instead of a database server).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

__all__ = ["describe_storage", "open_storage", "storage_url"]

# the package that provides each SQLAlchemy driver
_DRIVER_PACKAGES = {"psycopg": '"psycopg[binary]"', "psycopg2": "psycopg2-binary",
                    "pg8000": "pg8000", "asyncpg": "asyncpg", "pymysql": "pymysql",
                    "mysqldb": "mysqlclient", "mysqlconnector": "mysql-connector-python",
                    "cx_oracle": "cx_Oracle", "oracledb": "oracledb", "pyodbc": "pyodbc"}


def storage_url(given: str | None, folder: Path) -> str:
    """The storage URL a run uses: ``given``, or the SQLite file in ``folder``."""
    if given is not None:
        return given
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def _journal_path(url: str) -> Path | None:
    if url.startswith("journal:"):
        rest = url[len("journal:"):]
        return Path(rest[2:] if rest.startswith("//") else rest)
    if url.endswith(".log") and "://" not in url:
        return Path(url)
    return None


def describe_storage(url: str) -> str:
    """The URL with its password hidden, for messages."""
    if _journal_path(url) is not None or "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a message must not fail
        return url


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``; a ValueError naming the problem (an unknown URL, a
    missing driver, a database that cannot be reached) instead of the library's traceback."""
    import optuna

    journal = _journal_path(url)
    if journal is not None:
        if not journal.parent.is_dir():
            raise ValueError(f"--storage {url}: the folder {journal.parent} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(str(journal)))
        except OSError as exc:
            raise ValueError(f"--storage {url}: cannot open the journal file "
                             f"({exc.strerror})") from None
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    shown = describe_storage(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ValueError(f"--storage {url}: not a database URL (e.g. sqlite:///study.db, "
                         "postgresql+psycopg://user:password@host/db) nor a journal file "
                         "(journal:PATH or a .log path)") from None
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        engine["connect_args"] = {"timeout": 60}  # workers wait for each other's writes
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except sqlalchemy.exc.NoSuchModuleError:
            raise ValueError(f"--storage {shown}: unknown database kind "
                             f"{parsed.drivername!r}") from None
        except ImportError:
            driver = parsed.get_driver_name()
            package = _DRIVER_PACKAGES.get(driver, driver)
            raise ValueError(f"--storage {shown}: the database driver {driver!r} is not "
                             f"installed (pip install {package})") from None
        except sqlalchemy.exc.SQLAlchemyError as exc:
            # workers starting together on an empty database race to create Optuna's
            # tables (PostgreSQL: a duplicate key; SQLite: "table ... already exists"):
            # the losers find them made on the next try
            racing = (not isinstance(exc, sqlalchemy.exc.OperationalError)
                      or "already exists" in str(exc))
            if not racing:  # no server, no file, refused
                raise ValueError(f"--storage {shown}: cannot reach the database "
                                 f"({_reason(exc)})") from None
            if attempt == 4:
                raise ValueError(f"--storage {shown}: the database refused Optuna's tables "
                                 f"({_reason(exc)})") from None
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def _reason(exc: Exception) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())
