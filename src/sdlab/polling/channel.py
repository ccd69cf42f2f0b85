"""How one process tells the others "a change up to version V has committed".

A notification is a hint to look at the database, never the data: a receiver that hears
version V reads every change newer than what it has from the database. So a message that
arrives twice, late or out of order costs at most one extra read, and a message that is
lost is found by the next read for any reason. Messages are lost, in two places:

- Between subscriptions. Redis pub/sub keeps nothing for a subscriber that is not
  connected, and PostgreSQL forgets a LISTEN when its session ends. Every (re)subscription
  therefore calls `on_resync`, which makes the process read the database, *after* the
  subscription is confirmed: a change committed before that read is in the read, and one
  committed after it is announced on a subscription that already listens. (Read first and
  subscribe second, and a change in between is missed until something else prompts a read.)
- Between commit and publish. A process that dies after its COMMIT and before its PUBLISH
  never announces the change. With PostgreSQL the NOTIFY is inside the transaction, so it
  goes out exactly when the change commits; with Redis the periodic sweep (`Fleet(sweep=)`)
  bounds how long such a change can go unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sdlab import sql
from sdlab.failure import describe, socket_error
from sdlab.polling.model import PollingError

logger = logging.getLogger("sdlab.polling")

OnChange = Callable[[int], None]
OnResync = Callable[[], None]

_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0


class ChannelUnavailable(PollingError):
    """The notification channel could not be subscribed to at start-up: the `service`
    (Redis, PostgreSQL) at `address` (host:port), and the `reason`."""

    def __init__(self, message: str, *, service: str, address: str, reason: str) -> None:
        super().__init__(message)
        self.service, self.address, self.reason = service, address, reason


class Channel(ABC):
    """A process's subscription to the announcements of one table's changes."""

    name: str
    service: str  # the server's title, for errors
    notify_in_transaction = False
    """True if the store sends the announcement inside the change's transaction
    (PostgreSQL NOTIFY) rather than the fleet after the commit."""

    def __init__(self) -> None:
        self.subscribed = asyncio.Event()
        self.resyncs = 0
        self.received = 0
        self._task: asyncio.Task[None] | None = None
        self._on_change: OnChange = lambda version: None
        self._on_resync: OnResync = lambda: None

    async def start(self, on_change: OnChange, on_resync: OnResync, timeout: float = 10.0) -> None:
        """Subscribe, and return once the subscription is confirmed; from then on call
        `on_change(version)` for each announcement and `on_resync()` after every
        (re)subscription. Reconnects by itself, with backoff, for as long as it runs.
        Raises ChannelUnavailable if the first subscription fails."""
        self._on_change, self._on_resync = on_change, on_resync
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(first), name=f"listen:{self.name}")
        try:
            await asyncio.wait_for(asyncio.shield(first), timeout)
        except Exception as exc:
            await self.close()
            reason = _reason(exc)
            raise ChannelUnavailable(
                f"cannot subscribe to {self}: {reason}",
                service=self.service,
                address=self.address,
                reason=reason,
            ) from None

    @property
    @abstractmethod
    def address(self) -> str:
        """host:port of the server the channel runs through."""

    @abstractmethod
    def publish(self, version: int) -> None:
        """Announce that changes up to `version` have committed (without waiting)."""

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.subscribed.clear()

    async def _run(self, first: asyncio.Future[None]) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            try:
                async with self._subscription() as messages:
                    self.subscribed.set()
                    self.resyncs += 1
                    if not first.done():
                        first.set_result(None)
                    self._on_resync()
                    backoff = _BACKOFF_FIRST
                    async for payload in messages:
                        self.received += 1
                        try:
                            version = int(payload)
                        except ValueError:
                            logger.warning("%s: ignoring announcement %r", self, payload)
                            continue
                        self._on_change(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not first.done():
                    first.set_exception(exc)
                    return
                logger.warning("%s: subscription lost (%s); retrying in %.2f s", self, exc, backoff)
            finally:
                self.subscribed.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    @abstractmethod
    def _subscription(self) -> Any:
        """An async context manager: subscribe (confirmed on entry); yields an async
        iterator of payloads that raises when the subscription is lost."""


def _reason(exc: BaseException) -> str:
    """Why the first subscription failed, in one line: the socket's error if any."""
    return describe(socket_error(exc) or exc)


