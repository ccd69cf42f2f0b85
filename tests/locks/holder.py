"""A lock holder in a process of its own, for the fencing test: it takes the lock,
says its fencing token, waits for a line on stdin (the test may SIGSTOP it meanwhile),
then tries to write and says what happened."""

from __future__ import annotations

import asyncio
import sys

from sdlab.infra.services import redis
from sdlab.locks import FencedStore, RedisLock, StaleToken
from sdlab.sql import Database


async def main(redis_url: str, mysql_url: str, name: str, table: str) -> None:
    client = redis.connect(redis_url)
    async with Database(mysql_url, min_size=1) as db:
        store = FencedStore(db, table)
        lock = RedisLock(client, name, ttl=0.5)
        await lock.acquire()
        print(lock.fence, flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        try:
            await store.write(name, "written by the first holder", token=lock.fence or 0)
            print("written", flush=True)
        except StaleToken as exc:
            print(f"refused: {exc}", flush=True)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
