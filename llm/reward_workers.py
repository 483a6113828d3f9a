"""Worker processes that call reward functions, each call with a deadline; a stuck call's process is killed.

:class:`WorkerPool` runs :func:`~sppo_rl.llm.reward_functions.call_reward` in long-lived worker processes:

- a **zygote** is a fresh Python interpreter (``subprocess``: never a fork of this multi-threaded process, never a
  re-run of the user's main script) that receives the functions once, pickled by reference, and imports their
  modules once (and what a verifier's ``preload()`` imports); it runs no thread and calls no function;
- each **worker** is forked from the zygote (milliseconds, the modules already imported) and answers one call at a
  time over its own pipes. A call that has not returned by its deadline has its worker killed (``SIGKILL``) and a
  new one forked; nothing is left running.

The zygote and the workers ignore ``SIGINT`` (the trainer decides what Ctrl-C does); the zygote exits when this
process closes its pipe (or dies), and the workers when the zygote is gone. The zygote imports only what scoring
needs: ``sppo_rl.llm``'s ``__init__`` (which imports torch) runs there only if a reward module asks the package for
one of its names.

Data path: parent ``RewardCall`` -> pipe -> worker ``call_reward`` -> ``CallResult`` -> pipe -> parent.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import traceback
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from sppo_rl.processes import exit_with_parent

from .reward_functions import CallResult, RewardCall, RewardTimeoutError, call_reward

__all__ = ["RemoteTraceback", "WorkerPool", "lost_result", "zygote_main"]


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
from sppo_rl.llm.reward_workers import zygote_main
zygote_main(int(sys.argv[1]))
"""
"""The zygote's entry: ``sppo_rl.llm`` as a bare package whose ``__init__`` runs on the first name asked of it."""


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a ``RuntimeError`` with its type and message."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return copy if isinstance(copy, BaseException) else RuntimeError(repr(exc))


