"""Optuna storages for ``sppo-zoo tune``: RDB URLs and journal files, with heartbeats and a trial-budget lock.

- ``--storage sqlite:///study.db``, ``postgresql://user:pass@host/db``, ``mysql+pymysql://...``: Optuna's
  ``RDBStorage``, with Optuna's heartbeat (a trial whose process died is marked FAIL after a grace period).
- ``--storage study.log``: Optuna's ``JournalStorage`` with a file backend (no database server; processes on
  one machine or on a shared file system that supports locks). Optuna has no heartbeat for journals, so
  :class:`HeartbeatJournalStorage` records one as a system attribute of the running trial.

Processes that share a storage also share a lock that makes "count the trials, then start one" atomic, so
together they run exactly ``--n-trials`` trials: a lock file next to SQLite files and journal files (processes of
one machine), a transaction-level advisory lock of the server for PostgreSQL (processes of any machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import text

from .errors import ZooError

try:  # the heartbeat interface of Optuna's storages (not exported by optuna.storages)
    from optuna.storages._heartbeat import BaseHeartbeat
except ImportError:  # pragma: no cover - older or newer Optuna without it
    BaseHeartbeat = object  # type: ignore[assignment,misc]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no inter-process lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["HEARTBEAT_ATTR", "Heartbeat", "HeartbeatJournalStorage", "StudyStorage", "hide_password", "open_storage"]

HEARTBEAT_ATTR = "zoo:heartbeat"
"""System attribute of a running trial in a journal storage: the time of its last heartbeat."""


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):  # type: ignore[misc]
    """Optuna's ``JournalStorage`` with the heartbeat interface of ``RDBStorage``.

    The heartbeat of a running trial is its system attribute ``zoo:heartbeat`` (a Unix time); a running trial
    whose heartbeat is older than ``grace_period`` is stale, and Optuna's ``fail_stale_trials`` marks it FAIL.

    :param backend: the journal backend (``JournalFileBackend``)
    :param heartbeat_interval: seconds between heartbeats
    :param grace_period: seconds without a heartbeat after which a trial is stale (default: twice the interval)
    """

    def __init__(self, backend: Any, heartbeat_interval: int, grace_period: int | None = None) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period if grace_period is not None else 2 * heartbeat_interval

    def record_heartbeat(self, trial_id: int) -> None:
        """Record that the trial's process is alive."""
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = trial.system_attrs.get(HEARTBEAT_ATTR)
            if last is None and trial.datetime_start is not None:
                last = trial.datetime_start.timestamp()
            if last is not None and now - float(last) > self.grace_period:
                stale.append(self.get_trial_id_from_study_id_trial_number(study_id, trial.number))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats."""
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        """No callback: the zoo's budget does not count stale trials, so they are simply run again."""
        return None

    def get_failed_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        """The same as :meth:`get_heartbeat_stale_trial_callback` (older Optuna's name)."""
        return None


@dataclass
class StudyStorage:
    """A storage and the lock its processes share.

    :param storage: the Optuna storage (``None``: in memory, this process only)
    :param lock_path: a lock file shared by processes on this machine (``None``: a thread lock only)
    :param description: what to print
    """

    storage: BaseStorage | None
    lock_path: Path | None
    description: str

    def __post_init__(self) -> None:
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def budget_lock(self, study_name: str) -> Iterator[None]:
        """Hold the lock that makes "count the trials, then ask for one" atomic across threads and processes.

        :param study_name: the study (a database server locks each study on its own)
        """
        with self._thread_lock, _file_lock(self.lock_path), _server_lock(self.storage, study_name):
            yield

    def heartbeat_enabled(self) -> bool:
        """Whether running trials send heartbeats (so trials of dead processes are detected)."""
        getter = getattr(self.storage, "get_heartbeat_interval", None)
        return isinstance(self.storage, BaseHeartbeat) and getter is not None and getter() is not None