class RedisChannel(Channel):
    """Redis pub/sub: PUBLISH after the commit, one SUBSCRIBE per process."""

    service = "Redis"

    def __init__(self, url: str, name: str) -> None:
        super().__init__()
        self.url, self.name = url, name
        # No retries inside redis-py: a reconnect must go through _run, which resyncs.
        # (redis-py would otherwise resubscribe silently, with the gap unnoticed.)
        self._listener = aioredis.from_url(url, retry=Retry(NoBackoff(), 0), socket_keepalive=True)
        self._publisher = aioredis.from_url(
            url, retry=Retry(NoBackoff(), 0), socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._publishing: set[asyncio.Task[None]] = set()
        self.publish_failures = 0

    def __str__(self) -> str:
        return f"Redis channel {self.name!r} at {self.url}"

    @property
    def address(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"

    def publish(self, version: int) -> None:
        task = asyncio.create_task(self._publish(version))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, version: int) -> None:
        try:
            await self._publisher.publish(self.name, str(version))
        except (RedisError, OSError) as exc:
            # The change is committed; the others find it on their next resync or sweep.
            self.publish_failures += 1
            logger.warning("%s: could not announce version %d (%s)", self, version, exc)

    async def close(self) -> None:
        await super().close()
        await asyncio.gather(*self._publishing, return_exceptions=True)
        await self._listener.aclose()
        await self._publisher.aclose()

    def _subscription(self) -> Any:
        return _RedisSubscription(self._listener, self.name)


class _RedisSubscription:
    def __init__(self, client: aioredis.Redis, name: str) -> None:
        self.pubsub = client.pubsub()
        self.name = name

    async def __aenter__(self) -> Any:
        await self.pubsub.subscribe(self.name)
        while True:  # the confirmation, so that the caller's resync comes after it
            message = await self.pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "subscribe":
                return self._payloads()

    async def _payloads(self) -> Any:
        while True:
            message = await self.pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "message":
                yield message["data"].decode()

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.aclose()


class PostgresChannel(Channel):
    """PostgreSQL LISTEN/NOTIFY. The store sends NOTIFY inside each change's transaction,
    so an announcement goes out if and only if its change commits. The channel is per
    database: the fleet's store must be the PostgreSQL database at `url`."""

    notify_in_transaction = True
    service = "PostgreSQL"

    def __init__(self, url: str, name: str) -> None:
        super().__init__()
        self.url, self.name = url, sql.identifier(name)

    @property
    def address(self) -> str:
        return sql.address_of(self.url)

    def __str__(self) -> str:
        where = f"{sql.address_of(self.url)}/{sql.database_of(self.url)}"
        return f"PostgreSQL channel {self.name!r} at {where}"

    def publish(self, version: int) -> None:
        """Nothing to do: the store's transaction sent NOTIFY with the change."""

    def _subscription(self) -> Any:
        return _PostgresSubscription(self.url, self.name)


class _PostgresSubscription:
    """A psycopg connection of its own that LISTENs (sdlab.sql has no notifications)."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> Any:
        # TCP keepalives: a listener whose server vanished without a FIN learns it in
        # about 10 s instead of hours.
        self.conn = await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
        await self.conn.execute(f"LISTEN {sql.POSTGRESQL.quote(self.name)}")
        return self._payloads(self.conn)

    async def _payloads(self, conn: psycopg.AsyncConnection[Any]) -> Any:
        async for notify in conn.notifies():
            yield notify.payload
        raise psycopg.OperationalError("the LISTEN connection ended")

    async def __aexit__(self, *exc_info: object) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self.conn.close()
