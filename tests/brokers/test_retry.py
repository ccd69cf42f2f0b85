"""Dead lettering: failing messages come back after their delays, a bounded number of
times, then wait in the dead-letter queue; nothing is lost on the way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from sdlab.brokers import Job, Rabbit, RetryQueue
from tests.brokers.conftest import Made


def retry_queue(rabbit: Rabbit, name: str, made: Made, **options: object) -> RetryQueue:
    queue = RetryQueue(rabbit, name, **options)  # type: ignore[arg-type]
    for part in queue.queues():
        made.queue(part)
    return queue


async def work(queue: RetryQueue, attempts: int, fails: object) -> list[tuple[str, int, str]]:
    """Handle `attempts` deliveries; `fails(job)` says whether the work fails."""
    log: list[tuple[str, int, str]] = []
    async with asyncio.timeout(20), queue.consume(prefetch=10) as jobs:
        async for job in jobs:
            if fails(job):  # type: ignore[operator]
                log.append((job.text, job.retries, await job.fail(ValueError("bad input"))))
            else:
                await job.ack()
                log.append((job.text, job.retries, "done"))
            if len(log) == attempts:
                break
    return log


async def parked(rabbit: Rabbit, queue: RetryQueue) -> list[tuple[str, dict[str, object]]]:
    channel = await rabbit.connection.channel()
    dead = await channel.get_queue(queue.dead, ensure=False)
    found = []
    while (message := await dead.get(fail=False, no_ack=True)) is not None:
        found.append((message.body.decode(), dict(message.headers)))
    await channel.close()
    return found


async def test_a_message_that_keeps_failing_is_retried_then_parked(
    rabbit: Rabbit, namespace: str, made: Made
):
    jobs = retry_queue(rabbit, f"{namespace}.jobs", made, delays=(0.2, 0.4))
    await jobs.send("always fails")
    log = await work(jobs, 3, lambda job: True)
    assert log == [
        ("always fails", 0, f"{jobs.name}.retry.1"),
        ("always fails", 1, f"{jobs.name}.retry.2"),
        ("always fails", 2, f"{jobs.name}.dead"),
    ]
    ((body, headers),) = await parked(rabbit, jobs)
    assert body == "always fails"
    assert headers["x-retries"] == 2
    assert headers["x-error"] == "ValueError: bad input"


async def test_a_message_that_fails_once_succeeds_on_retry_and_is_not_parked(
    rabbit: Rabbit, namespace: str, made: Made
):
    jobs = retry_queue(rabbit, f"{namespace}.jobs", made, delays=(0.2, 0.4))
    for name in ["fine", "flaky", "fine too"]:
        await jobs.send(name)
    log = await work(jobs, 4, lambda job: job.text == "flaky" and job.retries == 0)
    assert sorted(log) == [
        ("fine", 0, "done"),
        ("fine too", 0, "done"),
        ("flaky", 0, f"{jobs.name}.retry.1"),
        ("flaky", 1, "done"),
    ]
    assert await parked(rabbit, jobs) == []


async def test_the_broker_waits_out_the_delay(rabbit: Rabbit, namespace: str, made: Made):
    """A failed message is not handed out again before its delay: the retry queue holds
    it. (A lower bound only: the broker may take longer, never shorter.)"""
    jobs = retry_queue(rabbit, f"{namespace}.jobs", made, delays=(0.5,))
    await jobs.send("wait for me")
    loop = asyncio.get_running_loop()
    seen: list[float] = []
    async with asyncio.timeout(20), jobs.consume() as attempts:
        async for job in attempts:
            seen.append(loop.time())
            if job.retries == 0:
                await job.fail("first try")
            else:
                await job.ack()
                break
    assert seen[1] - seen[0] >= 0.5


@pytest.mark.parametrize("limit", [1, 3])
async def test_a_message_its_consumers_keep_dying_on_is_parked_by_the_broker(
    rabbitmq_url: str, namespace: str, made: Made, limit: int
):
    """Consumers that die holding a message (no ack, no fail) make the broker deliver
    it again; it is delivered `delivery_limit` times in all, then parked."""
    async with await Rabbit.connect(rabbitmq_url) as producer:
        jobs = retry_queue(producer, f"{namespace}.jobs", made, delivery_limit=limit)
        await jobs.send("poison")
    deliveries = 0
    while deliveries <= limit:  # each "crash" is a connection closed with the message unacked
        async with (
            await Rabbit.connect(rabbitmq_url) as doomed,
            RetryQueue(doomed, jobs.name, delivery_limit=limit).consume() as attempts,
        ):
            try:
                async with asyncio.timeout(2):
                    job: Job = await anext(aiter(attempts))
            except TimeoutError:
                break
            assert job.text == "poison"
            deliveries += 1
    assert deliveries == limit
    async with await Rabbit.connect(rabbitmq_url) as inspector:
        ((body, headers),) = await parked(inspector, jobs)
    assert body == "poison"
    (death,) = headers["x-death"]  # type: ignore[misc]
    assert death["reason"] == "delivery_limit"  # type: ignore[index]


def test_a_delivery_limit_below_one_is_refused(rabbit: Rabbit) -> None:
    with pytest.raises(ValueError, match="once at least"):
        RetryQueue(rabbit, "never-declared", delivery_limit=0)


async def test_parked_messages_can_be_requeued_with_fresh_retries(
    rabbit: Rabbit, namespace: str, made: Made
):
    jobs = retry_queue(rabbit, f"{namespace}.jobs", made, delays=(0.1,))
    await jobs.send("broken until fixed")
    await work(jobs, 2, lambda job: True)  # fails, retried, fails: parked
    assert await jobs.requeue_dead() == 1
    log = await work(jobs, 1, lambda job: False)  # the cause was fixed
    assert log == [("broken until fixed", 0, "done")]
    assert await parked(rabbit, jobs) == []


async def test_a_retried_message_keeps_its_properties(rabbit: Rabbit, namespace: str, made: Made):
    """A retry is the same message again: its AMQP properties come back with it (a
    consumer needs `content_encoding` to read the body, `reply_to` to answer, ...)."""
    jobs = retry_queue(rabbit, f"{namespace}.jobs", made, delays=(0.1,))
    properties = {
        "content_type": "application/json",
        "content_encoding": "gzip",
        "type": "thumbnail",
        "app_id": "uploader",
        "reply_to": "thumbnails.done",
        "correlation_id": "upload-7",
        "message_id": "job-42",
        "priority": 3,
        "timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "headers": {"tenant": "acme"},
    }
    await jobs.send(b"\x1f\x8b not really gzip", **properties)
    deliveries = []
    async with asyncio.timeout(20), jobs.consume() as attempts:
        async for job in attempts:
            deliveries.append(job.message)
            if job.retries == 0:
                await job.fail("once")
            else:
                await job.ack()
                break
    first, retried = deliveries
    for name, value in properties.items():
        if name == "headers":
            assert retried.headers["tenant"] == first.headers["tenant"] == "acme"
        else:
            assert getattr(retried, name) == getattr(first, name) == value, name
