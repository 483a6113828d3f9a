"""Several processes that open the same new SQLite study database at the same moment all succeed."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from sppo_rl.zoo.storage import _is_schema_race, open_storage


def _open_and_count(url: str, barrier: mp.synchronize.Barrier, queue: mp.Queue) -> None:  # type: ignore[name-defined]
    barrier.wait()
    try:
        storage = open_storage(url)
        queue.put(("ok", len(storage.storage.get_all_studies())))
    except Exception as err:  # reported to the parent, which fails the test with it
        queue.put(("error", repr(err)))


def test_concurrent_openings_of_a_new_sqlite_file_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    ctx = mp.get_context("spawn")
    n = 4
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    processes = [ctx.Process(target=_open_and_count, args=(url, barrier, queue)) for _ in range(n)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=120) for _ in range(n)]
    for process in processes:
        process.join(timeout=60)
    assert results == [("ok", 0)] * n


def test_schema_race_errors_are_recognized_and_others_are_not() -> None:
    class IntegrityError(Exception):
        pass

    assert _is_schema_race(Exception("(sqlite3.OperationalError) table studies already exists"))
    assert _is_schema_race(IntegrityError("UNIQUE constraint failed: alembic_version.version_num"))
    assert not _is_schema_race(Exception("unable to open database file"))
    assert not _is_schema_race(IntegrityError("UNIQUE constraint failed: studies.study_name"))
