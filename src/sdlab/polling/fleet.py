"""One process's live view of the servers table: long-poll waiters, and the provisioner.

The database is the truth; the fleet keeps a mirror of it in memory, and the mirror only
ever changes by reading the database (`changes_since(version)`), never from what a
notification said. Three things prompt that read, all through one `poke()`:

- a change this process made (its own request, or its provisioner);
- an announcement on the channel from another process, or a (re)subscription to it;
- the sweep, every `sweep` seconds, for announcements that never came.

One reader task does the reads, so a burst of announcements costs one query, not one per
announcement or per waiter. Because versions are handed out in commit order (see
`store.py`), the mirror is always a consistent prefix of the table's history: it holds
every change up to `fleet.version` and nothing later.

A long poll asks "is there a version newer than `since`?". The check and the decision
to wait happen in one step of the event loop, and the mirror changes in one step too,
so a change cannot slip between them: a change that came before the poll is answered
at once, one after it wakes the poll. Waiters sleep on one event per server, replaced
at each change, so a change wakes exactly the waiters of that server, all at once.

A waiter that needs no task of its own (the service's plain long polls, answered inside
the HTTP protocol) is *parked* instead (`park`): the same check, and when the server
changes, `_apply` hands the change to every parked waiter of that server in one pass,
in the same step of the event loop as the mirror's change.

The provisioner moves creations along: every process runs one, sleeping until the next
transition the database has scheduled. When two are alive they race for each transition
and the store's guard lets one win; when one dies mid-creation, the other finishes it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from sdlab.latency import Latency
from sdlab.polling.channel import Channel, PostgresChannel, RedisChannel
from sdlab.polling.model import Delays, PollingError, Server, UnknownServer
from sdlab.polling.store import DEFAULT_TABLE, Store

logger = logging.getLogger("sdlab.polling")

_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0
CLOSING = "the server is shutting down; poll again"


class FleetClosed(PollingError):
    """The fleet is shutting down: a waiter is released without an answer (HTTP 503)."""


class NotMirrored(PollingError, LookupError):
    """`park` cannot answer from the mirror alone (an unknown server, a `since` beyond the
    mirror, or the fleet shutting down): `wait` can, with a query."""


class Waiter(Protocol):
    """A parked long poll: told of its server's next change, or of the fleet closing.
    Both are called from the fleet's own step of the event loop and must not block."""

    def wake(self, server: Server) -> None: ...

    def release(self) -> None: ...


