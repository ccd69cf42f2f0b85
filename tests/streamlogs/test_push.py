"""Clients at the head written to by the tail itself (`Tail.wait_pushed`, the protocol's
push function): every line once and in order, the same bytes to each, handed back to
pulling when a push is refused, keepalives, the end. The service tests use uvicorn's
httptools cycle through `StallGuard._push`; these hold it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sdlab.streamlogs import DeploymentStore
from sdlab.streamlogs.tail import KEEPALIVE, Tail, chunk
from tests.helpers import eventually
from tests.streamlogs.conftest import Service, read_events


async def _pushed(service: Service, deployment_id: str) -> int:
    tails = service.hub.stats()["tails"]
    return int(tails[deployment_id]["pushed"]) if deployment_id in tails else 0


async def test_clients_at_the_head_are_written_to_by_the_tail(service: Service) -> None:
    deployment = service.store.create()
    url = f"{service.url}/logs/{deployment.id}"
    readers = [asyncio.create_task(read_events(url)) for _ in range(10)]
    assert await eventually(lambda: _pushed(service, deployment.id), 10) == 10
    for n in range(30):
        deployment.append(f"line {n}")
        if n % 10 == 0:  # between batches every client is back at the head, pushed
            assert await eventually(lambda: _pushed(service, deployment.id), 10) == 10
    deployment.finish()
    for events in await asyncio.gather(*readers):
        assert [e.data for e in events[:-1]] == [f"line {n}" for n in range(30)]
        ids = [int(e.id) for e in events[:-1]]
        assert ids == sorted(set(ids))
        assert events[-1].event == "end"


async def test_a_resumed_client_joins_the_pushed_ones_after_catching_up(
    service: Service,
) -> None:
    deployment = service.store.create()
    deployment.append(*[f"line {n}" for n in range(5)])
    url = f"{service.url}/logs/{deployment.id}"
    first = await read_events(url, stop=lambda events: len(events) == 2)
    resumed = asyncio.create_task(read_events(url, last_event_id=first[-1].id))
    assert await eventually(lambda: _pushed(service, deployment.id), 1) == 1
    deployment.append("line 5")
    deployment.finish()
    assert [e.data for e in (await resumed)[:-1]] == [f"line {n}" for n in range(2, 6)]


def _tail(tmp_path: Path) -> tuple[Tail, Path]:
    store = DeploymentStore(tmp_path / "data")
    deployment = store.create()
    return Tail(deployment), deployment.log_path


def _append(log: Path, text: str) -> None:
    with log.open("ab") as file:
        file.write(text.encode())


async def test_a_refused_push_hands_the_client_back_at_its_cursor(tmp_path: Path) -> None:
    tail, log = _tail(tmp_path)
    taken: list[bytes] = []
    full = [False]

    def push(data: bytes) -> bool:
        if full[0]:
            return False
        taken.append(data)
        return True

    waiting = asyncio.ensure_future(tail.wait_pushed(tail.position, push, False))
    await asyncio.sleep(0)
    _append(log, "one\ntwo\n")
    tail.poke()
    await asyncio.sleep(0.01)
    assert len(taken) == 1  # the batch, as one chunk, encoded once
    frames, after = tail.frames_after(0) or (b"", 0)
    assert taken == [chunk(frames)]
    full[0] = True
    _append(log, "three\n")
    tail.poke()
    cursor, silent = await asyncio.wait_for(waiting, 1)
    assert (cursor, silent) == (after, False)  # before the refused batch: it pulls that
    assert tail.frames_after(cursor) == (b"id: 14\ndata: three\n\n", 14)
    tail.release()


async def test_the_tail_sends_keepalives_to_silent_pushed_clients(tmp_path: Path) -> None:
    tail, log = _tail(tmp_path)
    taken: list[bytes] = []

    def push(data: bytes) -> bool:
        taken.append(data)
        return True

    waiting = asyncio.ensure_future(tail.wait_pushed(tail.position, push, False))
    await asyncio.sleep(0)
    tail.beat()  # it may have sent something just before: silent from now on
    assert taken == []
    tail.beat()
    assert taken == [chunk(KEEPALIVE)]
    _append(log, "line\n")
    tail.poke()
    await asyncio.sleep(0.01)
    tail.beat()  # a line since the last beat: no keepalive
    assert len(taken) == 2
    tail.close()
    assert await asyncio.wait_for(waiting, 1) == (tail.position, True)
    tail.release()
