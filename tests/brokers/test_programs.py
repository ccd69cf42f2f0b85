"""The programs of `sdlab.brokers.tutorials` called as functions, for what the command-line
tests (which only see stdout) cannot check: lines go to the `say` given, a consumer with
a count takes no message more than that, and the RPC service's bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sdlab.brokers import tutorials
from tests.brokers.conftest import Made


async def test_take_stops_at_the_count_without_pulling_one_more() -> None:
    pulled: list[int] = []

    async def messages() -> AsyncIterator[int]:
        for n in range(5):
            pulled.append(n)
            yield n

    said: list[str] = []
    taken = [n async for n in tutorials.take(messages(), 2, said.append)]
    assert (taken, pulled, said) == ([0, 1], [0, 1], [])  # a third would be held unacked


async def test_take_without_a_count_says_how_to_stop_and_takes_all() -> None:
    async def messages() -> AsyncIterator[str]:
        for body in ["a", "b"]:
            yield body

    said: list[str] = []
    assert [m async for m in tutorials.take(messages(), None, said.append)] == ["a", "b"]
    assert said == [" [*] Waiting for messages. To exit press CTRL+C"]


def test_fib_text_answers_within_its_bounds_only() -> None:
    assert [tutorials.fib_text(n) for n in ["0", "1", "10", "30"]] == ["0", "1", "55", "832040"]
    for out_of_bounds in ["-1", "10001"]:
        with pytest.raises(ValueError, match="n must be from 0 to 10000"):
            tutorials.fib_text(out_of_bounds)


async def test_send_and_receive_say_their_lines_to_the_callback(
    rabbitmq_url: str, namespace: str, made: Made
) -> None:
    queue = made.queue(f"{namespace}.hello")
    said: list[str] = []
    await tutorials.send(rabbitmq_url, queue, "Hello World!", say=said.append)
    await tutorials.receive(rabbitmq_url, queue, count=1, say=said.append)
    assert said == [" [x] Sent 'Hello World!'", " [x] Received Hello World!"]
