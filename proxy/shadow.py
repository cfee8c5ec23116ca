"""The comparator's end of the proxy: the sink exchanges are handed to, and a stand-in.

``shadow_compare.runner.build_runner`` provides the real sink; until it is importable the
proxy runs with :class:`CountingDropSink`, which accepts nothing and so makes every sampled
exchange show up as ``dropped`` in the metrics rather than vanish unnoticed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from strangler.exchange import RecordedRequest, RecordedResponse, ShadowSink

__all__ = ["CountingDropSink", "load_shadow_sink"]

log = logging.getLogger("proxy.shadow")


class CountingDropSink:
    """A sink that drops everything (the proxy counts each drop)."""

    def __init__(self) -> None:
        self.dropped = 0

    def submit(
        self,
        entity: str,
        endpoint: str,
        request: RecordedRequest,
        primary: RecordedResponse,
        other: Callable[[], Awaitable[RecordedResponse]],
        primary_again: Callable[[], Awaitable[RecordedResponse]] | None = None,
    ) -> bool:
        self.dropped += 1
        return False


def load_shadow_sink(factory_args: dict[str, Any]) -> tuple[ShadowSink, Any]:
    """The comparator's runner when ``shadow_compare.runner.build_runner`` exists.

    Returns ``(sink, runner)``; ``runner`` is None for the stand-in. The import is lazy so
    the proxy does not depend on the comparator being installed or finished.
    """
    try:
        module = importlib.import_module("shadow_compare.runner")
    except ImportError:
        log.warning("shadow_compare.runner is not available: sampled exchanges are dropped")
        return CountingDropSink(), None
    build = getattr(module, "build_runner", None)
    if build is None:
        log.warning("shadow_compare.runner has no build_runner(): sampled exchanges are dropped")
        return CountingDropSink(), None
    try:
        runner = build(**factory_args)
    except ImportError as exc:  # a part of the comparator that is not there yet
        log.warning(
            "the shadow comparator cannot be built (%s): sampled exchanges are dropped", exc
        )
        return CountingDropSink(), None
    return runner, runner
