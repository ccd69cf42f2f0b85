"""The cluster as data: its nodes, their roles, GTID positions and lag.

A MariaDB GTID is `domain-server-sequence` ("0-3307-42"): the 42nd transaction of
replication domain 0, first written on the server whose server_id is 3307. A position is
one GTID per domain ("0-3307-42,1-3310-7"). Within a domain every node applies the same
transactions in the same order, so "how far behind" is a difference of sequence numbers,
and "has it reached this GTID" is a comparison, with no binlog file names or offsets.

Roles are observed, never remembered: a node with a replication source configured is a
replica; the primary is the node the replicas replicate from (or, with no replica, the one
node that answers). A node that answers, is neither, and writable is `detached`: an old
primary restarted after a failover, for instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

from sdlab import sql
from sdlab.failure import describe

Role = Literal["primary", "replica", "detached", "down"]


class Gtid(NamedTuple):
    domain: int
    server: int
    seq: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server}-{self.seq}"


def parse_gtid(text: str) -> Gtid:
    domain, server, seq = (int(part) for part in text.strip().split("-"))
    return Gtid(domain, server, seq)


def parse_position(text: str | None) -> dict[int, Gtid]:
    """A GTID position ("0-1-5,1-2-9", or empty) as {domain: gtid}."""
    gtids = (parse_gtid(part) for part in (text or "").split(",") if part.strip())
    return {gtid.domain: gtid for gtid in gtids}


def behind(ahead: str | None, position: str | None) -> int:
    """Transactions in `ahead` that `position` has not reached, summed over domains."""
    mine = parse_position(position)
    return sum(
        max(0, gtid.seq - (mine[domain].seq if domain in mine else 0))
        for domain, gtid in parse_position(ahead).items()
    )


def covers(position: str | None, gtid: str) -> bool:
    """True if `position` has reached `gtid` (in its domain)."""
    wanted = parse_gtid(gtid)
    have = parse_position(position).get(wanted.domain)
    return have is not None and have.seq >= wanted.seq


@dataclass(frozen=True)
class NodeState:
    """What one node said about itself, or why it said nothing."""

    name: str
    url: str
    error: str | None = None
    """Why the node did not answer (None: it did)."""
    read_only: bool = False
    binlog_pos: str = ""
    """@@gtid_binlog_pos: the transactions in its binary log (its own and replicated)."""
    slave_pos: str = ""
    """@@gtid_slave_pos: the transactions its SQL thread applied from a primary."""
    io_pos: str = ""
    """Gtid_IO_Pos: the transactions its IO thread received (applied or not)."""
    source: str | None = None
    """The `host:port` it replicates from (None: no replication configured)."""
    io_running: str = ""
    """Yes, No or Connecting."""
    sql_running: str = ""
    io_state: str = ""
    sql_state: str = ""
    seconds_behind: int | None = None
    """Seconds_Behind_Master: None when the SQL thread is stopped or the IO thread has no
    source; whole seconds, measured from the timestamps in the events it applies."""
    last_error: str = ""
    semisync_source: bool = False
    """rpl_semi_sync_master_enabled: a commit here waits for a replica's acknowledgement."""
    semisync_replica: bool = False

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def address(self) -> str:
        return sql.address_of(self.url)

    @property
    def replicating(self) -> bool:
        """Both replication threads run (the IO thread connected to its source)."""
        return self.io_running == "Yes" and self.sql_running == "Yes"


@dataclass(frozen=True)
class Topology:
    """Every node's state at one moment, and what follows from them."""

    nodes: tuple[NodeState, ...]

    def __iter__(self) -> Iterator[NodeState]:
        return iter(self.nodes)

    def node(self, name: str) -> NodeState:
        for state in self.nodes:
            if state.name == name:
                return state
        raise KeyError(name)

    @property
    def primary(self) -> NodeState | None:
        """The node the replicas replicate from (even if it is down); with no replica,
        the one node that answers (or the one writable node among those that do); None
        if that is not clear."""
        sources = [n.source for n in self.nodes if n.reachable and n.source is not None]
        if sources:
            address = max(set(sources), key=sources.count)
            return next((n for n in self.nodes if n.address == address), None)
        alone = [n for n in self.nodes if n.reachable]
        writable = [n for n in alone if not n.read_only]
        if len(alone) == 1:
            return alone[0]
        return writable[0] if len(writable) == 1 else None

    @property
    def replicas(self) -> list[NodeState]:
        return [n for n in self.nodes if self.role(n) == "replica"]

    def role(self, node: NodeState) -> Role:
        if not node.reachable:
            return "down"
        if node.source is not None:
            return "replica"
        primary = self.primary
        return "primary" if primary is not None and primary.name == node.name else "detached"

    def lag(self, node: NodeState) -> int | None:
        """Transactions the primary logged that `node` has not applied (None if unknown)."""
        primary = self.primary
        if primary is None or not primary.reachable or not node.reachable:
            return None
        if primary.name == node.name:
            return 0
        return behind(primary.binlog_pos, node.slave_pos)


async def observe(name: str, url: str, *, timeout: float = 2.0) -> NodeState:
    """Ask one node about itself, within `timeout` seconds (a stopped or paused server
    comes back as a NodeState with `error` set, not as an exception)."""
    session: sql.Session | None = None
    try:
        async with asyncio.timeout(timeout):
            session = await sql.connect(url, timeout=timeout)
            row = await session.fetchone(
                "SELECT @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos,"
                " @@rpl_semi_sync_master_enabled, @@rpl_semi_sync_slave_enabled"
            )
            assert row is not None
            status = (await session.run("SHOW SLAVE STATUS")).records()
    except (TimeoutError, sql.SQLError, OSError) as exc:
        return NodeState(name, url, error=describe(exc) if str(exc) else "no answer in time")
    finally:
        if session is not None:
            with suppress(Exception):
                async with asyncio.timeout(1.0):
                    await session.close()
    read_only, binlog_pos, slave_pos, semi_source, semi_replica = row
    state = NodeState(
        name,
        url,
        read_only=bool(read_only),
        binlog_pos=binlog_pos or "",
        slave_pos=slave_pos or "",
        semisync_source=bool(semi_source),
        semisync_replica=bool(semi_replica),
    )
    if not status:
        return state
    (s,) = status  # one unnamed replication connection: sdlab uses no multi-source
    errors = [str(s[key]) for key in ("Last_IO_Error", "Last_SQL_Error") if s.get(key)]
    return replace(
        state,
        io_pos=s.get("Gtid_IO_Pos") or "",
        source=f"{s['Master_Host']}:{s['Master_Port']}",
        io_running=s.get("Slave_IO_Running") or "",
        sql_running=s.get("Slave_SQL_Running") or "",
        io_state=s.get("Slave_IO_State") or "",
        sql_state=s.get("Slave_SQL_Running_State") or "",
        seconds_behind=s.get("Seconds_Behind_Master"),
        last_error="; ".join(errors),
    )


async def observe_all(nodes: Mapping[str, str], *, timeout: float = 2.0) -> Topology:
    """Every node's state, asked at once."""
    states = await asyncio.gather(
        *(observe(name, url, timeout=timeout) for name, url in nodes.items())
    )
    return Topology(tuple(states))
