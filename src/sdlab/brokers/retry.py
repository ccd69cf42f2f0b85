"""Dead lettering: bounded retries with backoff for messages that keep failing.

    jobs = RetryQueue(rabbit, "thumbnails", delays=(1, 10, 60))
    await jobs.send("photo 42")
    async with jobs.consume() as attempts:
        async for job in attempts:
            try:
                ...
            except Exception as exc:
                await job.fail(exc)      # back in 1 s, 10 s, 60 s; then parked
            else:
                await job.ack()

The waiting is done by the broker, not by sleeping consumers. All queues are durable
quorum queues on the default exchange:

    NAME            the work. Its dead-letter target is NAME.dead, used by the broker for
                    a message whose consumers keep dying on it without an ack or a
                    fail(): its `delivery_limit`-th delivery is its last, after which
                    it is parked instead of crashing consumers for ever. (RabbitMQ's
                    x-delivery-limit counts returns, not deliveries: it is set one
                    less.)
    NAME.retry.K    one queue per delay, with that delay as its message TTL; an expired
                    message is dead-lettered by the broker back to NAME. One queue per
                    delay because a queue expires messages from its head only: in one
                    queue with mixed delays a short one would wait behind a long one.
    NAME.dead       the parking lot: messages that failed every attempt, with the last
                    error in their `x-error` header (or the broker's `x-death` record),
                    for a person to inspect and `requeue_dead()`.

Dead-lettering between quorum queues is at-least-once (x-dead-letter-strategy), so a
broker crash in the middle duplicates rather than loses. `fail()` publishes the copy
(confirmed) before it acks the original, so a consumer dying in between leaves two
copies, never none: handlers must tolerate a repeat, as with any at-least-once queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from sdlab.brokers.errors import Unroutable
from sdlab.brokers.rabbit import Arguments, Body, Rabbit, text

RETRIES_HEADER = "x-retries"
ERROR_HEADER = "x-error"
BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
AT_LEAST_ONCE: Arguments = {
    "x-queue-type": "quorum",
    "x-dead-letter-exchange": "",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",  # at-least-once dead-lettering requires it
}


@dataclass
class Job:
    """One delivery of a message from a `RetryQueue`: ack it, or fail it."""

    message: AbstractIncomingMessage
    queue: RetryQueue

    @property
    def text(self) -> str:
        return text(self.message)

    @property
    def retries(self) -> int:
        """How many times it failed before (0 on the first attempt)."""
        return int((self.message.headers or {}).get(RETRIES_HEADER, 0))  # type: ignore[arg-type]  # ours: an int

    async def ack(self) -> None:
        await self.message.ack()

    async def fail(self, error: BaseException | str) -> str:
        """Send the message to the next retry queue, or to the parking lot when no retry
        is left; returns the queue it went to."""
        retries, delays = self.retries, self.queue.delays
        target = self.queue.retry_queue(retries + 1) if retries < len(delays) else self.queue.dead
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        copy = _copy(
            self.message,
            {
                RETRIES_HEADER: retries + 1 if target != self.queue.dead else retries,
                ERROR_HEADER: reason[:1000],
            },
        )
        if not await self.queue.rabbit.publish_message("", target, copy):
            raise Unroutable(f"queue {target!r} is gone: the message stays where it was")
        await self.message.ack()
        return target


class RetryQueue:
    """A work queue with retries after `delays` (seconds) and a dead-letter queue.
    `delivery_limit` is how many times, at most, the broker delivers a message whose
    consumers die holding it (see the module's docstring)."""

    def __init__(
        self,
        rabbit: Rabbit,
        name: str,
        *,
        delays: Sequence[float] = (1.0, 10.0, 60.0),
        delivery_limit: int = 5,
    ) -> None:
        if any(delay <= 0 for delay in delays):
            raise ValueError("retry delays must be positive")
        if delivery_limit < 1:
            raise ValueError(
                f"delivery_limit {delivery_limit}: a message is delivered once at least"
            )
        self.rabbit = rabbit
        self.name = name
        self.delays = tuple(delays)
        self.delivery_limit = delivery_limit
        self.dead = f"{name}.dead"
        self._declared = False

    def retry_queue(self, retry: int) -> str:
        return f"{self.name}.retry.{retry}"

    def queues(self) -> list[str]:
        """Every queue this one is made of."""
        tiers = [self.retry_queue(k) for k in range(1, len(self.delays) + 1)]
        return [self.name, *tiers, self.dead]

    async def declare(self) -> None:
        if self._declared:
            return
        await self.rabbit.declare_queue(self.dead, arguments={"x-queue-type": "quorum"})
        for k, delay in enumerate(self.delays, 1):
            await self.rabbit.declare_queue(
                self.retry_queue(k),
                arguments={
                    **AT_LEAST_ONCE,
                    "x-message-ttl": round(delay * 1000),
                    "x-dead-letter-routing-key": self.name,
                },
            )
        await self.rabbit.declare_queue(
            self.name,
            arguments={
                **AT_LEAST_ONCE,
                # RabbitMQ dead-letters a message returned more than x-delivery-limit
                # times: with N-1, its N-th delivery is the last.
                "x-delivery-limit": self.delivery_limit - 1,
                "x-dead-letter-routing-key": self.dead,
            },
        )
        self._declared = True

    async def send(self, body: Body, **properties: object) -> None:
        """Put a persistent message on the queue; returns once the broker confirmed it."""
        await self.declare()
        if not await self.rabbit.publish("", self.name, body, persistent=True, **properties):
            raise Unroutable(f"queue {self.name!r} is gone (deleted since it was declared)")

    @asynccontextmanager
    async def consume(self, *, prefetch: int = 1) -> AsyncIterator[AsyncIterator[Job]]:
        """The queue's messages as `Job`s; each must be acked or failed."""
        await self.declare()
        async with self.rabbit.consume(self.name, prefetch=prefetch) as messages:

            async def jobs() -> AsyncIterator[Job]:
                async for message in messages:
                    yield Job(message, self)

            yield jobs()

    async def requeue_dead(self) -> int:
        """Move every parked message back to the work queue with its retries reset (after
        the cause was fixed); returns how many moved."""
        await self.declare()
        moved = 0
        channel = await self.rabbit.connection.channel(publisher_confirms=False)
        try:
            dead = await channel.get_queue(self.dead, ensure=False)
            while (message := await dead.get(fail=False)) is not None:
                copy = _copy(message, {RETRIES_HEADER: 0})
                if not await self.rabbit.publish_message("", self.name, copy):
                    raise Unroutable(f"queue {self.name!r} is gone")
                await message.ack()
                moved += 1
        finally:
            await channel.close()
        return moved

    async def delete(self) -> None:
        """Delete every queue this one is made of, with their messages."""
        for queue in self.queues():
            await self.rabbit.delete_queue(queue)
        self._declared = False


def _copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of `message` to publish anew, with its properties: its own
    headers (not the broker's dead-letter records) updated with `headers`. Not its
    `expiration` (a per-message TTL would run out in a retry queue) nor its `user_id`
    (the broker refuses one that is not the publishing connection's user)."""
    kept: dict[str, Any] = {
        k: v for k, v in (message.headers or {}).items() if k not in BROKER_HEADERS
    }
    return aio_pika.Message(
        message.body,
        headers={**kept, **headers},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
