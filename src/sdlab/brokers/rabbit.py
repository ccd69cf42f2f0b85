"""RabbitMQ on aio-pika: a connection with publisher confirms, named queues, exchanges.

    async with await Rabbit.connect(url) as rabbit:
        tasks = Queue(rabbit, "task_queue", persistent=True)
        await tasks.send("resize photo 42")          # returns once the broker confirmed it
        async with tasks.consume(prefetch=1) as messages:
            async for message in messages:
                ...
                await message.ack()

Names, flags and properties follow the official RabbitMQ tutorials, so that their
programs, in any language, work with ours in both directions: `hello` and `task_queue`
are durable quorum queues on the default exchange, `logs`, `direct_logs` and
`topic_logs` are non-durable exchanges that subscribers bind server-named exclusive
queues to, and bodies are UTF-8 text.

Every publish waits for the broker's confirm and is mandatory: a message the broker
refused raises `NotConfirmed`, and one no queue took is reported (`Unroutable`, or
False from `Exchange.publish`), never silently lost.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Self
from urllib.parse import urlsplit

import aio_pika
import aiormq.abc
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    ExchangeType,
)
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import (
    AMQPConnectionError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
)

from sdlab.brokers.errors import (
    BrokerUnavailable,
    ConsumerStopped,
    InvalidName,
    InvalidUrl,
    NotConfirmed,
    TopologyMismatch,
    Unroutable,
)
from sdlab.failure import describe, socket_error

Body = str | bytes
Arguments = Mapping[str, Any]
Deliveries = AsyncIterator[AbstractIncomingMessage]

QUORUM: Arguments = {"x-queue-type": "quorum"}
"""The tutorials' named queues (`hello`, `task_queue`, `rpc_queue`) are durable quorum
queues; a declaration with other arguments is refused by the broker."""


SHORT_STRING = 255
"""The most bytes (UTF-8) of an AMQP name: a queue, an exchange, a routing key."""


def check_url(url: str) -> str:
    """`url` if it can name a RabbitMQ broker (amqp:// or amqps://, a numeric port if
    any; no host is localhost), else `InvalidUrl`: aio-pika takes `http://...` for AMQP
    and raises bare ValueErrors from deep inside for the rest. (The URL is not quoted
    back: it may hold a password.)"""
    parts = urlsplit(url)
    form = "amqp://user:password@host:port/vhost"
    if parts.scheme not in ("amqp", "amqps"):
        raise InvalidUrl(f"not a RabbitMQ URL (scheme {parts.scheme!r}): {form}")
    try:
        parts.port  # noqa: B018  (parses it)
    except ValueError:
        port = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise InvalidUrl(f"port {port!r} is not a number from 0 to 65535: {form}") from None
    return url


def _cause(exc: BaseException) -> str:
    """The socket's error under aiormq's (which quotes it as a tuple), in one line."""
    found = socket_error(exc)
    if found is not None:
        return describe(found)
    if isinstance(exc, AMQPConnectionError) and exc.args and isinstance(exc.args[0], int):
        return describe(OSError(exc.args[0], os.strerror(exc.args[0])))
    return describe(exc)


def check_name(kind: str, name: str) -> str:
    """`name` if the broker can take it as a `kind` (queue, exchange, routing key), else
    `InvalidName`; aio-pika raises a bare ValueError as it encodes the frame."""
    if len(name.encode()) > SHORT_STRING:
        raise InvalidName(
            f"{kind} {name[:40]!r}... is {len(name.encode())} bytes: AMQP allows {SHORT_STRING}"
        )
    return name


def encode(body: Body) -> bytes:
    """Text goes over the wire as UTF-8, as in the tutorials; bytes as they are."""
    return body.encode() if isinstance(body, str) else body


class Rabbit:
    """One AMQP connection: a channel with publisher confirms for every publish, and a
    channel of its own for each consumer (prefetch is a per-channel setting).

    The connection is a plain one, not aio-pika's robust kind: when it drops, consumers'
    loops raise `ConsumerStopped` and publishes raise. Nothing is lost by that (unacked
    messages go back to their queues), and the caller decides whether to reconnect.
    """

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        self.connection = connection
        self._channel = channel
        self._exchanges: dict[str, AbstractExchange] = {"": channel.default_exchange}
        self._reopening = asyncio.Lock()
        self._unconfirmed: dict[str, asyncio.Event] = {}  # by message_id: see _alone()

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> Self:
        """Connect to the broker at `url` (`amqp://user:password@host:port/vhost`)."""
        try:
            connection = await aio_pika.connect(check_url(url), **kwargs)
        except (AMQPConnectionError, OSError) as exc:
            parts = urlsplit(url)
            address = f"{parts.hostname or 'localhost'}:{parts.port or 5672}"
            raise BrokerUnavailable("RabbitMQ", address, _cause(exc)) from exc
        try:
            channel = await connection.channel(publisher_confirms=True)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, channel)

    async def close(self) -> None:
        await self.connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: Body,
        *,
        persistent: bool = False,
        **properties: Any,
    ) -> bool:
        """Publish and wait for the broker's confirm. Returns True if a queue took the
        message, False if none was bound to take it (the broker returned it). Raises
        `NotConfirmed` if the broker refused it. `properties` are AMQP message
        properties: `headers`, `correlation_id`, `reply_to`, `expiration`, ..."""
        mode = aio_pika.DeliveryMode.PERSISTENT if persistent else None
        message = aio_pika.Message(encode(body), delivery_mode=mode, **properties)
        return await self.publish_message(exchange, routing_key, message)

    async def publish_message(
        self, exchange: str, routing_key: str, message: aio_pika.Message
    ) -> bool:
        """`publish()` for a message already built (to forward one with its properties)."""
        check_name("exchange", exchange)
        check_name("routing key", routing_key)
        channel = await self._publishing()
        target = self._exchanges.get(exchange)
        if target is None:
            # Publishing needs only the name; the exchange was declared by whoever
            # owns it (declaring again here could fail on a mismatch and close the
            # channel every publish shares).
            target = self._exchanges[exchange] = aio_pika.Exchange(channel, exchange)
        try:
            async with self._alone(message.message_id):
                result = await target.publish(message, routing_key, mandatory=True)
        except DeliveryError as exc:
            raise NotConfirmed(
                f"the broker refused a message for exchange {exchange!r}, routing key "
                f"{routing_key!r} (basic.nack): a full queue with x-overflow=reject-publish?"
            ) from exc
        except ChannelNotFoundEntity as exc:
            # The broker closed the channel (the next publish opens another); a publish
            # that was waiting for its confirm on it meanwhile fails the same way.
            reason = exc.args[0] if exc.args else exc
            raise Unroutable(f"{reason}: the message was not confirmed") from None
        return not isinstance(result, DeliveredMessage)  # a basic.return came back

    @asynccontextmanager
    async def _alone(self, message_id: str | None) -> AsyncIterator[None]:
        """Wait until no other publish with `message_id` is unconfirmed: aiormq finds the
        publish a returned message belongs to by its message_id, so two at once would
        swap outcomes. (Without one, aiormq gives each message a random one.)"""
        if message_id is None:
            yield
            return
        while (earlier := self._unconfirmed.get(message_id)) is not None:
            await earlier.wait()
        self._unconfirmed[message_id] = done = asyncio.Event()
        try:
            yield
        finally:
            del self._unconfirmed[message_id]
            done.set()

    async def _publishing(self) -> AbstractChannel:
        """The confirm channel every publish shares, opened again if the broker closed it:
        it does so after a publish to an exchange that does not exist (404)."""
        if self._channel.is_closed and not self.connection.is_closed:
            async with self._reopening:
                if self._channel.is_closed:
                    self._channel = await self.connection.channel(publisher_confirms=True)
                    self._exchanges = {"": self._channel.default_exchange}
        return self._channel

    async def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        arguments: Arguments | None = None,
    ) -> str:
        """Declare a queue and return its name (the broker's, when `name` is "").

        A queue that exists with other settings raises `TopologyMismatch`. The
        declaration goes on a channel of its own: the broker closes the channel that
        asked on a mismatch, and it must not be the channel publishes share."""
        check_name("queue", name)
        async with self._declaring() as channel:
            queue = await channel.declare_queue(
                name, durable=durable, exclusive=exclusive, arguments=dict(arguments or {})
            )
            return queue.name

    async def declare_exchange(
        self, name: str, type: ExchangeType | str, *, durable: bool = False
    ) -> None:
        """Declare an exchange; one that exists with other settings raises
        `TopologyMismatch`."""
        check_name("exchange", name)
        async with self._declaring() as channel:
            await channel.declare_exchange(name, type, durable=durable)

    async def bind(self, queue: str, exchange: str, routing_key: str = "") -> None:
        check_name("queue", queue)
        check_name("exchange", exchange)
        check_name("binding key", routing_key)
        async with self._declaring() as channel:
            target = await channel.get_queue(queue, ensure=False)
            await target.bind(exchange, routing_key)

    async def delete_queue(self, name: str) -> None:
        async with self._declaring() as channel:
            await channel.queue_delete(name)

    async def delete_exchange(self, name: str) -> None:
        async with self._declaring() as channel:
            await channel.exchange_delete(name)

    @asynccontextmanager
    async def _declaring(self) -> AsyncIterator[AbstractChannel]:
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            yield channel
        except ChannelPreconditionFailed as exc:
            raise TopologyMismatch(str(exc.args[0] if exc.args else exc)) from None
        finally:
            if not channel.is_closed:
                await channel.close()

    @asynccontextmanager
    async def consume(
        self, queue: str, *, prefetch: int = 1, no_ack: bool = False
    ) -> AsyncIterator[Deliveries]:
        """Consume `queue` on a channel of its own with `prefetch` unacknowledged messages
        at most. With `no_ack=False` (the default) each message must be acked; when the
        block ends, or the process dies, the broker gives unacked ones to another
        consumer, marked `redelivered`. The messages never end by themselves: if the
        connection drops or the broker cancels the consumer, the loop raises
        `ConsumerStopped`."""
        check_name("queue", queue)
        channel = await self.connection.channel(publisher_confirms=False)
        closing: set[asyncio.Future[None]] = set()

        def cancelled_by_broker(frame: object) -> None:
            # aio-pika's iterator would wait for ever; closing the channel ends it. Not
            # awaited here: this runs in the channel's reader, which the close needs.
            closing.add(asyncio.ensure_future(channel.close()))

        try:
            await channel.set_qos(prefetch_count=prefetch)
            underlay = await channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(cancelled_by_broker)
            source = await channel.get_queue(queue, ensure=False)
            async with source.iterator(no_ack=no_ack) as messages:
                yield self._until_stopped(messages, queue, underlay, closing)
        finally:
            await asyncio.gather(*closing, return_exceptions=True)
            if not channel.is_closed:
                await channel.close()

    async def _until_stopped(
        self,
        messages: Deliveries,
        queue: str,
        channel: aiormq.abc.AbstractChannel,
        cancelled: set[asyncio.Future[None]],
    ) -> Deliveries:
        """`messages`, then `ConsumerStopped`: aio-pika's iterator simply ends when its
        channel closes, which a consumer must not take for the end of the queue."""
        async for message in messages:
            yield message
        closed = channel.closing
        reason = closed.exception() if closed.done() and not closed.cancelled() else None
        if isinstance(reason, AMQPConnectionError) or self.connection.is_closed:
            raise ConsumerStopped(
                f"the connection to the broker was lost while consuming {queue!r} "
                "(unacked messages go back to the queue)"
            ) from reason
        if cancelled:
            raise ConsumerStopped(f"the broker cancelled the consumer of {queue!r}: deleted?")
        raise ConsumerStopped(f"the channel consuming {queue!r} was closed: {reason}") from reason


class Queue:
    """A named, durable queue on the default exchange, where the routing key is the
    queue's name: the tutorials' `hello` (one producer, one consumer) and `task_queue`
    (work queues: competing consumers, persistent messages, manual acks, and prefetch 1
    so that a busy worker is given nothing more until it acks: fair dispatch)."""

    def __init__(
        self,
        rabbit: Rabbit,
        name: str,
        *,
        persistent: bool = False,
        arguments: Arguments = QUORUM,
    ) -> None:
        self.rabbit = rabbit
        self.name = name
        self.persistent = persistent
        self.arguments = arguments
        self._declared = False

    async def declare(self) -> None:
        """Declare the queue (once per object): both sides do, as in the tutorials, so
        either may start first."""
        if not self._declared:
            await self.rabbit.declare_queue(self.name, durable=True, arguments=self.arguments)
            self._declared = True

    async def send(self, body: Body, **properties: Any) -> None:
        """Put a message on the queue; returns once the broker confirmed it."""
        await self.declare()
        routed = await self.rabbit.publish(
            "", self.name, body, persistent=self.persistent, **properties
        )
        if not routed:
            raise Unroutable(f"queue {self.name!r} is gone (deleted since it was declared)")

    @asynccontextmanager
    async def consume(
        self, *, prefetch: int = 1, no_ack: bool = False
    ) -> AsyncIterator[Deliveries]:
        """The queue's messages, `prefetch` unacked at most; ack each one when done."""
        await self.declare()
        async with self.rabbit.consume(self.name, prefetch=prefetch, no_ack=no_ack) as messages:
            yield messages


class Exchange:
    """An exchange that subscribers bind their own queues to.

    - `fanout` (the tutorials' `logs`): every subscriber gets every message;
    - `direct` (`direct_logs`): a subscriber gets the messages whose routing key is one
      of its binding keys;
    - `topic` (`topic_logs`): routing keys are words between dots; in a binding key `*`
      stands for exactly one word and `#` for zero or more.

    Each subscription is a server-named, exclusive queue: it lives as long as the
    subscriber's connection, and receives only what is published while it exists.
    """

    def __init__(
        self, rabbit: Rabbit, name: str, type: ExchangeType | str, *, durable: bool = False
    ) -> None:
        self.rabbit = rabbit
        self.name = name
        self.type = ExchangeType(type)
        self.durable = durable
        self._declared = False

    async def declare(self) -> None:
        if not self._declared:
            await self.rabbit.declare_exchange(self.name, self.type, durable=self.durable)
            self._declared = True

    async def publish(self, body: Body, *, key: str = "", **properties: Any) -> bool:
        """Publish with routing key `key` (ignored by a fanout exchange); returns once
        the broker confirmed it: True if at least one subscriber's queue took it, False
        if nobody was subscribed to it (the message is dropped: pub/sub semantics).
        Raises `Unroutable` if the exchange was deleted since it was declared."""
        await self.declare()
        return await self.rabbit.publish(self.name, key, body, **properties)

    @asynccontextmanager
    async def subscribe(
        self, *binding_keys: str, prefetch: int = 100, no_ack: bool = False
    ) -> AsyncIterator[Deliveries]:
        """A new exclusive queue bound with each of `binding_keys` (a fanout exchange
        needs none); its messages until the block ends, when the queue is deleted."""
        if self.type is not ExchangeType.FANOUT and not binding_keys:
            raise ValueError(f"a {self.type.value} subscription needs at least one binding key")
        await self.declare()
        queue = await self.rabbit.declare_queue(durable=False, exclusive=True)
        stopped = False  # then the queue went with the connection, or was deleted
        try:
            for key in binding_keys or ("",):
                await self.rabbit.bind(queue, self.name, key)
            async with self.rabbit.consume(queue, prefetch=prefetch, no_ack=no_ack) as messages:
                yield messages
        except ConsumerStopped:
            stopped = True
            raise
        finally:
            if not stopped and not self.rabbit.connection.is_closed:
                await self.rabbit.delete_queue(queue)


def text(message: AbstractIncomingMessage) -> str:
    """A message's body as text (the tutorials' convention: UTF-8)."""
    return message.body.decode()