class Fleet:
    """The servers of one table as this process sees them, and waits on them.

        fleet = Fleet(await Store.connect(url), RedisChannel(redis_url, "sdlab:polling"))
        async with fleet:
            server = await fleet.wait("server-1", since=0, timeout=30)

    Closing the fleet closes its store and its channel.
    """

    def __init__(
        self,
        store: Store,
        channel: Channel | None = None,
        *,
        delays: Delays | None = None,
        sweep: float | None = 1.0,
        provision: bool = True,
    ) -> None:
        """
        channel: announcements between processes; None for a single process.
        delays: how long a creation made through this fleet stays TO_DO and IN_PROGRESS.
        sweep: seconds between reads of the database that nothing prompted, which find
            changes whose announcement was lost (None: never).
        provision: run this process's provisioner (make the scheduled transitions).
        """
        if channel is not None and channel.notify_in_transaction:
            if store.dialect.engine != "postgresql":
                raise ValueError(f"{channel} needs the PostgreSQL store it announces from")
            store.notify_channel = channel.name
        if sweep is not None and sweep <= 0:
            raise ValueError(f"sweep must be positive seconds or None, got {sweep}")
        self.store = store
        self.channel = channel
        self.delays = delays or Delays()
        self.sweep = sweep
        self.provision = provision
        self.version = 0
        """Every change up to this version is in the mirror; none after it."""
        self._rows: dict[str, Server] = {}
        self._changed: dict[str, asyncio.Event] = {}  # per server, replaced at each change
        self._any_changed = asyncio.Event()  # replaced at each change of any server
        self._wanted = asyncio.Event()  # poke(): read the database
        self._reschedule = asyncio.Event()  # the schedule may have changed
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.started = False
        self.waiting = 0
        """Waiters now: those in `wait` and `wait_all`, and the parked ones."""
        self._parked: dict[str, dict[Waiter, None]] = {}  # by server; insertion-ordered
        self.reads = 0
        self.transitions = 0
        self.woken = Latency()
        """For each waiter answered because of a change: from the change (the database's
        timestamp) to the answer, on this host's clock."""

    @classmethod
    async def open(
        cls,
        db_url: str,
        *,
        channel: str = "auto",
        redis_url: str | None = None,
        table: str = DEFAULT_TABLE,
        delays: Delays | None = None,
        sweep: float | None = 1.0,
        provision: bool = True,
        pool_size: int = 4,
    ) -> Fleet:
        """A fleet (not started) on a `mysql://` or `postgresql://` URL. `channel`:
        "redis" (pub/sub at `redis_url`), "postgres" (LISTEN/NOTIFY in the same
        database), "none" (one process, or others found by the sweep only), or "auto":
        postgres for a PostgreSQL database, else redis."""
        store = await Store.connect(db_url, table, pool_size=pool_size)
        if channel == "auto":
            channel = "postgres" if store.dialect.engine == "postgresql" else "redis"
        announcer: Channel | None
        if channel == "redis":
            if not redis_url:
                await store.close()
                raise ValueError("a Redis channel needs redis_url")
            announcer = RedisChannel(redis_url, f"sdlab:polling:{store.database}:{table}")
        elif channel == "postgres":
            announcer = PostgresChannel(db_url, f"sdlab_polling_{table}")
        elif channel == "none":
            announcer = None
        else:
            await store.close()
            raise ValueError(f"channel should be auto, redis, postgres or none; got {channel!r}")
        try:
            return cls(store, announcer, delays=delays, sweep=sweep, provision=provision)
        except BaseException:
            await store.close()
            raise

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe (if there is a channel), then load the table, then run. In that
        order: a change committed before the load is in it, and any later one is
        announced to a subscription that already listens."""
        if self.started:
            raise RuntimeError("the fleet is already started")
        self.started = True
        if self.channel is not None:
            await self.channel.start(self.poke, self.poke)
        await self._read()
        self._tasks.append(asyncio.create_task(self._reader(), name="fleet reader"))
        if self.sweep is not None:
            self._tasks.append(asyncio.create_task(self._sweeper(), name="fleet sweep"))
        if self.provision:
            self._tasks.append(asyncio.create_task(self._provisioner(), name="provisioner"))

    def release_waiters(self) -> None:
        """Answer every waiter now with FleetClosed (a server shutting down)."""
        self._closing = True
        for event in [*self._changed.values(), self._any_changed]:
            event.set()
        parked, self._parked = self._parked, {}
        for waiters in parked.values():
            self.waiting -= len(waiters)
            for waiter in waiters:
                try:
                    waiter.release()
                except Exception:
                    logger.exception("a parked waiter could not be released")

    async def close(self) -> None:
        self.release_waiters()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.channel is not None:
            await self.channel.close()
        await self.store.close()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reading ------------------------------------------------------------------------

    def get(self, server_id: str) -> Server | None:
        """The server as the mirror has it (no I/O)."""
        return self._rows.get(server_id)

    def servers(self) -> list[Server]:
        """Every server as the mirror has it, by id."""
        return sorted(self._rows.values(), key=lambda s: s.server_id)

    async def wait(self, server_id: str, since: int, timeout: float) -> Server | None:
        """The server once its version is newer than `since`: at once if it already is,
        else when it changes; None if `timeout` seconds pass first. Raises
        UnknownServer, FleetClosed."""
        waited = False
        # Versions are table-wide: `since` may be newer than this server's own version
        # (the client took it from /servers or from another server) and still be one the
        # table has reached. Only a `since` beyond the table's newest version is from
        # another history of the table (dropped and made again).
        if server_id not in self._rows or since > self.version:
            # The mirror has not caught up with the client: ask the database.
            truth = await self.store.get(server_id)
            if truth is None:
                raise UnknownServer(server_id)
            self.poke(truth.version)
            if truth.version > since:
                return truth
            if since > self.version:
                newest = await self.store.newest()
                self.poke(newest)
                if newest < since:  # another history: resync the client
                    return truth
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                while True:
                    server = self._rows.get(server_id)
                    if server is not None and server.version > since:
                        if waited:
                            self._record_woken(server)
                        return server
                    if self._closing:
                        raise FleetClosed(CLOSING)
                    await self._changed.setdefault(server_id, asyncio.Event()).wait()
                    waited = True
        except TimeoutError:
            return None
        finally:
            self.waiting -= 1

    def park(self, server_id: str, since: int, waiter: Waiter) -> Server | None:
        """`wait` without a task: the server if its version is already newer than
        `since` (answer it now), else None, with `waiter` parked until the server's next
        change (`waiter.wake(server)`) or the fleet closing (`waiter.release()`). The
        caller times it out with `unpark`. Raises NotMirrored where `wait` would ask the
        database (or raise FleetClosed)."""
        server = self._rows.get(server_id)
        if server is None or since > self.version or self._closing:
            raise NotMirrored(server_id)
        if server.version > since:
            return server
        self._parked.setdefault(server_id, {})[waiter] = None
        self.waiting += 1
        return None

    def unpark(self, server_id: str, waiter: Waiter) -> bool:
        """Take a parked waiter back (its timeout, its client gone); False if it was not
        parked (already woken or released)."""
        parked = self._parked.get(server_id)
        if parked is None or waiter not in parked:
            return False
        del parked[waiter]
        self.waiting -= 1
        if not parked:
            del self._parked[server_id]
        return True

    async def wait_all(self, since: int, timeout: float) -> tuple[int, list[Server]] | None:
        """(version, the servers changed after `since`, oldest change first): at once if
        there are any, else at the next change; None if `timeout` seconds pass first."""
        if since > self.version:  # the mirror has not caught up with the client
            servers = await self.store.all()
            newest = max((s.version for s in servers), default=0)
            self.poke(newest)
            if newest < since:  # another history of the table: everything is new
                return newest, sorted(servers, key=lambda s: s.version)
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self.version > since:
                        changed = [s for s in self._rows.values() if s.version > since]
                        return self.version, sorted(changed, key=lambda s: s.version)
                    if self._closing:
                        raise FleetClosed(CLOSING)
                    await self._any_changed.wait()
        except TimeoutError:
            return None
        finally:
            self.waiting -= 1

    def _record_woken(self, server: Server) -> None:
        self.woken.record(time.time_ns() - _ns(server))

    async def status(self, server_id: str) -> Server:
        """The server as the database has it now (what a short poll reads)."""
        server = await self.store.get(server_id)
        if server is None:
            raise UnknownServer(server_id)
        return server

    # -- changing -------------------------------------------------------------------------

    # Each returns once the mirror holds the change: a poll on this process right after
    # sees it (read-your-writes), as a client that just got the new version expects.

    async def create(self, server_id: str) -> Server:
        """Start creating a server (TO_DO now; IN_PROGRESS and DONE by the fleet's
        delays). Raises UnknownServer, CreationInProgress, AlreadyCreated."""
        return await self._mirrored(self._announce(await self.store.create(server_id, self.delays)))

    async def terminate(self, server_id: str) -> Server:
        """DONE -> NOT_YET_CREATED. Raises UnknownServer, CreationInProgress."""
        return await self._mirrored(self._announce(await self.store.terminate(server_id)))

    async def add(self, server_ids: Sequence[str]) -> list[Server]:
        """Add servers that do not exist yet (NOT_YET_CREATED); return those added."""
        added = await self.store.add(server_ids)
        if added:
            await self._mirrored(self._announce(added[-1]))
        return added

    def _announce(self, server: Server) -> Server:
        self.poke(server.version)
        if self.channel is not None and not self.channel.notify_in_transaction:
            self.channel.publish(server.version)
        return server

    def _made(self, server: Server) -> None:
        """A transition this process's provisioner made: announced as soon as it commits."""
        self.transitions += 1
        self._announce(server)

    async def _mirrored(self, server: Server, timeout: float = 5.0) -> Server:
        """Wait (up to `timeout`: the database may be slow) until the mirror holds it."""
        try:
            async with asyncio.timeout(timeout):
                while self.version < server.version and not self._closing:
                    await self._any_changed.wait()
        except TimeoutError:
            logger.warning("version %d is not in the mirror after %g s", server.version, timeout)
        return server

    # -- keeping the mirror -----------------------------------------------------------------

    def poke(self, version: int | None = None) -> None:
        """Read the database soon: a change up to `version` (None: perhaps some change)
        has committed. Announcements of what the mirror already has are ignored."""
        if version is None or version > self.version:
            self._wanted.set()

    async def _reader(self) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self._read()
                backoff = _BACKOFF_FIRST
            except Exception as exc:  # the database is away: keep trying, never give up
                logger.warning("reading changes failed (%s); retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                self._wanted.set()

    async def _read(self) -> None:
        changes = await self.store.changes_since(self.version)
        self.reads += 1
        if changes:
            self._apply(changes)

    def _apply(self, changes: list[Server]) -> None:
        """Put changes (oldest first) in the mirror and wake their waiters: one step of
        the event loop, with no await, so no waiter can look in between. Parked waiters
        are answered here, in one pass."""
        parked = []
        for server in changes:
            self._rows[server.server_id] = server
            event = self._changed.pop(server.server_id, None)
            if event is not None:
                event.set()
            waiters = self._parked.pop(server.server_id, None)
            if waiters is not None:
                parked.append((server, waiters))
        self.version = max(self.version, changes[-1].version)
        woken, self._any_changed = self._any_changed, asyncio.Event()
        woken.set()
        self._reschedule.set()
        for server, waiters in parked:
            self._wake(server, waiters)

    def _wake(self, server: Server, waiters: dict[Waiter, None]) -> None:
        self.waiting -= len(waiters)
        changed = _ns(server)
        now = time.time_ns
        answered = []
        for waiter in waiters:
            try:
                waiter.wake(server)
            except Exception:  # one waiter's failure must not keep the others waiting
                logger.exception("a parked waiter could not take version %d", server.version)
            answered.append(now())
        # Recorded after the pass, at 0.1 ms resolution: a histogram's record is a few
        # microseconds of Python, as much as the answer's write.
        for ns, count in Counter((t - changed) // 100_000 for t in answered).items():
            self.woken.record(ns * 100_000, count)

    async def _sweeper(self) -> None:
        assert self.sweep is not None
        while True:
            await asyncio.sleep(self.sweep)
            self._wanted.set()

    # -- moving creations along -----------------------------------------------------------------

    async def _provisioner(self) -> None:
        """Sleep until the next scheduled transition (or until the schedule may have
        changed), then make the transitions that are due."""
        backoff = _BACKOFF_FIRST
        lost = 0  # due transitions in a row that another process made first
        while True:
            try:
                self._reschedule.clear()  # before asking: a change during the query re-sets it
                due_in = await self.store.seconds_until_due()
                if due_in is not None and due_in <= 0:
                    made = await self.store.advance_due(self._made)
                    lost = 0 if made else min(lost + 1, 11)  # 2 ms, 4 ms, ... 2 s
                    if lost:  # look again soon, but never spin
                        await asyncio.sleep(min(0.001 * 2**lost, _BACKOFF_MAX))
                    continue
                lost = 0
                # Sleep until the next transition is due or, with none scheduled, until
                # the mirror changes: a creation made elsewhere reaches the mirror
                # (announced, or found by the sweep), and every change of a schedule is
                # a change with a version.
                try:
                    async with asyncio.timeout(due_in):
                        await self._reschedule.wait()
                except TimeoutError:
                    pass
                backoff = _BACKOFF_FIRST
            except Exception as exc:
                logger.warning("provisioner: %s; retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    # -- what it is doing -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        channel = self.channel
        return {
            "pid": os.getpid(),
            "version": self.version,
            "servers": len(self._rows),
            "waiting": self.waiting,
            "parked": sum(len(waiters) for waiters in self._parked.values()),
            "reads": self.reads,
            "transitions": self.transitions,
            "channel": None if channel is None else str(channel),
            "subscribed": None if channel is None else channel.subscribed.is_set(),
            "announcements": None if channel is None else channel.received,
            "resyncs": None if channel is None else channel.resyncs,
            "woken": self.woken.summary(percentiles=(50, 99)),
        }


def _ns(server: Server) -> int:
    """The change's time, in Unix nanoseconds."""
    return int(server.changed_at.timestamp() * 1e9)
