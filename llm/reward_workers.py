"""Worker processes that call reward functions, each call with a deadline; a stuck call's process is killed.

:class:`WorkerPool` runs :func:`~sppo_rl.llm.reward_functions.call_reward` in long-lived worker processes. A worker
is a fresh Python interpreter (``subprocess``: never a fork of this multi-threaded process, never a re-run of the
user's main script) that receives the functions once, pickled by reference, then one call at a time over a pipe. A
call that has not returned by its deadline has its worker killed (``SIGKILL``) and a new one started; nothing is left
running. Workers ignore ``SIGINT`` (the trainer decides what Ctrl-C does) and exit when this process dies.

A worker imports only what scoring needs: ``sppo_rl.llm``'s ``__init__`` (which imports torch, seconds per process)
runs there only if a reward module asks the package for one of its names.

Data path: parent ``RewardCall`` -> pipe -> worker ``call_reward`` -> ``CallResult`` -> pipe -> parent.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from .reward_functions import CallResult, RewardCall, RewardTimeoutError, call_reward

__all__ = ["RemoteTraceback", "WorkerPool", "lost_result", "worker_main"]


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (set as that exception's ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


_BOOT = """
import importlib.util, sys
spec = importlib.util.find_spec("sppo_rl.llm")
package = importlib.util.module_from_spec(spec)
def load_package(name):
    del package.__dict__["__getattr__"]
    spec.loader.exec_module(package)
    return getattr(package, name)
package.__getattr__ = load_package
sys.modules["sppo_rl.llm"] = package
sys.modules["sppo_rl"].llm = package
from sppo_rl.llm.reward_workers import worker_main
worker_main(*map(int, sys.argv[1:]))
"""
"""A worker's entry: ``sppo_rl.llm`` as a bare package whose ``__init__`` runs on the first name asked of it."""


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a ``RuntimeError`` with its type and message."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return copy if isinstance(copy, BaseException) else RuntimeError(repr(exc))


def _exit_with_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="sppo-reward-parent-watch", daemon=True).start()


def worker_main(fd_in: int, fd_out: int, parent: int) -> None:
    """A worker process: load the functions, then answer calls until the pipe closes.

    :param fd_in: the pipe end to read calls from
    :param fd_out: the pipe end to write results to
    :param parent: the parent's process id (the worker exits when it dies)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent)
    inbox, outbox = Connection(fd_in, writable=False), Connection(fd_out, readable=False)
    path, entries = inbox.recv()
    sys.path[:] = path
    functions: list[Any] = []
    unloadable: dict[int, str] = {}
    for index, (_, blob) in enumerate(entries):
        try:
            functions.append(pickle.loads(blob))
        except Exception as exc:
            functions.append(None)
            unloadable[index] = f"{type(exc).__name__}: {exc}"
    outbox.send(("ready", unloadable))
    while True:
        try:
            task_id, index, call = inbox.recv()
        except EOFError:
            return
        result = call_reward(functions[index], call, entries[index][0])
        for attr in ("error", "fatal"):
            raised = getattr(result, attr)
            if raised is not None:
                result.traceback = result.traceback or "".join(traceback.format_exception(raised))
                setattr(result, attr, _portable(raised))
        outbox.send((task_id, result))


class _Worker:
    """One worker process and its two pipes."""

    def __init__(self, payload: tuple[list[str], list[tuple[str, bytes]]]) -> None:
        call_r, call_w = os.pipe()
        result_r, result_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(call_r), str(result_w), str(os.getpid())],
            pass_fds=(call_r, result_w),
            stdin=subprocess.DEVNULL,
        )
        os.close(call_r)
        os.close(result_w)
        self.calls = Connection(call_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.calls.send(payload)
        self.started = time.monotonic()
        self.ready = False
        self.task: int | None = None
        self.deadline: float | None = None

    def kill(self) -> None:
        """Stop the process now and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.calls.close()
        self.results.close()


def _kill_all(workers: list[_Worker]) -> None:
    for w in workers:
        w.kill()
    workers.clear()


@dataclass
class _Lost:
    """A call that never returned: ``timeout`` (its worker was killed) or ``died`` (its worker died)."""

    kind: str
    message: str


