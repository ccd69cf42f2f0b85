"""Request/reply over RabbitMQ, the tutorials' way: `rpc_queue`, `reply_to`, `correlation_id`.

    from sdlab.brokers.tutorials import fib_text      # "30" -> "832040"

    async with RpcServer(rabbit, fib_text):           # answers in the background
        async with RpcClient(rabbit) as client:
            print(await client.call("30", timeout=5))   # 832040

The client declares one exclusive, server-named reply queue and sends each request with
`reply_to` set to it and a fresh `correlation_id`; the server publishes its answer to
`reply_to` with the same `correlation_id`, then acks the request. Concurrent calls share
the reply queue and find their own answers by correlation id.

A call that times out raises `RpcTimeout`. Its request carries the same timeout as its
`expiration`, so a request no server picked up in time is dropped by the broker rather
than answered late; an answer that still comes late (the server was working on it when
the time ran out) is discarded by correlation id, never handed to another call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import Awaitable, Callable
from typing import Self

from aio_pika.abc import AbstractIncomingMessage

from sdlab.brokers.errors import (
    BrokerError,
    ConsumerStopped,
    RemoteError,
    RpcTimeout,
    Unroutable,
)
from sdlab.brokers.rabbit import QUORUM, Body, Rabbit, text

RPC_QUEUE = "rpc_queue"
ERROR_HEADER = "x-error"
"""A reply to a request whose handler failed carries the error here, as text, and an
empty body: the body is only ever an answer (the tutorial's client reads it as the
number; an empty body is no number, whatever the client's language)."""

Handler = Callable[[str], Awaitable[Body] | Body]


class RpcClient:
    """Calls a server that consumes `queue`; `timeout` is each call's default limit."""

    def __init__(self, rabbit: Rabbit, queue: str = RPC_QUEUE, *, timeout: float = 5.0) -> None:
        self.rabbit = rabbit
        self.queue = queue
        self.timeout = timeout
        self.late_replies = 0
        """Replies that came after their call had timed out (and were dropped)."""
        self._waiting: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        self._reply_queue = ""
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._reply_queue = await self.rabbit.declare_queue(durable=False, exclusive=True)
        self._listener = asyncio.create_task(self._listen(), name=f"rpc replies {self.queue}")
        await self._ready.wait()
        if self._listener.done():  # it failed before consuming
            await self._listener

    async def close(self) -> None:
        gone = False  # the reply queue, with the connection or deleted
        if self._listener is not None:
            try:
                await _stop(self._listener)
            except ConsumerStopped:  # the calls raised it already
                gone = True
            self._listener = None
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(BrokerError("the RPC client was closed before the reply"))
        if self._reply_queue and not gone and not self.rabbit.connection.is_closed:
            # Gone at once, not when the connection closes: an answer still on its way
            # finds no queue and is dropped by the broker (the server counts it orphaned).
            await self.rabbit.delete_queue(self._reply_queue)
        self._reply_queue = ""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def call(self, body: Body, *, timeout: float | None = None) -> str:
        """Send `body` to the server and return its answer as text.

        Raises `RpcTimeout` after `timeout` seconds (default: the client's), `RemoteError`
        if the server's handler failed, `Unroutable` if `queue` does not exist (no server
        ever declared it)."""
        if self._listener is None:
            raise RuntimeError("start the client first (async with RpcClient(...))")
        if self._listener.done():
            await self._listener  # it stopped: raises why
        limit = self.timeout if timeout is None else timeout
        correlation_id = uuid.uuid4().hex
        answer = self._waiting[correlation_id] = asyncio.get_running_loop().create_future()
        try:
            routed = await self.rabbit.publish(
                "",
                self.queue,
                body,
                reply_to=self._reply_queue,
                correlation_id=correlation_id,
                expiration=limit,
            )
            if not routed:
                raise Unroutable(f"no queue {self.queue!r}: is an RPC server running?")
            try:
                reply = await asyncio.wait_for(answer, limit)
            except TimeoutError:
                raise RpcTimeout(
                    f"no reply on {self.queue!r} within {limit:g} s: no server, or too slow"
                ) from None
        finally:
            del self._waiting[correlation_id]
        if (error := reply.headers.get(ERROR_HEADER)) is not None:
            raise RemoteError(error.decode() if isinstance(error, bytes) else str(error))
        return text(reply)

    async def _listen(self) -> None:
        try:
            async with self.rabbit.consume(self._reply_queue, no_ack=True) as replies:
                self._ready.set()
                async for reply in replies:
                    waiter = self._waiting.get(reply.correlation_id or "")
                    if waiter is None or waiter.done():
                        self.late_replies += 1
                    else:
                        waiter.set_result(reply)
        except ConsumerStopped as exc:
            # No reply can come any more: the calls waiting for one fail now, with
            # the cause, rather than time out blaming the server.
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(exc)
            raise
        finally:
            self._ready.set()


class RpcServer:
    """Answers requests on `queue` with `handler(text) -> answer` (a plain or async
    function; the answer is str, sent as UTF-8, or bytes). `prefetch` requests are handled
    at once (the tutorial's 1 by default); a handler that raises, or returns anything
    but str or bytes, is answered with the error in the `x-error` header and an empty
    body (the client raises `RemoteError`), and the server goes on."""

    def __init__(
        self, rabbit: Rabbit, handler: Handler, queue: str = RPC_QUEUE, *, prefetch: int = 1
    ) -> None:
        self.rabbit = rabbit
        self.handler = handler
        self.queue = queue
        self.prefetch = prefetch
        self.answered = 0
        self.orphaned = 0
        """Answers nobody was waiting for: the client's reply queue was gone."""
        self._task: asyncio.Task[None] | None = None

    async def declare(self) -> None:
        """Declare the request queue (serving does it too): requests sent from then on
        wait in it for a server, rather than raise `Unroutable` at the client."""
        await self.rabbit.declare_queue(self.queue, durable=True, arguments=QUORUM)

    async def serve(self) -> None:
        """Answer requests until cancelled; raises `ConsumerStopped` if the connection
        drops or the queue is deleted."""
        await self.declare()
        await self._answer_all()

    async def _answer_all(self) -> None:
        try:
            async with (
                self.rabbit.consume(self.queue, prefetch=self.prefetch) as requests,
                asyncio.TaskGroup() as handling,
            ):
                # The broker sends at most `prefetch` unacked requests: that bounds the tasks.
                async for request in requests:
                    handling.create_task(self._answer(request))
        except BaseExceptionGroup as failed:
            # One cause, as a rule (the connection dropped under the consumer and the
            # answers being sent): raise it, not a group of it.
            raise failed.exceptions[0] from failed

    async def _answer(self, request: AbstractIncomingMessage) -> None:
        headers = {}
        try:
            answer = self.handler(text(request))
            if inspect.isawaitable(answer):
                answer = await answer
            reply = _body(answer)
        except Exception as exc:
            reply, headers = b"", {ERROR_HEADER: f"{type(exc).__name__}: {exc}"[:1000]}
        if request.reply_to:
            routed = await self.rabbit.publish(
                "",
                request.reply_to,
                reply,
                correlation_id=request.correlation_id,
                headers=headers,
            )
            self.orphaned += not routed
        self.answered += 1
        await request.ack()  # after the reply: a server dying before it leaves the request queued

    async def __aenter__(self) -> Self:
        # Declared here, not in the task: a mismatch is raised to the caller at once.
        await self.declare()
        self._task = asyncio.create_task(self._answer_all(), name=f"rpc server {self.queue}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            await _stop(self._task)
            self._task = None


def _body(answer: object) -> Body:
    """A handler's answer as a reply body: text (sent as UTF-8) or bytes; anything else
    raises, answered as the handler's error. Checked inside the handler's protection:
    aio-pika would raise on None or a float as it builds the reply, which stops the
    server, and take an int for a size (`bytes(3)` is three NUL bytes)."""
    if isinstance(answer, str | bytes):
        return answer
    raise TypeError(
        f"the handler returned {type(answer).__name__} {answer!r}: an answer is str or bytes"
    )


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel a background task; an error it ended with before that is raised."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
