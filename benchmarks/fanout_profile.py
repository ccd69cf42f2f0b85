"""Where a service's time goes in a fan-out: K long pollers on one creation (polling), or
K SSE clients on one log (streamlogs).

    .venv/bin/python benchmarks/fanout_profile.py polling [K] [--out FILE]
    .venv/bin/python benchmarks/fanout_profile.py streamlogs [K] [--out FILE]

The experiments' set-up. polling (docs/polling.md): `sdlab polling serve` in a process
of its own on MariaDB and Redis, K clients (`sdlab.polling.watchers`, bare asyncio
protocols) in four other processes, all parked on one server's long poll; the server is
created and moves TO_DO -> IN_PROGRESS -> DONE: three changes, each answering all K
and bringing all K polls back. streamlogs (docs/streamlogs.md): `sdlab streamlogs
serve`, K clients of `sdlab.streamlogs.loadgen` in one process, 40 lines appended to
the log 0.25 s apart. Once the clients are in place py-spy attaches to the service and
samples it (1,000 a second, idle time left out) until they are done. Prints the share
of the samples spent in each step of the fan-out (inclusive: a step's callees count in
it) and the functions with the most samples of their own; `--out` keeps the raw
samples (flamegraph.pl reads them).

py-spy is not a dependency: `.venv/bin/pip install py-spy`. It sees Python frames only:
time in uvloop's C code (the socket writes and reads themselves) is charged to the
Python frame that called it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from sdlab import infra, sql
from sdlab.polling.experiment import _expect, _results, _start_watchers, _until_waiting
from sdlab.polling.model import Delays
from sdlab.polling.service import ServiceProcess
from sdlab.streamlogs.experiment import SDLAB, FreshLineLatency, _clients, _message, _server
from sdlab.streamlogs.store import DeploymentStore

# Each step: (label, frames of which one must be in the stack, frames none may be in).
Steps = list[tuple[str, tuple[str, ...], tuple[str, ...]]]
POLLING_STEPS: Steps = [
    ("answering parked polls (Fleet._wake: one pass, its writes)", ("_wake (",), ()),
    ("  of which the writes (PollProtocol.finish)", ("finish (",), ()),
    ("  of which uvicorn's after-answer (on_response_complete)", ("on_response_complete (",), ()),
    ("reading re-polls (uvicorn's data_received: parser, park)", ("data_received (",), ()),
    ("  of which parking (PollProtocol._park_or_answer)", ("_park_or_answer (",), ()),
    ("reading the change (Fleet._read, without _wake)", ("_read (sdlab",), ("_wake (",)),
    ("the provisioner (its queries)", ("_provisioner (",), ()),
    ("the channel (Redis pub/sub)", ("polling/channel.py", "redis/"), ("_read (sdlab",)),
]
STREAMLOGS_STEPS: Steps = [
    ("the tail's read and pass (Tail._read)", ("_read (sdlab/streamlogs",), ()),
    ("  of which the pushes (Tail._push_all)", ("_push_all (",), ()),
    ("  of which encoding the events (frame, split_lines)", ("frame (", "split_lines ("), ()),
    ("clients' own tasks (EventStream._pump)", ("_pump (",), ()),
    ("inotify", ("_watch (sdlab",), ()),
]


def spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
            "record", "--pid", str(pid), "--rate", "1000", "--gil",
            "--format", "raw", "--output", str(out), "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def stop(spying: subprocess.Popen[bytes]) -> None:
    spying.send_signal(signal.SIGINT)
    await asyncio.to_thread(spying.wait, 30)


async def polling(clients: int, out: Path) -> None:
    endpoints = infra.up(["mysql", "redis"])
    async with sql.scratch_database(endpoints["mysql"].url, prefix="sdlab_fanout") as db_url:
        service = ServiceProcess(
            db_url, redis_url=endpoints["redis"].url, servers=1, delays=Delays(1.0, 1.0)
        )
        await asyncio.to_thread(service.start)
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                before = (await http.get(f"{service.url}/short/status/server-1")).json()
                shares = [clients // 4 + (i < clients % 4) for i in range(4)]
                crowd = [
                    await _start_watchers(service.url, "server-1", n, before["version"], None)
                    for n in shares
                ]
                for process in crowd:
                    await _expect(process, "ready")
                await _until_waiting(http, service.url, clients)
                spying = spy(service.pid, out)
                await asyncio.sleep(1.0)  # attached
                (await http.post(f"{service.url}/create/server-1")).raise_for_status()
                reports = [await _results(process) for process in crowd]
                await stop(spying)
        finally:
            await asyncio.to_thread(service.close)
    answers = sum(c["requests"] for r in reports for c in r["clients"])
    print(f"polling, K = {clients:,}: {answers:,} answers")


async def streamlogs(clients: int, out: Path) -> None:
    followers = FreshLineLatency()
    folder = Path(tempfile.mkdtemp(prefix="sdlab-fanout-"))
    try:
        store = DeploymentStore(folder / "data")
        busy = store.create()
        async with (
            _server(SDLAB, store.root) as (port, process),
            _clients(port, busy.id, clients, followers.lines) as loadgen,
        ):
            ready = await _message(loadgen)
            spying = spy(process.pid, out)
            await asyncio.sleep(1.0)
            await followers._write(busy.log_path)
            await followers._collect(loadgen)
            await stop(spying)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"streamlogs, K = {clients:,} ({len(ready['failed'])} failed to connect): "
        f"{followers.lines} lines, {clients * followers.lines:,} deliveries"
    )


def summary(raw: Path, steps: Steps, top: int = 15) -> None:
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stacks.append((stack, int(count)))
    total = sum(n for _, n in stacks)
    print(f"{total:,} samples (1 ms each) of the service's CPU")
    for label, anyof, noneof in steps:
        share = sum(
            n for s, n in stacks if any(f in s for f in anyof) and not any(f in s for f in noneof)
        )
        print(f"  {100 * share / total:5.1f}%  {label}")
    own: collections.Counter[str] = collections.Counter()
    for stack, n in stacks:
        own[stack.split(";")[-1]] += n
    # Runner.run's own samples are uvloop's C code: epoll, accepting, reading sockets.
    print(f"the {top} functions with the most samples of their own:")
    for frame, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=("polling", "streamlogs"))
    parser.add_argument("clients", type=int, nargs="?", default=5000)
    parser.add_argument("--out", type=Path, help="keep the raw samples here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="sdlab-fanout-")) / "samples.txt"
    if args.system == "polling":
        asyncio.run(polling(args.clients, out))
        summary(out, POLLING_STEPS)
    else:
        asyncio.run(streamlogs(args.clients, out))
        summary(out, STREAMLOGS_STEPS)


if __name__ == "__main__":
    main()