def zygote_main(fd: int) -> None:
    """The zygote: load the functions, then fork one worker per request until the parent closes the socket.

    :param fd: a Unix socket to the parent (messages, and each worker's two pipe ends as passed descriptors)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    sock = socket.socket(fileno=fd)
    conn = Connection(os.dup(fd))
    path, entries = conn.recv()
    sys.path[:] = path
    functions: list[Any] = []
    unloadable: dict[int, str] = {}
    for index, (_, blob) in enumerate(entries):
        try:
            functions.append(pickle.loads(blob))
        except Exception as exc:
            functions.append(None)
            unloadable[index] = f"{type(exc).__name__}: {exc}"
            continue
        with contextlib.suppress(Exception):  # a failing import fails the calls, loudly, with its own error
            getattr(functions[-1], "preload", lambda: None)()
    conn.send(("ready", unloadable))
    zygote = os.getpid()
    while True:
        try:
            conn.recv()
        except EOFError:
            return
        _, fds, _, _ = socket.recv_fds(sock, 1, 2)
        pid = os.fork()
        if pid == 0:
            conn.close()
            sock.close()
            code = 1
            try:
                _serve(functions, [name for name, _ in entries], fds[0], fds[1], zygote)
                code = 0
            finally:
                os._exit(code)
        for f in fds:
            os.close(f)
        conn.send(pid)


def _serve(functions: list[Any], names: list[str], fd_in: int, fd_out: int, zygote: int) -> None:
    """A worker: answer calls until the pipe closes (or the zygote is gone)."""
    exit_with_parent(zygote, name="sppo-reward-zygote-watch")
    inbox, outbox = Connection(fd_in, writable=False), Connection(fd_out, readable=False)
    outbox.send(("ready", {}))
    while True:
        try:
            task_id, index, call = inbox.recv()
        except EOFError:
            return
        result = call_reward(functions[index], call, names[index])
        for attr in ("error", "fatal"):
            raised = getattr(result, attr)
            if raised is not None:
                result.traceback = result.traceback or "".join(traceback.format_exception(raised))
                setattr(result, attr, _portable(raised))
        outbox.send((task_id, result))


def _gone(pid: int, wait_s: float = 2.0) -> None:
    """Wait until process ``pid`` no longer exists (the zygote's kernel-reaped children vanish on exit)."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.001)


class _Worker:
    """One worker process (a child of the zygote) and its two pipes."""

    def __init__(self, pid: int, calls: Connection, results: Connection) -> None:
        self.pid = pid
        self.calls = calls
        self.results = results
        self.started = time.monotonic()
        self.ready = False
        self.task: int | None = None
        self.deadline: float | None = None

    def kill(self) -> None:
        """Stop the process now and wait until it is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        _gone(self.pid)
        self.calls.close()
        self.results.close()


class _Zygote:
    """The process that imports the functions once and forks the workers."""

    def __init__(self, payload: tuple[list[str], list[tuple[str, bytes]]]) -> None:
        mine, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(theirs.fileno())], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
        )
        theirs.close()
        self.sock = mine
        self.conn = Connection(os.dup(mine.fileno()))
        self.conn.send(payload)

    def ready(self, timeout_s: float) -> dict[int, str]:
        """Wait until the functions are loaded; the indices that could not be, with why.

        :raises RuntimeError: the zygote exited or did not get ready in time
        """
        try:
            if not self.conn.poll(timeout_s):
                raise RuntimeError(f"The reward worker process did not start within {timeout_s:g} s")
            _, unloadable = self.conn.recv()
        except (EOFError, OSError):
            code = self.process.wait()
            raise RuntimeError(f"The reward worker process exited while starting (exit code {code})") from None
        return dict(unloadable)

    def fork(self) -> _Worker:
        """A new worker with its own pipes."""
        call_r, call_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            self.conn.send("fork")
            socket.send_fds(self.sock, [b"F"], [call_r, result_w])
            pid = int(self.conn.recv())
        except (EOFError, OSError):
            for f in (call_w, result_r):
                os.close(f)
            raise RuntimeError(f"The reward zygote process died (exit code {self.process.poll()})") from None
        finally:
            os.close(call_r)
            os.close(result_w)
        return _Worker(pid, Connection(call_w, readable=False), Connection(result_r, writable=False))

    def kill(self) -> None:
        """Stop the zygote (after its workers) and reap it."""
        self.conn.close()
        self.sock.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@dataclass
class _Processes:
    """What a pool holds (shared with its finalizer)."""

    workers: list[_Worker] = field(default_factory=list)
    zygote: _Zygote | None = None

    def stop(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers.clear()
        if self.zygote is not None:
            self.zygote.kill()
            self.zygote = None


@dataclass
class _Lost:
    """A call that never returned: ``timeout`` (its worker was killed) or ``died`` (its worker died)."""

    kind: str
    message: str


class WorkerPool:
    """Long-lived worker processes that run reward calls, each with a deadline (see the module docstring).

    The zygote starts on the first :meth:`run` and the workers are forked from it; they live until :meth:`close` (or
    until the pool is garbage-collected, or this process exits).

    :param functions: ``(name, function)`` pairs; each function must pickle (by reference, for a function)
    :param size: number of worker processes
    :param start_timeout_s: seconds the zygote may take to import the functions' modules
    """

    def __init__(self, functions: Sequence[tuple[str, Any]], size: int, start_timeout_s: float = 300.0) -> None:
        if size < 1:
            raise ValueError(f"A worker pool needs size >= 1, got {size}")
        self.entries = [(name, pickle.dumps(fn)) for name, fn in functions]
        self.size = size
        self.start_timeout_s = start_timeout_s
        self.unloadable: dict[int, str] = {}
        """Function index -> why the zygote could not load it (it must be called in this process instead)."""
        self._procs = _Processes()
        self._finalizer = weakref.finalize(self, self._procs.stop)

    @property
    def workers(self) -> list[_Worker]:
        """The live workers."""
        return self._procs.workers

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.pid for w in self.workers]

    def start(self) -> None:
        """Start the zygote if needed (waiting until it has imported the functions) and fork the missing workers."""
        procs = self._procs
        if procs.zygote is None or procs.zygote.process.poll() is not None:
            if procs.zygote is not None:
                procs.stop()
            procs.zygote = _Zygote((list(sys.path), self.entries))
            self.unloadable = procs.zygote.ready(self.start_timeout_s)
        while len(procs.workers) < self.size:
            procs.workers.append(procs.zygote.fork())

    def close(self) -> None:
        """Kill every process (a later :meth:`run` starts new ones)."""
        self._procs.stop()

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers.remove(worker)
        self.start()

    def _receive(self, worker: _Worker, results: list[Any]) -> None:
        try:
            message = worker.results.recv()
        except (EOFError, OSError):
            if worker.task is not None:
                results[worker.task] = _Lost("died", "its worker process died")
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
        for w in [w for w in self.workers if w.task is not None]:
            self._replace(w)  # busy with a call of an interrupted run (Ctrl-C): its result would be stale
        self.start()
        results: list[Any] = [None] * len(tasks)
        queue = deque(range(len(tasks)))
        while True:
            now = time.monotonic()
            for w in list(self.workers):
                while w.ready and w.task is None and queue:
                    t = queue.popleft()
                    index, call = tasks[t]
                    if index in self.unloadable:
                        continue
                    try:
                        w.calls.send((t, index, call))
                    except OSError:  # the worker died while idle: a new one takes the task
                        queue.appendleft(t)
                        self._replace(w)
                        break
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
                    raise RuntimeError(f"A reward worker process did not answer within {self.start_timeout_s:g} s")


def lost_result(lost: _Lost, n: int) -> CallResult:
    """The :class:`CallResult` of a call that never returned."""
    error: BaseException = RewardTimeoutError(lost.message) if lost.kind == "timeout" else RuntimeError(lost.message)
    return CallResult.failed(n, "timeout" if lost.kind == "timeout" else "error", error)
