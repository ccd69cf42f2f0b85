"""Real `sdlab polling serve` processes sharing one database: wake-ups across processes,
a crash in the middle of a creation, races between polls, hang-ups, shutdown."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sdlab.polling import Delays
from sdlab.polling.service import ServiceProcess
from tests.helpers import eventually

Start = Callable[..., ServiceProcess]
LATER = Delays(to_do=3600, in_progress=3600)

pytestmark = pytest.mark.slow  # each test starts two or three Python processes


@pytest.fixture
def start(db_url: str, redis_url: str) -> Iterator[Start]:
    """`start(**ServiceProcess options)`: a service process on the test's database."""
    started: list[ServiceProcess] = []

    def start_one(**options: Any) -> ServiceProcess:
        options.setdefault("redis_url", redis_url)
        service = ServiceProcess(db_url, **options)
        started.append(service)
        return service.start()

    yield start_one
    for service in started:
        service.close()


async def waiting(http: httpx.AsyncClient, service: ServiceProcess, count: int = 1) -> None:
    async def probe() -> int:
        return int((await http.get(f"{service.url}/stats")).json()["waiting"])

    assert await eventually(probe, count) == count


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=90)) as client:
        yield client


async def test_a_change_through_one_process_wakes_waiters_on_the_other(
    start: Start, http: httpx.AsyncClient
) -> None:
    one = start(delays=LATER)
    other = start(delays=LATER, sweep=3600)  # no sweep to help: only the channel can
    before = (await http.get(f"{other.url}/short/status/server-1")).json()
    polls = [
        asyncio.create_task(
            http.get(
                f"{service.url}/long/status/server-1",
                params={"since": before["version"], "timeout": 60},
            )
        )
        for service in (other, other, one)
    ]
    await waiting(http, other, 2)
    await waiting(http, one, 1)
    created = await http.post(f"{one.url}/create/server-1")
    assert created.status_code == 202
    for poll in polls:
        answer = await poll
        assert answer.status_code == 200
        assert answer.json() == created.json()


async def test_a_creation_outlives_the_process_that_started_it(
    start: Start, http: httpx.AsyncClient
) -> None:
    """The schedule is in the database: when the process that created the server is
    killed, the other one makes the remaining transitions."""
    starter = start(delays=Delays(to_do=0.5, in_progress=0.5))
    finisher = start()
    created = (await http.post(f"{starter.url}/create/server-1")).json()
    starter.kill()  # SIGKILL, before anything was due
    seen, version = [], created["version"]
    while not seen or seen[-1] != "DONE":
        answer = await http.get(
            f"{finisher.url}/long/status/server-1", params={"since": version, "timeout": 30}
        )
        assert answer.status_code == 200
        seen.append(answer.json()["status"])
        version = answer.json()["version"]
    assert seen == ["IN_PROGRESS", "DONE"]
    assert version == created["version"] + 2


async def test_no_update_is_lost_between_polls(start: Start, http: httpx.AsyncClient) -> None:
    """Clients on both processes chain long polls (since = the version of their last
    answer) with random pauses between them, while a driver runs 25 creations and
    terminations through one process as fast as they go. Every client must see versions
    only grow, and end on the last one."""
    one = start(delays=Delays(0, 0))
    other = start(delays=Delays(0, 0))
    last_version: list[int] = []

    async def poller(service: ServiceProcess) -> list[int]:
        seen = [0]
        while not last_version or seen[-1] < last_version[0]:
            answer = await http.get(
                f"{service.url}/long/status/server-1", params={"since": seen[-1], "timeout": 5}
            )
            if answer.status_code == 200:
                seen.append(answer.json()["version"])
            else:
                assert answer.status_code == 304
            await asyncio.sleep(random.uniform(0, 0.005))  # changes land between polls
        return seen[1:]

    async def driver() -> None:
        version = 0
        for _ in range(25):
            version = (await http.post(f"{one.url}/create/server-1")).json()["version"]
            while True:
                answer = await http.get(
                    f"{one.url}/long/status/server-1", params={"since": version, "timeout": 30}
                )
                version = answer.json()["version"]
                if answer.json()["status"] == "DONE":
                    break
            version = (await http.post(f"{one.url}/terminate/server-1")).json()["version"]
        last_version.append(version)

    pollers = [asyncio.create_task(poller(s)) for s in (one, other) * 10]
    await asyncio.wait_for(driver(), 120)
    histories = await asyncio.wait_for(asyncio.gather(*pollers), 60)
    final = (await http.get(f"{other.url}/short/status/server-1")).json()
    assert final["version"] == last_version[0]
    assert final["status"] == "NOT_YET_CREATED"
    for seen in histories:
        assert seen == sorted(set(seen))  # strictly increasing
        assert seen[-1] == last_version[0]


async def test_a_client_that_hangs_up_is_dropped_at_once(
    start: Start, http: httpx.AsyncClient
) -> None:
    service = start()
    poll = asyncio.create_task(
        http.get(f"{service.url}/long/status/server-1", params={"since": 1, "timeout": 60})
    )
    await waiting(http, service, 1)
    poll.cancel()  # httpx closes the connection
    await waiting(http, service, 0)  # long before the 60 s timeout


async def test_shutdown_answers_the_waiting_polls(start: Start, http: httpx.AsyncClient) -> None:
    service = start()
    poll = asyncio.create_task(
        http.get(f"{service.url}/long/status/server-1", params={"since": 1, "timeout": 60})
    )
    await waiting(http, service, 1)
    await asyncio.to_thread(service.stop)  # SIGINT, as Ctrl-C
    answer = await poll
    assert answer.status_code == 503
    assert "shutting down" in answer.json()["detail"]


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
async def test_a_redis_restart_between_two_processes_loses_no_update(
    start: Start, http: httpx.AsyncClient, servers: Any
) -> None:
    (redis,) = servers.redis()
    one = start(redis_url=redis.url, delays=LATER)
    other = start(redis_url=redis.url, delays=LATER, sweep=3600)
    poll = asyncio.create_task(
        http.get(f"{other.url}/long/status/server-1", params={"since": 1, "timeout": 60})
    )
    await waiting(http, other, 1)
    redis.kill()
    created = await http.post(f"{one.url}/create/server-1")  # its PUBLISH fails
    assert created.status_code == 202
    redis.start()
    answer = await poll
    assert answer.json() == created.json()
