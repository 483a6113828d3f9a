"""Helpers for child processes that must not outlive the process that started them."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["exit_with_parent"]


def exit_with_parent(parent: int, name: str = "sppo-parent-watch", poll_s: float = 0.5) -> None:
    """Start a daemon thread that ends this process (``os._exit(1)``) once its parent is no longer ``parent``.

    A process killed by a signal does not stop its children; a child that calls this at its start leaves within
    ``poll_s`` seconds of its parent's death (it is then re-parented, so ``os.getppid()`` changes).

    :param parent: the process id of the parent to follow (``os.getpid()`` taken in the parent)
    :param name: the watch thread's name
    :param poll_s: seconds between two checks
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name=name, daemon=True).start()
