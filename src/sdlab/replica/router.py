"""A replica-aware router: writes to the primary, reads to a healthy replica.

    async with Router({"db1": primary_url, "db2": replica_url}) as router:
        written = await router.execute("INSERT INTO orders (item) VALUES (%s)", ("tea",))
        rows = await router.fetch("SELECT item FROM orders")          # a replica, maybe stale
        rows = await router.fetch("SELECT ...", after=written.gtid)    # sees that insert
        me = router.causal()                                          # read-your-writes
        await me.execute("UPDATE ...")
        await me.fetch("SELECT ...")                                  # sees the update

It routes by method, not by parsing SQL: `execute` and `transaction` go to the primary,
`fetch`, `fetchone` and `fetchval` to a replica. A read that must see the primary (a
SELECT ... FOR UPDATE, or a read that decides a write) belongs in a `transaction`.

How a read travels:

- The candidates are the replicas the last health check found healthy: reachable, both
  replication threads running, Seconds_Behind_Master within `max_lag` and (if set) at most
  `max_behind` transactions behind the primary. They are tried in `strategy` order:
  "round_robin", or "least_lag" (fewest transactions behind, then fewest reads in flight).
- With `after` (a GTID), the replica first runs `MASTER_GTID_WAIT(gtid, wait_timeout)` in
  the same session: 0 means it has applied that transaction, so the read sees it; -1 (not
  in time) sends the read to the primary instead of waiting at another replica.
- A replica that fails a read (no answer within `read_timeout`, a lost or refused
  connection) is skipped from then on, and the read goes to the next candidate; with none
  left, to the primary. The caller sees no error unless the primary fails too
  (`ReadUnavailable`). A skipped replica comes back when a health check that started
  after its failure finds it healthy again.

Health checks (`refresh()`, every `check_interval` seconds in the background) observe
every node (`topology.observe`). Roles come from them: the primary is the node the
replicas replicate from, so after a switchover or failover the router writes to the new
primary by itself, within one check. A write the primary refuses as read-only (during a
switchover) raises `PrimaryReadOnly`: it did not happen, and may be sent again.

Each node has a `sdlab.sql.Database` (a pool), opened once a check finds the node up.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Self

from sdlab import sql
from sdlab.failure import describe
from sdlab.pool import PoolError
from sdlab.replica.errors import PrimaryReadOnly, PrimaryUnavailable, ReadUnavailable
from sdlab.replica.topology import NodeState, Topology, observe_all

Strategy = Literal["round_robin", "least_lag"]
Params = Sequence[Any]

_READ_ONLY = 1290  # ER_OPTION_PREVENTS_STATEMENT: "running with the --read-only option"
_UNREACHABLE = (TimeoutError, OSError, sql.ConnectionLost, sql.DatabaseUnavailable, PoolError)


class Written(NamedTuple):
    """What a write did: rows changed, the AUTO_INCREMENT id, and its GTID (None if it
    wrote nothing to the binary log, or the GTID could not be read after the commit)."""

    rowcount: int
    lastrowid: int | None
    gtid: str | None


@dataclass
class Stats:
    """What a router did: reads by the node that served them, writes, reads sent to the
    primary instead of a replica (by why), and each replica's skips after a failure."""

    reads: Counter[str] = field(default_factory=Counter)
    writes: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)
    skips: Counter[str] = field(default_factory=Counter)


@dataclass
class _Node:
    name: str
    url: str
    db: sql.Database | None = None
    state: NodeState | None = None
    failed_at: float | None = None
    """When a read last failed here (monotonic); cleared by a later healthy check."""
    in_flight: int = 0


