"""MariaDB read replicas: set up GTID replication, route reads and writes, change the primary.

    from sdlab.replica import Router, setup, switchover, failover

    await setup.build(primary_url, [replica_url])            # seeded, attached, verified
    async with Router([setup.app_url(u) for u in urls]) as router:
        written = await router.execute("INSERT ...")          # the primary
        rows = await router.fetch("SELECT ...", after=written.gtid)   # a replica that has it

- `topology`: the cluster as data (roles, GTID positions, lag), observed from the nodes
- `setup`: users, a consistent snapshot onto each replica, `CHANGE MASTER`, a probe row
- `router`: `Router` and its read-your-writes `CausalSession`
- `failover`: `switchover` (planned, nothing lost) and `failover` (the primary died)
- `errors`: what can go wrong, by name
"""

from sdlab.replica import setup
from sdlab.replica.errors import (
    NoCandidate,
    NotCaughtUp,
    PrimaryReadOnly,
    PrimaryUnavailable,
    ReadUnavailable,
    ReplicaError,
    ReplicationBroken,
    UnknownNode,
)
from sdlab.replica.failover import failover, switchover
from sdlab.replica.router import CausalSession, Router, Written
from sdlab.replica.topology import NodeState, Topology, observe, observe_all

__all__ = [
    "CausalSession",
    "NoCandidate",
    "NodeState",
    "NotCaughtUp",
    "PrimaryReadOnly",
    "PrimaryUnavailable",
    "ReadUnavailable",
    "ReplicaError",
    "ReplicationBroken",
    "Router",
    "Topology",
    "UnknownNode",
    "Written",
    "failover",
    "observe",
    "observe_all",
    "setup",
    "switchover",
]
