"""Clients that watch one server, in a process of their own, for the experiment.

    python -m sdlab.polling.watchers URL SERVER_ID --clients 250 --since 7 --long
    python -m sdlab.polling.watchers URL SERVER_ID --clients 250 --since 7 --interval 0.5

Each client follows the server until it is DONE, by long polling or by short polling
every `interval` seconds (each client at a random phase). The process prints `ready`
once every client has had its first answer (short) or sent its first poll (long), then,
when all are done, one JSON line: for each client, its requests and, for each version
it saw, `[version, status, seconds from the change to the answer]`. The change's time
is the database's clock; on one machine it is the same clock as this process's.

aiohttp, not httpx: a client process must cost the machine little per request, or on
two cores it would slow the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import datetime
from typing import Any

import aiohttp


async def watch(
    session: aiohttp.ClientSession,
    url: str,
    server_id: str,
    since: int,
    interval: float | None,
    timeout: float,
    started: asyncio.Event,
    ready: list[int],
    count: int,
) -> dict[str, Any]:
    seen: list[list[Any]] = []
    requests = 0
    errors = 0
    if interval is not None:
        await asyncio.sleep(random.uniform(0, interval))  # clients out of step, as in life
    next_tick = time.monotonic()
    first = True
    while True:
        if interval is None:
            target = f"{url}/long/status/{server_id}?since={since}&timeout={timeout}"
        else:
            target = f"{url}/short/status/{server_id}"
        requests += 1
        try:
            request = session.get(target)
            if first and interval is None:
                # Long polls park without answering: count the client as ready once its
                # request is on the wire (the driver then waits for the server's count).
                first = False
                ready[0] += 1
                if ready[0] == count:
                    started.set()
            async with request as answer:
                body = await answer.read()
                received = time.time()
                status = answer.status
        except (aiohttp.ClientError, OSError):
            errors += 1
            await asyncio.sleep(0.1)
            continue
        if first:
            first = False
            ready[0] += 1
            if ready[0] == count:
                started.set()
        if status == 200:
            server = json.loads(body)
            if server["version"] > since:
                since = server["version"]
                changed = datetime.fromisoformat(server["changed_at"]).timestamp()
                seen.append([since, server["status"], received - changed])
                if server["status"] == "DONE":
                    return {"requests": requests, "errors": errors, "seen": seen}
        elif status != 304:
            errors += 1
        if interval is not None:
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))


async def main(args: argparse.Namespace) -> None:
    url = args.url.rstrip("/")
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    started = asyncio.Event()
    ready = [0]
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        clients = [
            asyncio.create_task(
                watch(
                    session,
                    url,
                    args.server_id,
                    args.since,
                    args.interval,
                    args.timeout,
                    started,
                    ready,
                    args.clients,
                )
            )
            for _ in range(args.clients)
        ]
        await started.wait()
        print("ready", flush=True)
        results = await asyncio.wait_for(asyncio.gather(*clients), args.deadline)
    json.dump(results, sys.stdout)
    print(flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("server_id")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--since", type=int, required=True, help="the version before the watch")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--long", action="store_true", help="long polling")
    mode.add_argument("--interval", type=float, help="short polling every INTERVAL seconds")
    parser.add_argument("--timeout", type=float, default=30.0, help="long poll timeout")
    parser.add_argument("--deadline", type=float, default=120.0, help="give up after")
    return parser.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parse(sys.argv[1:])))