class Router:
    """Routes statements across one primary and its replicas; see the module docstring.

    nodes: name -> URL (or a list of URLs, named by address), every node of the cluster,
        whatever its role; the health checks find out which is which.
    max_lag: seconds behind (Seconds_Behind_Master) past which a replica is skipped.
    max_behind: transactions behind the primary past which a replica is skipped (None: no
        limit of that kind).
    read_timeout: seconds a read may take on a replica before it is tried elsewhere.
    wait_timeout: seconds a read-your-writes read waits for its GTID on a replica.
    check_interval, check_timeout: the health checks' period and each one's limit.
    max_size: connections per node.
    """

    def __init__(
        self,
        nodes: Mapping[str, str] | Sequence[str],
        *,
        strategy: Strategy = "round_robin",
        max_lag: float = 5.0,
        max_behind: int | None = None,
        read_timeout: float = 2.0,
        wait_timeout: float = 0.5,
        check_interval: float = 0.25,
        check_timeout: float = 1.0,
        max_size: int = 10,
    ) -> None:
        if strategy not in ("round_robin", "least_lag"):
            raise ValueError(f"strategy must be round_robin or least_lag, not {strategy!r}")
        if wait_timeout >= read_timeout:
            raise ValueError("wait_timeout must be shorter than read_timeout")
        named = nodes if isinstance(nodes, Mapping) else {sql.address_of(u): u for u in nodes}
        self._nodes = {name: _Node(name, url) for name, url in named.items()}
        self.strategy: Strategy = strategy
        self.max_lag, self.max_behind = max_lag, max_behind
        self.read_timeout, self.wait_timeout = read_timeout, wait_timeout
        self.check_interval, self.check_timeout = check_interval, check_timeout
        self.max_size = max_size
        self.topology: Topology | None = None
        """What the last health check saw."""
        self.last_gtid: str | None = None
        """The GTID of the last write through this router, from any task."""
        self.stats = Stats()
        """Reads per node, writes, reads sent to the primary (and why), replicas skipped."""
        self._turn = itertools.count()
        self._checker: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    # -- life ---------------------------------------------------------------------------

    async def open(self) -> Self:
        """Observe the cluster and open a pool to each node that answers; start the
        health checks. Raises PrimaryUnavailable if no primary answers."""
        await self.refresh()
        if self._primary() is None:
            await self.close()
            raise PrimaryUnavailable(f"no primary answers: {self._describe()}")
        self._checker = asyncio.create_task(self._check_forever(), name="replica-router-checks")
        return self

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with suppress(asyncio.CancelledError):
                await self._checker
            self._checker = None
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)  # none opens a pool after
        for node in self._nodes.values():
            if node.db is not None:
                await node.db.close()
                node.db = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- writes -------------------------------------------------------------------------

    async def execute(self, sql_text: str, params: Params = ()) -> Written:
        """Run a write on the primary (autocommit); its rows, id and GTID."""
        db = self._writer()
        try:
            async with db.session() as s:
                try:
                    result = await s.run(sql_text, params)
                except sql.SQLError as exc:
                    self._refused(exc)
                    raise
                try:  # committed by now: a failure from here on loses only the GTID
                    gtid = await s.fetchval("SELECT @@last_gtid") or None
                except sql.SQLError:
                    gtid = None
        except _UNREACHABLE as exc:
            raise self._unreachable(db, exc) from exc
        self.stats.writes += 1
        if gtid:
            self.last_gtid = gtid
        return Written(result.rowcount, result.lastrowid, gtid)

    @asynccontextmanager
    async def transaction(
        self, isolation: sql.Isolation | None = None
    ) -> AsyncIterator[sql.Session]:
        """BEGIN ... COMMIT on the primary; reads inside it see the primary. Afterwards
        `last_gtid` (and a causal session's) is the transaction's GTID."""
        async with self._transaction(isolation, lambda _: None) as tx:
            yield tx

    @asynccontextmanager
    async def _transaction(
        self, isolation: sql.Isolation | None, committed: Callable[[str | None], None]
    ) -> AsyncIterator[sql.Session]:
        db = self._writer()
        in_block = False
        try:
            async with db.session() as s:
                try:
                    async with s.transaction(isolation):
                        in_block = True
                        yield s
                        in_block = False
                except sql.SQLError as exc:
                    self._refused(exc)
                    raise
                gtid = None
                with suppress(sql.SQLError):
                    gtid = await s.fetchval("SELECT @@last_gtid") or None
        except _UNREACHABLE as exc:
            if in_block and not isinstance(exc, sql.SQLError):
                raise  # the block's own (its timeout, say), not the primary's
            # Lost inside the block: not committed (the server rolls back a dead session).
            raise self._unreachable(db, exc, maybe_committed=not in_block) from exc
        self.stats.writes += 1
        if gtid:
            self.last_gtid = gtid
        committed(gtid)

    def _writer(self) -> sql.Database:
        primary = self._primary()
        if primary is None or primary.db is None:
            raise PrimaryUnavailable(f"no primary answers: {self._describe()}")
        return primary.db

    def _refused(self, exc: sql.SQLError) -> None:
        if exc.code == _READ_ONLY:
            self._soon_refresh()
            raise PrimaryReadOnly(
                f"the primary is read-only (a switchover?); the write did not happen: {exc}"
            ) from exc

    def _unreachable(
        self, db: sql.Database, exc: BaseException, *, maybe_committed: bool = True
    ) -> PrimaryUnavailable:
        self._soon_refresh()
        lost = isinstance(exc, sql.ConnectionLost) and maybe_committed
        why = "the session was lost mid-write: it may have committed" if lost else "not reached"
        return PrimaryUnavailable(f"{db.name}: {why}: {describe(exc)}", maybe_committed=lost)

    # -- reads --------------------------------------------------------------------------

    async def fetch(
        self, sql_text: str, params: Params = (), *, after: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Rows from a healthy replica (one that has applied `after`, if given), else from
        the primary."""
        for node in self._candidates():
            assert node.db is not None
            node.in_flight += 1
            try:
                async with asyncio.timeout(self.read_timeout), node.db.session() as s:
                    if after is not None:
                        reached = await s.fetchval(
                            "SELECT MASTER_GTID_WAIT(%s, %s)", (after, self.wait_timeout)
                        )
                        if reached != 0:
                            self.stats.fallbacks["GTID not applied in time"] += 1
                            break
                    rows = await s.fetch(sql_text, params)
                self.stats.reads[node.name] += 1
                return rows
            except _UNREACHABLE as exc:
                self._skip(node, exc)
            finally:
                node.in_flight -= 1
        else:
            self.stats.fallbacks["no healthy replica"] += 1
        return await self.fetch_primary(sql_text, params)

    async def fetchone(
        self, sql_text: str, params: Params = (), *, after: str | None = None
    ) -> tuple[Any, ...] | None:
        rows = await self.fetch(sql_text, params, after=after)
        return rows[0] if rows else None

    async def fetchval(
        self, sql_text: str, params: Params = (), *, after: str | None = None
    ) -> Any:
        row = await self.fetchone(sql_text, params, after=after)
        return None if row is None else row[0]

    async def fetch_primary(self, sql_text: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Rows from the primary: a read that must see every committed write."""
        primary = self._primary()
        if primary is None or primary.db is None:
            raise ReadUnavailable(
                f"no replica is healthy and no primary answers: {self._describe()}"
            )
        try:
            async with asyncio.timeout(self.read_timeout):
                rows = await primary.db.fetch(sql_text, params)
        except _UNREACHABLE as exc:
            self._soon_refresh()
            raise ReadUnavailable(
                f"no replica is healthy, and the primary: {describe(exc)}"
            ) from exc
        self.stats.reads[primary.name] += 1
        return rows

    def _candidates(self) -> list[_Node]:
        healthy = [n for n in self._nodes.values() if self._healthy(n)]
        if self.strategy == "least_lag":
            topology = self.topology

            def lag(n: _Node) -> tuple[int, int]:
                behind = topology.lag(n.state) if topology and n.state else None
                return (behind if behind is not None else 1 << 30, n.in_flight)

            return sorted(healthy, key=lag)
        if not healthy:
            return []
        start = next(self._turn) % len(healthy)
        return healthy[start:] + healthy[:start]

    def _healthy(self, node: _Node) -> bool:
        state, topology = node.state, self.topology
        if state is None or topology is None or node.db is None or node.failed_at is not None:
            return False
        if topology.role(state) != "replica" or not state.replicating:
            return False
        if state.seconds_behind is None or state.seconds_behind > self.max_lag:
            return False
        if self.max_behind is not None:
            behind = topology.lag(state)
            return behind is not None and behind <= self.max_behind
        return True

    def _skip(self, node: _Node, exc: BaseException) -> None:
        if node.failed_at is None:
            self.stats.skips[node.name] += 1
        node.failed_at = time.monotonic()
        self._soon_refresh()

    # -- causal sessions ----------------------------------------------------------------

    def causal(self) -> CausalSession:
        """A session whose reads see its own writes (read-your-writes)."""
        return CausalSession(self)

    # -- health -------------------------------------------------------------------------

    async def refresh(self) -> Topology:
        """Observe every node now, open pools to nodes that came up, and let replicas
        skipped before this check began take reads again if they are healthy."""
        async with self._refreshing:
            began = time.monotonic()
            urls = {name: node.url for name, node in self._nodes.items()}
            topology = await observe_all(urls, timeout=self.check_timeout)
            for state in topology:
                node = self._nodes[state.name]
                node.state = state
                if state.reachable and node.db is None:
                    node.db = await self._open(node)
                if state.reachable and node.failed_at is not None and node.failed_at < began:
                    node.failed_at = None
            self.topology = topology
            return topology

    async def _open(self, node: _Node) -> sql.Database | None:
        db = sql.Database(
            node.url, name=node.name, max_size=self.max_size, timeout=self.read_timeout
        )
        try:
            return await db.open(timeout=self.check_timeout)
        except sql.SQLError:
            return None  # the next check tries again

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            with suppress(Exception):
                await self.refresh()

    def _soon_refresh(self) -> None:
        """A failure was seen: check at once rather than at the next period."""
        if self._checker is not None and not self._refreshing.locked():
            task = asyncio.get_running_loop().create_task(self._refresh_quietly())
            self._background.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._background.discard)

    async def _refresh_quietly(self) -> None:
        with suppress(Exception):
            await self.refresh()

    def _primary(self) -> _Node | None:
        primary = self.topology.primary if self.topology else None
        if primary is None or not primary.reachable:
            return None
        return self._nodes[primary.name]

    def _describe(self) -> str:
        if self.topology is None:
            return "not observed yet"
        return "; ".join(
            f"{n.name} {self.topology.role(n)}" + (f" ({n.error})" if n.error else "")
            for n in self.topology
        )


