"""What can go wrong when sdlab looks for, or starts, a backing service."""

from __future__ import annotations

from pathlib import Path


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
    """A private instance did not become ready; says why, with its log's error lines."""

    def __init__(self, service: str, reason: str, excerpt: str = "") -> None:
        super().__init__(service, reason, excerpt)
        self.service, self.reason, self.excerpt = service, reason, excerpt
        self.log: Path | None = None
        """Where the whole log was kept, once the instance's directory is gone."""

    def __str__(self) -> str:
        text = f"private {self.service} instance did not start: {self.reason}"
        if self.excerpt:
            text += f"\n--- from its log ---\n{self.excerpt}"
        if self.log:
            text += f"\n(the whole log: {self.log})"
        return text
