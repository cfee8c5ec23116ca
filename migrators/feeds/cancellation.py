"""Stopping a sync worker whose cancellation a library lost.

A worker stops when its task is cancelled (Ctrl-C, a supervisor, a take-over
test). On Python 3.11, ``asyncio.wait_for`` loses such a cancellation when it
arrives just as the operation it waits for completes: it returns the result
instead of raising (CPython gh-86296, fixed in 3.12). redis-py wraps the write
of every command in ``wait_for`` whenever a ``socket_timeout`` is set (5 s by
default), so a polling worker cancelled at that moment would go on polling the
touched-ids stream for ever, and whoever awaits its end waits for ever too.

The request is not gone, though: the task still counts it
(:meth:`asyncio.Task.cancelling` stays above zero until someone uncancels it,
which only the code that decided to swallow a cancellation does, e.g.
``asyncio.timeout`` turning its own into ``TimeoutError``). So the worker's
loops call :func:`raise_if_cancel_requested` between steps: a stop is honoured
within one batch however the library behaved.
"""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancel_requested"]


def raise_if_cancel_requested() -> None:
    """Raise ``CancelledError`` if this task was asked to stop and is still running."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError("a cancellation lost by a library call, honoured now")