class CausalSession:
    """A client's view of the cluster that always sees its own writes: each write's GTID
    is remembered, and each read waits for it on a replica (or goes to the primary)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.last_gtid: str | None = None
        self._primary_only = False  # a write whose GTID is unknown: read the primary

    async def execute(self, sql_text: str, params: Params = ()) -> Written:
        written = await self.router.execute(sql_text, params)
        self._committed(written.gtid)
        return written

    @asynccontextmanager
    async def transaction(
        self, isolation: sql.Isolation | None = None
    ) -> AsyncIterator[sql.Session]:
        async with self.router._transaction(isolation, self._committed) as tx:
            yield tx

    async def fetch(self, sql_text: str, params: Params = ()) -> list[tuple[Any, ...]]:
        if self._primary_only:
            return await self.router.fetch_primary(sql_text, params)
        return await self.router.fetch(sql_text, params, after=self.last_gtid)

    async def fetchone(self, sql_text: str, params: Params = ()) -> tuple[Any, ...] | None:
        rows = await self.fetch(sql_text, params)
        return rows[0] if rows else None

    async def fetchval(self, sql_text: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql_text, params)
        return None if row is None else row[0]

    def _committed(self, gtid: str | None) -> None:
        if gtid is None:
            self._primary_only = True
        else:
            self.last_gtid, self._primary_only = gtid, False
