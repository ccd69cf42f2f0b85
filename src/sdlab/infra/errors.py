"""What can go wrong when sdlab looks for, or starts, a backing service."""

from __future__ import annotations


class InfraError(RuntimeError):
    """Base class: a backing service cannot be reached or started."""


class ServiceUnreachable(InfraError):
    """A service at a known address does not answer its protocol."""

    def __init__(self, service: str, address: str, reason: str, *, hint: str = "") -> None:
        self.service, self.address, self.reason, self.hint = service, address, reason, hint
        message = f"{service} at {address}: {reason}"
        super().__init__(f"{message}. {hint}" if hint else message)


class BinaryNotFound(InfraError):
    """The server program needed to start a private instance is not installed."""

    def __init__(self, program: str, how: str) -> None:
        self.program, self.how = program, how
        super().__init__(f"{program} not found on PATH or in the usual places: {how}")


class StartFailed(InfraError):
    """A private instance did not become ready; carries the end of its log."""

    def __init__(self, service: str, reason: str, log_tail: str = "") -> None:
        self.service, self.reason, self.log_tail = service, reason, log_tail
        tail = f"\n--- last lines of its log ---\n{log_tail}" if log_tail else ""
        super().__init__(f"private {service} instance did not start: {reason}{tail}")
