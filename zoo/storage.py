"""Optuna storages for ``sppo-zoo tune``: RDB URLs and journal files, with heartbeats and a trial-budget lock.

- ``--storage sqlite:///study.db``, ``postgresql://user:pass@host/db``, ``mysql+pymysql://...``: Optuna's
  ``RDBStorage``, with Optuna's heartbeat (a trial whose process died is marked FAIL after a grace period).
- ``--storage study.log``: Optuna's ``JournalStorage`` with a file backend (no database server; processes on
  one machine or on a shared file system that supports locks). Optuna has no heartbeat for journals, so
  :class:`HeartbeatJournalStorage` records one as a system attribute of the running trial.

Processes that share a storage also share a lock file next to it (for SQLite files and journal files), which
makes "count the trials, then start one" atomic: together they run exactly ``--n-trials`` trials.
"""

from __future__ import annotations

import contextlib
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

from .errors import ZooError

try:  # the heartbeat interface of Optuna's storages (not exported by optuna.storages)
    from optuna.storages._heartbeat import BaseHeartbeat
except ImportError:  # pragma: no cover - older or newer Optuna without it
    BaseHeartbeat = object  # type: ignore[assignment,misc]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no inter-process lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["HEARTBEAT_ATTR", "Heartbeat", "HeartbeatJournalStorage", "StudyStorage", "open_storage"]

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
    def budget_lock(self) -> Iterator[None]:
        """Hold the lock that makes "count the trials, then ask for one" atomic across threads and processes."""
        with self._thread_lock, _file_lock(self.lock_path):
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
            path = Path(url)
            path.parent.mkdir(parents=True, exist_ok=True)
            storage = HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeat_interval)
            return StudyStorage(storage, Path(f"{path}.zoo-lock"), f"journal file {path}")
    raise ZooError(
        f"--storage {url!r}: expected an RDB URL (sqlite:///study.db, postgresql://user:pass@host/db) "
        "or a journal file path ending in .log"
    )


_DRIVERS = {
    "postgresql": "psycopg2 (pip install psycopg2-binary)",
    "postgresql+psycopg2": "psycopg2 (pip install psycopg2-binary)",
    "postgresql+psycopg": "psycopg (pip install psycopg)",
    "mysql": "mysqlclient (pip install mysqlclient)",
    "mysql+pymysql": "PyMySQL (pip install pymysql)",
}


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
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if str(path) not in ("", ":memory:"):
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_path = Path(f"{path}.zoo-lock")
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for other processes' writes
    try:
        with _file_lock(lock_path):  # one process at a time creates the schema of a new SQLite file
            storage = _create_rdb_storage(url, engine_kwargs, heartbeat_interval)
    except ImportError as err:  # Optuna re-raises a missing database driver as a plain ImportError
        scheme = url.split("://", 1)[0]
        driver = _DRIVERS.get(scheme) or _DRIVERS.get(scheme.split("+", 1)[0], "the database driver of that URL")
        raise ZooError(f"--storage {url!r} needs {driver}, which is not installed") from err
    except Exception as err:  # sqlalchemy's errors: bad URL, unreachable server, wrong password...
        raise ZooError(f"--storage {url!r}: cannot open it ({type(err).__name__}: {err})") from err
    return StudyStorage(storage, lock_path, f"database {url}")


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
