"""Errors of the proxy package.

    ProxyError (StranglerError)          root of this package
    ├── RulesError (PermanentError)      routing_rules.yaml is invalid: every problem with file,
    │                                    line and fix
    ├── DuplicateHandler (PermanentError) a new-side handler registered twice for one endpoint
    ├── HandlerModuleError (PermanentError) a module of proxy.handlers cannot be loaded
    ├── AdminUnreachable (RetryableError) an instance's admin port did not apply a fence
    └── UpstreamFailure (RetryableError)  legacy refused, timed out or broke a connection

Upstream failures on the request path never reach a client as an exception: the upstream
client maps aiohttp's errors to UpstreamFailure, and the forwarder answers it with a 502 or
504 in the legacy envelope (see forward.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from strangler.errors import PermanentError, RetryableError, StranglerError

__all__ = [
    "AdminUnreachable",
    "DuplicateHandler",
    "HandlerModuleError",
    "ProxyError",
    "RulesError",
    "RulesProblem",
    "UpstreamFailure",
]


class ProxyError(StranglerError):
    """Root of the proxy package's errors."""


@dataclass(frozen=True)
class RulesProblem:
    """One thing wrong with a rules file: where, what, and how to fix it."""

    line: int | None
    problem: str
    fix: str

    def render(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line is not None else path
        return f"{where}: {self.problem}; fix: {self.fix}"


class RulesError(ProxyError, PermanentError):
    """The routing rules cannot be applied; the message lists every problem found."""

    def __init__(self, path: str, problems: Sequence[RulesProblem]) -> None:
        self.path = path
        self.problems = tuple(problems)
        lines = [p.render(path) for p in self.problems]
        head = f"{len(lines)} problem(s) in {path}" if len(lines) > 1 else ""
        super().__init__("\n".join([head, *lines]) if head else lines[0])


class DuplicateHandler(ProxyError, PermanentError):
    def __init__(self, entity: str, endpoint: str) -> None:
        self.entity = entity
        self.endpoint = endpoint
        super().__init__(
            f"a new-side handler for {entity} {endpoint!r} is already registered; "
            "each endpoint has exactly one handler: remove the second registration"
        )


class HandlerModuleError(ProxyError, PermanentError):
    """A module listed in proxy.handlers.HANDLER_MODULES is missing or has no register()."""


class AdminUnreachable(ProxyError, RetryableError):
    """One or more proxy instances did not apply a fence change."""

    def __init__(self, failures: Sequence[tuple[str, str]]) -> None:
        self.failures = tuple(failures)
        listed = "; ".join(f"{url}: {why}" for url, why in self.failures)
        super().__init__(
            f"the fence change was not applied by {len(self.failures)} instance(s) ({listed}); "
            "check that each --admin URL is a running proxy's admin port and retry"
        )


class UpstreamFailure(ProxyError, RetryableError):
    """The legacy backend refused, timed out or broke the connection.

    Never reaches a CLI: the forwarder turns it into a 502 (refused, broken) or a 504
    (timeout) in the legacy envelope.
    """

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind  # "refused" | "timeout" | "broken"
        self.detail = detail
        super().__init__(f"legacy backend {kind}: {detail}")
