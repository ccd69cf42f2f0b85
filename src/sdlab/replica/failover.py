"""Change the primary: a planned switchover, or a failover after the primary died.

    await switchover(nodes, "db2")   # db2 becomes the primary; nothing committed is lost
    await failover(nodes)            # the primary is dead: the most advanced replica takes over

`nodes` is name -> administrative URL for every node of the cluster.

Switchover, in order: the old primary is made `read_only` (setting it waits for commits
in progress, and from then on the application user's writes are refused, not lost); its
`@@gtid_binlog_pos` is then final. The new primary waits until it has applied exactly
that position (`MASTER_GTID_WAIT`), stops replicating and becomes writable; every other
node, the old primary included, replicates from it with `MASTER_USE_GTID=slave_pos`. If
the new primary does not catch up in time, the old one is made writable again and
nothing else has changed (`NotCaughtUp`).

Failover: the replicas' IO threads are stopped, so what each has received (`Gtid_IO_Pos`)
stops moving; the replica that received the most is promoted once its SQL thread has
applied all of it, and the others replicate from it. What no replica received is gone:
with asynchronous replication, writes the old primary acknowledged in its last moments
(the experiment counts them); with semi-sync, a commit is acknowledged only after a
replica has it, so none of those. The old primary, if it comes back, is left `detached`
(writable, replicating from nobody): its last transactions may exist nowhere else, and
rejoining it is a decision for an operator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from sdlab.replica.errors import NoCandidate, NotCaughtUp, ReplicaError, UnknownNode
from sdlab.replica.setup import admin, attach, source_semisync
from sdlab.replica.topology import NodeState, Topology, behind, observe_all


async def switchover(
    nodes: Mapping[str, str], new_primary: str, *, timeout: float = 10.0
) -> Topology:
    """Make `new_primary` (a replica) the primary with no committed write lost."""
    if new_primary not in nodes:
        raise UnknownNode(f"no node called {new_primary!r}; the nodes are {', '.join(nodes)}")
    topology = await observe_all(nodes)
    old = topology.primary
    new = topology.node(new_primary)
    if old is None or not old.reachable:
        raise ReplicaError("the primary does not answer: use failover, not switchover")
    if old.name == new_primary:
        return topology
    if topology.role(new) != "replica":
        raise ReplicaError(f"{new_primary} is not a replica ({topology.role(new)})")

    async with admin(old.url) as s:
        await s.execute("SET GLOBAL read_only = 1")
        position = str(await s.fetchval("SELECT @@gtid_binlog_pos"))
    async with admin(new.url) as s:
        reached = await s.fetchval("SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout))
        if reached != 0:
            async with admin(old.url) as back:
                await back.execute("SET GLOBAL read_only = 0")
            raise NotCaughtUp(f"{new_primary} did not reach {position} in {timeout:g} s")
        await _become_primary(new.url)
    semisync = old.semisync_source
    await source_semisync(new.url, semisync)
    await source_semisync(old.url, False)
    async with admin(old.url) as s:
        # It never replicated: what it has applied is what it wrote.
        await s.execute("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")
    # The replicas and the old primary; a detached node (an old primary back after a
    # failover) may hold transactions nobody else has, and stays as it is.
    others = [n for n in topology if n.name != new_primary and topology.role(n) == "replica"]
    await asyncio.gather(*(attach(n.url, new.url) for n in [old, *others]))
    return await observe_all(nodes)


async def failover(
    nodes: Mapping[str, str], *, timeout: float = 10.0, force: bool = False
) -> Topology:
    """Promote the most advanced replica after the primary died; repoint the others.
    Refuses while the primary still answers (that is a switchover), unless `force`: then
    the old primary is made read-only first, so that it cannot take writes beside the new
    one, and left detached (what it had and no replica received is not copied)."""
    topology = await observe_all(nodes)
    old = topology.primary
    if old is not None and old.reachable and topology.role(old) == "primary":
        if not force:
            raise ReplicaError(f"the primary {old.name} answers: use switchover, not failover")
        async with admin(old.url) as s:
            await s.execute("SET GLOBAL read_only = 1")
    replicas = [n for n in topology if n.reachable and n.source is not None]
    if not replicas:
        raise NoCandidate(f"no replica answers: {_roles(topology)}")

    async def stop_io(node: NodeState) -> None:
        async with admin(node.url) as s:
            await s.execute("STOP SLAVE IO_THREAD")

    await asyncio.gather(*(stop_io(n) for n in replicas))
    received = await observe_all({n.name: n.url for n in replicas})
    chosen = _most_advanced([n for n in received if n.reachable])
    async with admin(chosen.url) as s:
        # Everything it received, applied: it may still be in its relay log.
        reached = await s.fetchval("SELECT MASTER_GTID_WAIT(%s, %s)", (chosen.io_pos, timeout))
        if reached != 0:
            raise ReplicaError(f"{chosen.name} did not apply its relay log in {timeout:g} s")
    await _become_primary(chosen.url)
    # The cluster's replicas carry the replica side of semi-sync if it is in use.
    await source_semisync(chosen.url, any(n.semisync_replica for n in received if n.reachable))
    others = [n for n in received if n.reachable and n.name != chosen.name]
    await asyncio.gather(*(attach(n.url, chosen.url) for n in others))
    return await observe_all(nodes)


def _most_advanced(replicas: list[NodeState]) -> NodeState:
    """The replica no other one has received more than (ties: by name)."""
    if not replicas:
        raise NoCandidate("no replica answered after its IO thread was stopped")
    ordered = sorted(replicas, key=lambda n: n.name)
    for candidate in ordered:
        if all(behind(other.io_pos, candidate.io_pos) == 0 for other in ordered):
            return candidate
    # Positions that disagree per domain cannot happen from one primary; take the
    # one furthest ahead of the others in total.
    return max(ordered, key=lambda n: sum(behind(n.io_pos, o.io_pos) for o in ordered))


async def _become_primary(url: str) -> None:
    async with admin(url) as s:
        await s.execute("STOP SLAVE")
        await s.execute("RESET SLAVE ALL")
        await s.execute("SET GLOBAL read_only = 0")


def _roles(topology: Topology) -> str:
    return "; ".join(f"{n.name} {topology.role(n)}" for n in topology)
