"""Failures under load, with real processes: `sdlab lb serve` in front of four
`sdlab lb backends` processes, and clients in this one.

- A backend SIGKILLed under load: only connections already open to it may fail; every
  request that starts after the kill is served (a refused connect marks it down and the
  client goes to another backend).
- A backend drained under load: none of its connections is cut, and it gets no new one.
- Ctrl-C on the balancer: it stops accepting and lets the open requests finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import monotonic

import httpx
import port_for
import pytest

from sdlab.infra.process import ServerProcess, sdlab_command
from sdlab.lb.experiment import backend_process, free_ports
from tests.helpers import eventually

pytestmark = pytest.mark.slow


@dataclass
class Answer:
    started: float
    connected: float
    """When the connection that carried it was opened."""
    backend: str | None
    """The port of the backend that answered; None: the request failed."""
    keep_alive: bool


class Cluster:
    def __init__(self, ports: list[int], backends: list[ServerProcess], lb: ServerProcess):
        self.ports, self.backends, self.lb = ports, backends, lb
        self.port = int(lb.command[lb.command.index("--port") + 1])
        self.admin = f"http://127.0.0.1:{int(lb.command[lb.command.index('--admin-port') + 1])}"

    def backend_state(self, port: int) -> dict[str, object]:
        listed = httpx.get(f"{self.admin}/backends").json()
        return next(b for b in listed if b["address"] == f"127.0.0.1:{port}")


@contextlib.contextmanager
def cluster(tmp_path: Path, delay: str) -> Iterator[Cluster]:
    ports = free_ports(4)
    port, admin = int(port_for.select_random()), int(port_for.select_random())
    config = tmp_path / "lb.toml"
    config.write_text(
        "[listen]\ndrain_timeout = 10\n\n[health]\ninterval = 0.5\nfall = 2\n\n"
        + "".join(f'[[backend]]\naddress = "127.0.0.1:{p}"\n\n' for p in ports)
    )
    command = sdlab_command(
        "lb", "serve", "--config", str(config), "--port", str(port), "--admin-port", str(admin)
    )
    backends = [backend_process(p, delay=delay) for p in ports]
    lb = ServerProcess(command, ready_url=f"http://127.0.0.1:{admin}/backends", name="lb")
    processes = [*backends, lb]
    # Started and stopped in parallel: each is a Python process that takes a second.
    with ThreadPoolExecutor(len(processes)) as threads:
        try:
            list(threads.map(ServerProcess.start, backends))
            lb.start()  # after its backends: it would rightly mark absent ones down
            yield Cluster(ports, backends, lb)
        finally:
            list(threads.map(ServerProcess.close, processes))


async def request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, close: bool
) -> str:
    """One GET on an open connection; the answering backend's port."""
    connection = b"close" if close else b"keep-alive"
    writer.write(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: " + connection + b"\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head[:40])
    return body.split()[1].decode()


async def load(port: int, until: asyncio.Event, answers: list[Answer], *, keep_alive: bool) -> None:
    """Requests one after another until `until` is set: each on a new connection, or on
    one kept open (and opened again after a failure)."""
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    connected = 0.0
    while not until.is_set():
        started = monotonic()
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
                connected = started
            backend = await asyncio.wait_for(request(*connection, close=not keep_alive), 10)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, IndexError):
            backend = None
        answers.append(Answer(started, connected, backend, keep_alive))
        if backend is None or not keep_alive:
            if connection is not None:
                connection[1].close()
            connection = None
        if backend is None:
            await asyncio.sleep(0.01)  # not a busy loop of failures
    if connection is not None:
        connection[1].close()


async def test_a_backend_killed_under_load_fails_only_connections_open_to_it(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, delay="0.01-0.03") as lb:
        done = asyncio.Event()
        answers: list[Answer] = []
        clients = [
            asyncio.create_task(load(lb.port, done, answers, keep_alive=i % 2 == 0))
            for i in range(16)
        ]
        await asyncio.sleep(1.5)
        victim = lb.ports[-1]
        process = lb.backends[-1]._executor.process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        killed_at = monotonic()  # the moment it was reaped: dead, its sockets gone
        await asyncio.to_thread(lb.backends[-1].kill)  # mirakuru's own bookkeeping
        await asyncio.sleep(2.5)
        done.set()
        await asyncio.gather(*clients)

        failed = [a for a in answers if a.backend is None]
        after = [a for a in answers if a.started > killed_at]
        assert len(after) > 100  # the load went on
        # Only connections already open when it died may fail: the keep-alive ones
        # pinned to it, and requests under way on it. None opened after the kill.
        assert all(a.connected < killed_at for a in failed), failed
        assert len(failed) <= 16
        assert not [a for a in after if a.backend == str(victim) and a.connected > killed_at]
        state = await asyncio.to_thread(lb.backend_state, victim)
        assert state["state"] == "down"
        survivors = {a.backend for a in after if a.backend}
        assert survivors == {str(p) for p in lb.ports[:-1]}


async def test_a_drained_backend_under_load_loses_no_connection(tmp_path: Path) -> None:
    with cluster(tmp_path, delay="0.1-0.3") as lb:
        done = asyncio.Event()
        answers: list[Answer] = []
        clients = [
            asyncio.create_task(load(lb.port, done, answers, keep_alive=i % 2 == 0))
            for i in range(16)
        ]
        await asyncio.sleep(1.5)
        # The backend most keep-alive connections are on: they must go on being served.
        pinned = Counter(a.backend for a in answers if a.keep_alive and a.backend)
        drained = int(pinned.most_common(1)[0][0])
        drained_at = monotonic()
        async with httpx.AsyncClient() as admin:
            answer = await admin.post(f"{lb.admin}/backends/127.0.0.1:{drained}/drain")
            assert answer.json()["state"] == "draining"
        before = (await asyncio.to_thread(lb.backend_state, drained))["connections"]
        await asyncio.sleep(2.0)
        done.set()
        await asyncio.gather(*clients)

        assert [a for a in answers if a.backend is None] == []  # nothing cut
        # Keep-alive connections it had go on being served by it; no new one reaches it.
        late = [a for a in answers if a.started > drained_at + 0.5]
        assert any(a.backend == str(drained) and a.connected < drained_at for a in late)
        assert not [a for a in late if a.backend == str(drained) and a.connected > drained_at]
        state = await asyncio.to_thread(lb.backend_state, drained)
        assert state["connections"] == before
        assert state["state"] == "draining"


async def test_ctrl_c_drains_the_balancer(tmp_path: Path) -> None:
    with cluster(tmp_path, delay="1.0") as lb:
        reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        # Accepted (not only in the kernel's backlog, which closing the port resets) and
        # under way: its answer is up to a second off.
        async with httpx.AsyncClient() as admin:

            async def accepted() -> bool:
                return bool((await admin.get(lb.admin)).json()["active"])

            assert await eventually(accepted, True)
        lb.lb._executor.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", lb.port)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200 OK")
        writer.close()
        assert await asyncio.to_thread(lb.lb.stop) == 0
        assert "0 connection(s) cut" in lb.lb.output()
        assert "Traceback" not in lb.lb.output()  # uvicorn finished, was not cancelled