class WorkerPool:
    """Long-lived worker processes that run reward calls, each with a deadline (see the module docstring).

    The processes start on the first :meth:`run` (all at once, in parallel) and live until :meth:`close` (or until
    the pool is garbage-collected, or this process exits).

    :param functions: ``(name, function)`` pairs; each function must pickle (by reference, for a function)
    :param size: number of processes
    :param start_timeout_s: seconds a process may take to start
    """

    def __init__(self, functions: Sequence[tuple[str, Any]], size: int, start_timeout_s: float = 300.0) -> None:
        if size < 1:
            raise ValueError(f"A worker pool needs size >= 1, got {size}")
        self.entries = [(name, pickle.dumps(fn)) for name, fn in functions]
        self.size = size
        self.start_timeout_s = start_timeout_s
        self.unloadable: dict[int, str] = {}
        """Function index -> why a worker could not load it (it must be called in this process instead)."""
        self.workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _kill_all, self.workers)

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.process.pid for w in self.workers]

    def start(self) -> None:
        """Start the missing processes (returns at once; they get ready in the background)."""
        while len(self.workers) < self.size:
            self.workers.append(_Worker((list(sys.path), self.entries)))

    def close(self) -> None:
        """Kill every process (a later :meth:`run` starts new ones)."""
        _kill_all(self.workers)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers.remove(worker)
        self.start()

    def _receive(self, worker: _Worker, results: list[Any]) -> None:
        try:
            message = worker.results.recv()
        except (EOFError, OSError):
            code = worker.process.poll()
            if not worker.ready:
                self._replace(worker)
                raise RuntimeError(
                    f"A reward worker process exited while starting (exit code {code}); its error is printed above"
                ) from None
            if worker.task is not None:
                results[worker.task] = _Lost("died", f"its worker process died (exit code {code})")
            self._replace(worker)
            return
        if message[0] == "ready":
            worker.ready = True
            self.unloadable.update(message[1])
            return
        task_id, result = message
        for attr in ("error", "fatal"):
            exc = getattr(result, attr)
            if exc is not None and result.traceback:
                exc.__cause__ = RemoteTraceback(result.traceback)
        results[task_id] = result
        worker.task = worker.deadline = None

    def run(self, tasks: Sequence[tuple[int, RewardCall]], timeout_s: float | None) -> list[CallResult | _Lost]:
        """Run ``(function index, call)`` tasks, each on a free worker, each with ``timeout_s`` from when it is
        sent; a task past its deadline has its worker killed (and a new one started) and comes back as lost.

        :return: one :class:`CallResult` (or a lost call) per task, in order; a task whose function no worker can
            load comes back as ``None`` (see :attr:`unloadable`)
        :raises RuntimeError: a worker could not start
        """
        self.start()
        results: list[Any] = [None] * len(tasks)
        queue = deque(range(len(tasks)))
        while True:
            now = time.monotonic()
            for w in self.workers:
                while w.ready and w.task is None and queue:
                    t = queue.popleft()
                    index, call = tasks[t]
                    if index in self.unloadable:
                        continue
                    w.calls.send((t, index, call))
                    w.task, w.deadline = t, (now + timeout_s if timeout_s else None)
            waiting = [w for w in self.workers if not w.ready or w.task is not None]
            if not queue and not any(w.task is not None for w in waiting):
                return results
            limits = [w.deadline if w.ready else w.started + self.start_timeout_s for w in waiting]
            finite = [x for x in limits if x is not None]
            wait_s = max(0.0, min(finite) - now) if finite else None
            for conn in wait([w.results for w in waiting], timeout=wait_s):
                self._receive(next(w for w in self.workers if w.results is conn), results)
            now = time.monotonic()
            for w in list(self.workers):
                if w.task is not None and w.deadline is not None and now >= w.deadline and not w.results.poll():
                    n = len(tasks[w.task][1])
                    msg = f"did not return within {timeout_s:g} s on {n} samples (its worker process was stopped)"
                    results[w.task] = _Lost("timeout", msg)
                    self._replace(w)
                elif not w.ready and now >= w.started + self.start_timeout_s:
                    self._replace(w)
                    raise RuntimeError(f"A reward worker process did not start within {self.start_timeout_s:g} s")


def lost_result(lost: _Lost, n: int) -> CallResult:
    """The :class:`CallResult` of a call that never returned."""
    error: BaseException = RewardTimeoutError(lost.message) if lost.kind == "timeout" else RuntimeError(lost.message)
    return CallResult.failed(n, "timeout" if lost.kind == "timeout" else "error", error)