def open_storage(url: str | None, heartbeat_interval: int = 30) -> StudyStorage:
    """Open ``--storage``.

    :param url: ``None`` (in memory), an RDB URL (``sqlite:///study.db``, ``postgresql://...``) or a path ending in
        ``.log`` (a journal file)
    :param heartbeat_interval: seconds between the heartbeats of running trials (a dead process's trial is failed
        after twice this)
    :return: the storage and its lock
    :raises ZooError: if the storage cannot be opened (naming a missing database driver)
    """
    if url is None:
        return StudyStorage(None, None, "in memory (this process only; pass --storage to keep the study)")
    if heartbeat_interval < 1:
        raise ZooError(f"--heartbeat-interval must be at least 1 second, got {heartbeat_interval}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if "://" in url:
            return _open_rdb(url, heartbeat_interval)
        if url.endswith(".log"):
            return _open_journal(Path(url), heartbeat_interval)
    raise ZooError(
        f"--storage {url!r}: expected an RDB URL (sqlite:///study.db, postgresql://user:pass@host/db) "
        "or a journal file path ending in .log"
    )


_DRIVER_PACKAGES = {
    "psycopg": '"psycopg[binary]"',
    "psycopg2": "psycopg2-binary",
    "pymysql": "pymysql",
    "MySQLdb": "mysqlclient",
}
"""The pip package of a database driver module that SQLAlchemy imports (``postgresql://`` means psycopg 3 from
SQLAlchemy 2.1 on, psycopg2 before; ``postgresql+psycopg://`` is psycopg 3 with either)."""


def _missing_driver(err: ImportError) -> str:
    """The driver module (and its pip package) whose import failed, from Optuna's ImportError."""
    cause = err.__cause__ if isinstance(err.__cause__, ImportError) else err
    module = cause.name
    if module is None:
        return "the database driver of that URL"
    return f"the Python module {module} (pip install {_DRIVER_PACKAGES.get(module, module)})"


def hide_password(text_with_urls: str) -> str:
    """``text_with_urls`` with the password of every ``scheme://user:password@host`` URL replaced by ``***``
    (for what is printed and written to files: the summary, ``best_hyperparams.yml``)."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]*@", r"\1***@", text_with_urls)


def _make_folder(folder: Path, option: str) -> None:
    """Create the folder of a storage file, or say in one line why it cannot be created."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ZooError(f"--storage {option!r}: cannot create the folder {folder} ({err.strerror or err})") from None


def _check_journal(path: Path) -> None:
    """Refuse a file that is not an Optuna journal, before Optuna appends to it (and fails on it later).

    Every complete line must be a JSON record with an ``op_code``; an unfinished last line (another process may
    be writing it) must at least start like one.
    """
    if not path.exists():
        return
    if not path.is_file():
        raise ZooError(f"--storage {str(path)!r}: not a file")
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                record: Any = {"op_code": None} if line.lstrip().startswith(b"{") else None
            else:
                try:
                    record = json.loads(line)
                except ValueError:  # JSONDecodeError and UnicodeDecodeError
                    record = None
            if not isinstance(record, dict) or "op_code" not in record:
                raise ZooError(
                    f"--storage {str(path)!r}: line {number} is not an Optuna journal record; "
                    "pass a new .log path (or an Optuna journal file)"
                )


def _open_journal(path: Path, heartbeat_interval: int) -> StudyStorage:
    option = str(path)
    _make_folder(path.parent, option)
    _check_journal(path)
    lock_path = Path(f"{path}.zoo-lock")
    try:
        with _file_lock(lock_path):  # fails now, not at the first trial, if the lock cannot be written
            storage = HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeat_interval)
    except (OSError, ValueError) as err:  # unreadable file or folder; a record Optuna cannot replay
        detail = f"{type(err).__name__}: {err}"
        raise ZooError(f"--storage {option!r}: cannot open it as a journal file ({detail})") from None
    return StudyStorage(storage, lock_path, f"journal file {path}")


def _create_rdb_storage(url: str, engine_kwargs: dict[str, Any], heartbeat_interval: int) -> RDBStorage:
    """``RDBStorage(...)``, retried when another process creates the same schema at the same moment.

    Two processes that open a new database together can both try to create the schema; the loser gets "table ...
    already exists" or a unique-constraint error on Optuna's ``alembic_version`` row. By then the schema exists,
    so opening again succeeds. (For SQLite files :func:`_open_rdb` also serializes the opening with a lock file.)
    """
    for attempt in range(5):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval)
        except Exception as err:  # sqlalchemy's OperationalError / ProgrammingError / IntegrityError
            if not _is_schema_race(err) or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _is_schema_race(err: Exception) -> bool:
    """Whether ``err`` is what the loser of two concurrent schema creations sees."""
    text = str(err)
    return "already exists" in text or (type(err).__name__ == "IntegrityError" and "alembic_version" in text)


def _open_rdb(url: str, heartbeat_interval: int) -> StudyStorage:
    engine_kwargs: dict[str, Any] = {}
    lock_path = None
    shown = hide_password(url)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if str(path) not in ("", ":memory:"):
            _make_folder(path.parent, url)
            lock_path = Path(f"{path}.zoo-lock")
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for other processes' writes
    try:
        with _file_lock(lock_path):  # one process at a time creates the schema of a new SQLite file
            storage = _create_rdb_storage(url, engine_kwargs, heartbeat_interval)
    except ImportError as err:  # Optuna re-raises a missing database driver as a plain ImportError
        raise ZooError(f"--storage {shown!r} needs {_missing_driver(err)}, which is not installed") from err
    except Exception as err:  # sqlalchemy's errors: bad URL, unreachable server, wrong password...
        detail = f"{type(err).__name__}: {hide_password(str(err))}"
        raise ZooError(f"--storage {shown!r}: cannot open it ({detail})") from err
    return StudyStorage(storage, lock_path, f"database {shown}")


def _advisory_key(study_name: str) -> int:
    """A signed 64-bit key for PostgreSQL's advisory locks, one per study."""
    digest = hashlib.sha256(f"sppo-zoo trial budget: {study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def _server_lock(storage: BaseStorage | None, study_name: str) -> Iterator[None]:
    """Hold PostgreSQL's transaction-level advisory lock of the study (nothing for other storages).

    The lock lives in a transaction of its own connection: it is released when the ``with`` block ends (commit or
    rollback), and by the server when the process dies (its connection closes), so a killed process never leaves
    it held.
    """
    if not isinstance(storage, RDBStorage) or storage.engine.dialect.name != "postgresql":
        yield
        return
    with storage.engine.connect() as connection, connection.begin():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _advisory_key(study_name)})
        yield


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (nothing when ``path`` is ``None`` or on Windows)."""
    if path is None or fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Heartbeat(contextlib.AbstractContextManager):
    """Send heartbeats for a running trial from a background thread, while the ``with`` block runs.

    :param storage: the study's storage
    :param trial_id: the trial's storage id (``trial._trial_id``)
    """

    def __init__(self, storage: StudyStorage, trial_id: int) -> None:
        self._storage = storage.storage
        self._trial_id = trial_id
        self._enabled = storage.heartbeat_enabled()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        interval = self._storage.get_heartbeat_interval()  # type: ignore[union-attr]
        while True:
            with contextlib.suppress(Exception):  # a missed beat is not an error; the next one may pass
                self._storage.record_heartbeat(self._trial_id)  # type: ignore[union-attr]
            if self._stop.wait(interval):
                return

    def __enter__(self) -> Heartbeat:
        if self._enabled:
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self._trial_id}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
