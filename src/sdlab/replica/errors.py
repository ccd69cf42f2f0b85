"""What can go wrong with a replicated cluster, by name.

ReplicaError
  PrimaryUnavailable   a write could not reach the primary (down, unknown, read-only)
    PrimaryReadOnly    the primary refused the write: a switchover is under way
  ReadUnavailable      no replica and not the primary answered a read
  ReplicationBroken    set-up or a check found a replica not replicating (and why)
  NotCaughtUp          a switchover's new primary did not reach the old one's position
  NoCandidate          a failover found no replica to promote
  UnknownNode          a node name the cluster does not have
"""

from __future__ import annotations


class ReplicaError(Exception):
    """An error of sdlab.replica; the server's own error, if any, is `__cause__`."""


class PrimaryUnavailable(ReplicaError):
    """A write did not reach the primary. `maybe_committed` is True when the session was
    lost mid-statement: the write may or may not have committed, and the caller must find
    out before running it again."""

    def __init__(self, message: str, *, maybe_committed: bool = False) -> None:
        super().__init__(message)
        self.maybe_committed = maybe_committed


class PrimaryReadOnly(PrimaryUnavailable):
    """The primary is read-only (a switchover demoted it): the write did not happen and
    may be sent again once the router has found the new primary."""


class ReadUnavailable(ReplicaError):
    """No healthy replica answered, and neither did the primary."""


class ReplicationBroken(ReplicaError):
    """A replica is not replicating: its threads are stopped, it has an error, or a probe
    row written on the primary did not reach it in time."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"{node}: {reason}")
        self.node, self.reason = node, reason


class NotCaughtUp(ReplicaError):
    """A switchover's new primary did not reach the old primary's GTID position in time;
    the old primary was made writable again and nothing was changed."""


class NoCandidate(ReplicaError):
    """A failover found no reachable replica to promote."""


class UnknownNode(ReplicaError, KeyError):
    """A node name the cluster does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
